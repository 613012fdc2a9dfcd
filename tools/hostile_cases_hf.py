"""Hostile Hugging Face-style inputs for tools/hostile_inputs.py (see tools/hostile_cases.py for the Case contract):
safetensors files, config.json fields of three architectures, compressed-tensors / ModelOpt quantization configs,
and tokenizer files."""
from __future__ import annotations

import json
import random
import struct
from pathlib import Path

import numpy as np

import hostile_bases as hb
from hostile_cases import INF, NAN, Case, _with_file


# ---------------------------------------------------------------------------------------------- safetensors
def _st_case(name, expect, change=None, *, arch="llama", raw_change=None) -> Case:
    """change(tensors) -> dtypes or None edits the tensor dict; raw_change(bytes) -> bytes edits the file."""
    def build(d: Path) -> Path:
        tensors = hb.hf_tensors(arch)
        dtypes = change(tensors) if change else None
        directory = hb.write_hf(d / "m", arch, tensors=tensors, dtypes=dtypes)
        if raw_change:
            path = directory / "model.safetensors"
            path.write_bytes(raw_change(path.read_bytes()))
        return directory
    return Case("safetensors", name, expect, build)


def _header(raw: bytes) -> tuple[int, dict, bytes]:
    n = struct.unpack_from("<Q", raw)[0]
    return n, json.loads(raw[8:8 + n]), raw[8 + n:]


def _reheader(edit):
    def change(raw: bytes) -> bytes:
        _, header, data = _header(raw)
        edit(header)
        text = json.dumps(header).encode()
        return struct.pack("<Q", len(text)) + text + data
    return change


def _length(delta):
    return lambda raw: struct.pack("<Q", struct.unpack_from("<Q", raw)[0] + delta) + raw[8:]


W = "model.layers.0.self_attn.q_proj.weight"
NORM = "model.norm.weight"


def _dtype(name, array, dtype):
    def change(t):
        t[name] = array
        return {name: dtype} if dtype else None
    return change


def safetensors_cases() -> list[Case]:
    cases = [_st_case("valid llama", "load"), _st_case("valid gemma3", "load", arch="gemma3_text"),
             _st_case("valid qwen3-moe", "load", arch="qwen3_moe")]
    for delta in (-8, -2, -1, 1, 2, 8, 2**40, 2**63, -(2**20)):
        cases.append(_st_case(f"header length {delta:+d}", "refuse",
                              raw_change=lambda raw, dl=delta: struct.pack("<Q", max(
                                  struct.unpack_from("<Q", raw)[0] + dl, 0) % 2**64) + raw[8:]))
    cases += [_st_case("truncated data", "refuse", raw_change=lambda raw: raw[:-100]),
              _st_case("trailing bytes", "refuse", raw_change=lambda raw: raw + b"\0" * 16),
              _st_case("empty file", "refuse", raw_change=lambda raw: b""),
              _st_case("seven bytes", "refuse", raw_change=lambda raw: raw[:7])]
    n = 1024
    for dtype, array in (("F8_E8M0", np.full(n, 127, np.uint8)), ("F4", np.zeros(n // 2, np.uint8)),
                         (None, np.zeros(n, np.int32)), (None, np.zeros(n, np.complex64)), (None, np.ones(n, bool)),
                         ("F8_E4M3", np.zeros(n, np.uint8)), (None, np.zeros(n, np.uint8)),
                         ("F8_E5M2", np.zeros(n, np.uint8))):
        cases.append(_st_case(f"q_proj stored as {dtype or array.dtype}", "refuse",
                              _dtype(W, array.reshape(32, -1) if dtype != "F4" else array.reshape(32, -1), dtype)))
    cases += [
        _st_case("q_proj wrong shape", "refuse", lambda t: t.__setitem__(W, np.zeros((16, 32), np.float32))),
        _st_case("norm wrong length", "refuse", lambda t: t.__setitem__(NORM, np.ones(31, np.float32))),
        _st_case("NaN in q_proj", "refuse", lambda t: t.__setitem__(W, np.full((32, 32), NAN, np.float32))),
        _st_case("inf in the embedding", "refuse", lambda t: t.__setitem__(
            "model.embed_tokens.weight", np.full((hb.V, hb.H), INF, np.float32))),
        _st_case("a weight missing", "refuse", lambda t: t.__delitem__(W)),
        _st_case("an extra layer", "refuse", lambda t: t.__setitem__("model.layers.5.input_layernorm.weight",
                                                                     np.ones(hb.H, np.float32))),
        _st_case("norm under two aliases", "refuse", lambda t: t.__setitem__("model.language_model.norm.weight",
                                                                             np.ones(hb.H, np.float32))),
        _st_case("lm_head twice", "refuse", lambda t: t.update({"lm_head.weight": t["model.embed_tokens.weight"],
                                                                "model.lm_head.weight": t["model.embed_tokens.weight"]})),
        _st_case("a stray float tensor", "either", lambda t: t.__setitem__("extra.thing", np.ones(3, np.float32))),
        _st_case("float64 weights", "load", lambda t: t.update({k: np.asarray(v, np.float64) for k, v in t.items()})),
        _st_case("overlapping offsets", "refuse", raw_change=_reheader(lambda h: h[W].__setitem__(
            "data_offsets", [0, h[W]["data_offsets"][1] - h[W]["data_offsets"][0]]))),
        _st_case("zero-size dim next to a huge one", "refuse", raw_change=_reheader(lambda h: h.__setitem__(
            "z", {"dtype": "F32", "shape": [0, 2**40, 2**40], "data_offsets": [0, 0]}))),
        _st_case("shape of strings", "refuse", raw_change=_reheader(lambda h: h[W].__setitem__("shape", ["32", 32]))),
        _st_case("offsets as floats", "refuse", raw_change=_reheader(lambda h: h[W].__setitem__(
            "data_offsets", [float(x) for x in h[W]["data_offsets"]]))),
        _st_case("unknown dtype", "refuse", raw_change=_reheader(lambda h: h[W].__setitem__("dtype", "Q4_K"))),
        _st_case("metadata not strings", "refuse", raw_change=_reheader(lambda h: h.__setitem__(
            "__metadata__", {"a": 1}))),
        _st_case("17 dimensions", "refuse", raw_change=_reheader(lambda h: h[W].__setitem__("shape", [1] * 17))),
        _st_case("header not UTF-8", "refuse", raw_change=lambda raw: raw[:8] + b"\xff" + raw[9:]),
        _st_case("duplicate header key", "refuse", raw_change=lambda raw: _duplicate_key(raw)),
        _st_case("header NaN", "refuse", raw_change=lambda raw: raw.replace(b'"shape":[', b'"x":NaN,"shape":[', 1)),
    ]
    for case in ("missing shard", "path traversal", "tensor in the wrong shard", "empty weight_map"):
        cases.append(Case("safetensors", f"index: {case}", "refuse", lambda d, c=case: _sharded(d, c)))
    cases.append(Case("safetensors", "index: valid two shards", "load", lambda d: _sharded(d, "valid")))
    rng = random.Random(11)
    for i in range(20):
        spots = [rng.randrange(8, 400) for _ in range(rng.randint(1, 3))]
        cases.append(_st_case(f"header bytes flipped at {spots}", "either", raw_change=lambda raw, s=spots, i=i: bytes(
            random.Random(i + p).randrange(256) if p in s else b for p, b in enumerate(raw))))
    return cases


def _duplicate_key(raw: bytes) -> bytes:
    n, header, data = _header(raw)
    text = json.dumps(header)
    text = text[:-1] + ', "__metadata__": {"a": "b"}, "__metadata__": {"a": "c"}}'
    return struct.pack("<Q", len(text)) + text.encode() + data


def _sharded(d: Path, case: str) -> Path:
    from impnb.loaders.safetensors import save_safetensors
    tensors = hb.hf_tensors()
    directory = hb.write_hf(d / "m", tensors={})
    (directory / "model.safetensors").unlink()
    names = sorted(tensors)
    halves = {"model-00001-of-00002.safetensors": names[::2], "model-00002-of-00002.safetensors": names[1::2]}
    weight_map = {}
    for fname, part in halves.items():
        save_safetensors(directory / fname, {n: tensors[n] for n in part})
        weight_map.update({n: fname for n in part})
    if case == "missing shard":
        (directory / "model-00002-of-00002.safetensors").unlink()
    elif case == "path traversal":
        weight_map[names[0]] = "../../etc/passwd.safetensors"
    elif case == "tensor in the wrong shard":
        weight_map[names[0]] = "model-00002-of-00002.safetensors"
    elif case == "empty weight_map":
        weight_map = {}
    (directory / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return directory


# ---------------------------------------------------------------------------------------------- config.json
NASTY = [0, -1, 2**31, 2**63, 10**30, 0.5, NAN, INF, -INF, "32", [32], {"a": 1}, None, True, 1e-300]
FIELDS = ["vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
          "num_key_value_heads", "head_dim", "rms_norm_eps", "max_position_embeddings", "rope_theta",
          "tie_word_embeddings", "bos_token_id", "eos_token_id", "partial_rotary_factor"]
GEMMA_FIELDS = ["sliding_window", "query_pre_attn_scalar", "final_logit_softcapping", "layer_types",
                "sliding_window_pattern", "rope_local_base_freq"]
MOE_FIELDS = ["num_experts", "num_experts_per_tok", "moe_intermediate_size", "decoder_sparse_step", "mlp_only_layers"]


def _config_case(name, expect, arch, edit) -> Case:
    def build(d: Path) -> Path:
        config = json.loads(json.dumps(hb.HF_CONFIGS[arch]))
        edit(config)
        return hb.write_hf(d / "m", arch, config=config)
    return Case("model-config", f"{arch}: {name}", expect, build)


# float fields: (upper bound, whether a tiny positive value is refused because it empties the rotation / overflows)
FLOAT_FIELDS = {"rms_norm_eps": (1.0, True), "rope_theta": (None, True), "rope_local_base_freq": (None, True),
                "query_pre_attn_scalar": (None, True), "final_logit_softcapping": (None, False),
                "partial_rotary_factor": (1.0, True)}


def _expect_for(field, value) -> str:
    """What a correct loader does with ``field = value`` (see the module docstring of tools/hostile_cases.py)."""
    if value is None:
        return "either"   # null: the default is used, which may or may not fit the tensors
    if field == "tie_word_embeddings":
        return "either" if value in (0, 1) and not isinstance(value, float) else "refuse"
    if field == "mlp_only_layers":
        return "either" if value == [32] else "refuse"
    if field == "intermediate_size" and value == 0:
        return "either"
    if field in ("bos_token_id", "eos_token_id") and value in (0, [32]) and value is not False:
        return "either"   # token ids inside the 64-token vocabulary
    if field in FLOAT_FIELDS and isinstance(value, (int, float)) and not isinstance(value, bool):
        hi, tiny_refused = FLOAT_FIELDS[field]
        ok = value > 0 and value != INF and (hi is None or value <= hi) and not (tiny_refused and value < 1e-100)
        return "either" if ok else "refuse"
    return "refuse"


def model_config_cases() -> list[Case]:
    cases = []
    for arch, fields in (("llama", FIELDS), ("gemma3_text", GEMMA_FIELDS), ("qwen3_moe", MOE_FIELDS)):
        cases.append(_config_case("valid", "load", arch, lambda c: None))
        for field in fields:
            for value in NASTY:
                cases.append(_config_case(f"{field}={value!r}", _expect_for(field, value), arch,
                                          lambda c, f=field, v=value: c.__setitem__(f, v)))
    rope = [({"rope_type": "linear", "factor": 0.0}, "refuse"), ({"rope_type": "linear", "factor": 2.0}, "load"),
            ({"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
              "original_max_position_embeddings": 64}, "load"),
            ({"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 0}, "refuse"),
            ({"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32}, "load"),
            ({"rope_type": "yarn", "factor": -4.0}, "refuse"), ({"rope_type": "dynamic", "factor": 2.0}, "refuse"),
            ({"rope_type": 7}, "refuse"), ({"factor": NAN, "rope_type": "linear"}, "refuse"), ("linear", "refuse"),
            ({"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 0.0}, "refuse")]
    for value, expect in rope:
        cases.append(_config_case(f"rope_scaling={value!r}", expect, "llama",
                                  lambda c, v=value: c.__setitem__("rope_scaling", v)))
    cases += [
        _config_case("model_type unknown", "refuse", "llama", lambda c: c.__setitem__("model_type", "mamba9")),
        _config_case("model_type missing, architectures kept", "load", "llama", lambda c: c.pop("model_type")),
        _config_case("model_type and architectures missing", "refuse", "llama",
                     lambda c: (c.pop("model_type"), c.pop("architectures"))),
        _config_case("architectures a string", "refuse", "llama",
                     lambda c: (c.pop("model_type"), c.__setitem__("architectures", "Llama"))),
        _config_case("hidden_act relu2", "refuse", "llama", lambda c: c.__setitem__("hidden_act", "relu2")),
        _config_case("hidden_act 7", "refuse", "llama", lambda c: c.__setitem__("hidden_act", 7)),
        _config_case("eos id list with one outside (ignored with a warning)", "load", "llama",
                     lambda c: c.__setitem__("eos_token_id", [2, hb.V])),
        _config_case("window larger than context (every key visible)", "load", "gemma3_text",
                     lambda c: c.__setitem__("sliding_window", 4096)),
        _config_case("context 2", "load", "llama", lambda c: c.__setitem__("max_position_embeddings", 2)),
        _config_case("top-k above experts", "refuse", "qwen3_moe", lambda c: c.__setitem__("num_experts_per_tok", 9)),
        _config_case("heads 3 (head_dim 8 given)", "refuse", "llama", lambda c: c.__setitem__("num_attention_heads", 3)),
    ]
    cases += [Case("model-config", "config.json nested 100000 deep", "refuse", lambda d: _with_file(
                  hb.write_hf(d / "m"), "config.json", '{"a": ' + "[" * 100000 + "]" * 100000 + "}")),
              Case("model-config", "config.json not JSON", "refuse", lambda d: _with_file(
                  hb.write_hf(d / "m"), "config.json", "{model_type: llama")),
              Case("model-config", "config.json a list", "refuse", lambda d: _with_file(
                  hb.write_hf(d / "m"), "config.json", "[1, 2]")),
              Case("model-config", "config.json not UTF-8", "refuse", lambda d: _with_file(
                  hb.write_hf(d / "m"), "config.json", b'{"model_type": "\xff"}')),
              Case("model-config", "multimodal wrapper, text_config a list", "refuse", lambda d: _with_file(
                  hb.write_hf(d / "m"), "config.json", json.dumps({"model_type": "gemma3", "text_config": [1]})))]
    return cases
