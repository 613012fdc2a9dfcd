"""Hostile inputs of the hybrid linear-attention architectures for tools/hostile_inputs.py (see tools/hostile_cases.py
for the Case contract): a tiny Qwen3.5 (dense, three gated-DeltaNet layers then one attention layer) and a tiny
Qwen3-Next (MoE with a shared expert, fused in_proj_qkvz / in_proj_ba) as safetensors directories whose config.json
fields and tensors are broken one at a time, and the Qwen3.5 model as a llama.cpp-style GGUF (tests/hybrid_gguf.py)
whose metadata and tensor infos are overwritten in place.

The base weights are made once per process by transformers (from_config, seeded; the family is empty without it).
"""
from __future__ import annotations

import copy
import json
import struct
from pathlib import Path

import numpy as np

import hostile_bases as hb
from hostile_cases import INF, NAN, Case

V = 300   # the GGUF writer's byte-level vocabulary needs 256 byte tokens and its BOS / EOS above them
_COMMON = dict(vocab_size=V, hidden_size=32, intermediate_size=48, num_hidden_layers=4, num_attention_heads=4,
               num_key_value_heads=2, head_dim=8, max_position_embeddings=128, rms_norm_eps=1e-6,
               linear_num_key_heads=2, linear_num_value_heads=4, linear_key_head_dim=8, linear_value_head_dim=8,
               linear_conv_kernel_dim=4, tie_word_embeddings=False, eos_token_id=2, bos_token_id=1)
CONFIGS = {
    "qwen3_5_text": dict(_COMMON, model_type="qwen3_5_text", architectures=["Qwen3_5ForCausalLM"],
                         rope_parameters={"rope_type": "default", "rope_theta": 1e6, "partial_rotary_factor": 0.5,
                                          "mrope_interleaved": True, "mrope_section": [1, 1, 0]}),
    "qwen3_next": dict(_COMMON, model_type="qwen3_next", architectures=["Qwen3NextForCausalLM"],
                       num_experts=4, num_experts_per_tok=2, moe_intermediate_size=16,
                       shared_expert_intermediate_size=24, decoder_sparse_step=1, mlp_only_layers=[],
                       norm_topk_prob=True, rope_theta=1e6, partial_rotary_factor=0.25),
}
_TENSORS: dict = {}


def available() -> bool:
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError:
        return False
    return True


def base_tensors(arch: str) -> dict:
    """HF name -> float32 array of the tiny model (made once: transformers' init, norms and gates jittered)."""
    if arch not in _TENSORS:
        import torch
        import transformers as tf
        torch.manual_seed(0)
        config = tf.AutoConfig.for_model(**CONFIGS[arch])
        model = tf.AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        with torch.no_grad():
            for name, p in model.named_parameters():
                if any(s in name for s in ("norm", "A_log", "dt_bias")):
                    p.add_(torch.randn_like(p) * 0.1)
        _TENSORS[arch] = {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}
    return {k: v.copy() for k, v in _TENSORS[arch].items()}


def write_hybrid(d: Path, arch: str, *, config=None, tensors=None, dtypes=None) -> Path:
    config = copy.deepcopy(CONFIGS[arch]) if config is None else config
    directory = hb.write_hf(d / "m", "llama", tensors=base_tensors(arch) if tensors is None else tensors,
                            dtypes=dtypes, tokenizer=False)
    (directory / "config.json").write_text(json.dumps(config, allow_nan=True))
    hb.write_tokenizer(directory, V)
    return directory


# ---------------------------------------------------------------------------------------------- config.json
NASTY = [0, -1, 2**31, 0.5, NAN, "4", [4], True]
GEOMETRY = ["linear_num_key_heads", "linear_num_value_heads", "linear_key_head_dim", "linear_value_head_dim",
            "linear_conv_kernel_dim"]
MOE_FIELDS = ["shared_expert_intermediate_size", "num_experts", "decoder_sparse_step"]


def _config_case(arch, name, expect, edit) -> Case:
    def build(d: Path) -> Path:
        config = copy.deepcopy(CONFIGS[arch])
        edit(config)
        return write_hybrid(d, arch, config=config)
    return Case("hybrid", f"{arch}: {name}", expect, build)


def _set(key, value):
    return lambda c: c.__setitem__(key, value)


def _rope(key, value):
    return lambda c: c["rope_parameters"].__setitem__(key, value)


def config_cases() -> list[Case]:
    cases = [_config_case(arch, "valid", "load", lambda c: None) for arch in CONFIGS]
    for field in GEOMETRY + ["full_attention_interval", "layer_types"]:
        for value in NASTY:
            cases.append(_config_case("qwen3_5_text", f"{field}={value!r}", "refuse", _set(field, value)))
    for field in MOE_FIELDS + ["mlp_only_layers", "norm_topk_prob", "attn_output_gate"]:
        for value in NASTY:
            legal = ((field in ("norm_topk_prob", "attn_output_gate") and value in (0, True))
                     or (field == "mlp_only_layers" and value == [4]))   # a flag; a layer index past the last
            cases.append(_config_case("qwen3_next", f"{field}={value!r}", "either" if legal else "refuse",
                                      _set(field, value)))
    for value in ("4", [-1, 1, 0], [1] * 1000, [1.5, 1, 0], "mrope"):
        cases.append(_config_case("qwen3_5_text", f"mrope_section={value!r}", "refuse", _rope("mrope_section", value)))
    types = ["linear_attention"] * 3 + ["full_attention"]
    cases += [
        _config_case("qwen3_5_text", "mrope_section [11, 11, 10] (sections wider than the rotation)", "load",
                     _rope("mrope_section", [11, 11, 10])),
        _config_case("qwen3_5_text", "rope_type mrope (plain RoPE for text)", "load", _rope("rope_type", "mrope")),
        _config_case("qwen3_5_text", "explicit layer_types", "load", _set("layer_types", types)),
        _config_case("qwen3_5_text", "layer_types one short", "refuse", _set("layer_types", types[:3])),
        _config_case("qwen3_5_text", "layer_types with a sliding layer", "refuse",
                     _set("layer_types", types[:2] + ["sliding_attention", "full_attention"])),
        _config_case("qwen3_5_text", "layer_types all full (tensors are linear)", "refuse",
                     _set("layer_types", ["full_attention"] * 4)),
        _config_case("qwen3_5_text", "value heads 3 of 2 key heads", "refuse", _set("linear_num_value_heads", 3)),
        _config_case("qwen3_5_text", "value heads 8 (tensors hold 4)", "refuse", _set("linear_num_value_heads", 8)),
        _config_case("qwen3_5_text", "conv kernel 3 (tensors hold 4)", "refuse", _set("linear_conv_kernel_dim", 3)),
        _config_case("qwen3_5_text", "partial_rotary_factor 0.01 (no rotary pair)", "refuse",
                     _rope("partial_rotary_factor", 0.01)),
        _config_case("qwen3_5_text", "no layers", "refuse", _set("num_hidden_layers", 0)),
        _config_case("qwen3_5_text", "multimodal wrapper", "load", lambda c: c.update(
            model_type="qwen3_5", text_config={k: v for k, v in c.items() if k != "architectures"})),
        _config_case("qwen3_5_text", "wrapper with text_config a list", "refuse", lambda c: c.update(
            model_type="qwen3_5", text_config=[1])),
        _config_case("qwen3_next", "top-k above experts", "refuse", _set("num_experts_per_tok", 5)),
        _config_case("qwen3_next", "mlp_only_layers [9] (no such layer)", "either", _set("mlp_only_layers", [9])),
    ]
    return cases


# ---------------------------------------------------------------------------------------------- tensors
LIN = "model.layers.0.linear_attn."


def _tensor_case(arch, name, expect, change) -> Case:
    def build(d: Path) -> Path:
        tensors = base_tensors(arch)
        dtypes = change(tensors)
        return write_hybrid(d, arch, tensors=tensors, dtypes=dtypes)
    return Case("hybrid", f"{arch}: {name}", expect, build)


def _put(name, value, dtypes=None):
    def change(t):
        t[name] = value(t) if callable(value) else value
        return dtypes
    return change


def tensor_cases() -> list[Case]:
    qkvz, qkv = LIN + "in_proj_qkvz.weight", LIN + "in_proj_qkv.weight"
    return [
        _tensor_case("qwen3_5_text", "in_proj_qkv one row short", "refuse", _put(qkv, lambda t: t[qkv][:-1])),
        _tensor_case("qwen3_5_text", "conv1d kernel 3", "refuse",
                     _put(LIN + "conv1d.weight", lambda t: t[LIN + "conv1d.weight"][..., :3].copy())),
        _tensor_case("qwen3_5_text", "A_log of 3 heads", "refuse", _put(LIN + "A_log", np.zeros(3, np.float32))),
        _tensor_case("qwen3_5_text", "A_log stored as I32", "refuse",
                     _put(LIN + "A_log", np.zeros(4, np.int32))),
        _tensor_case("qwen3_5_text", "dt_bias NaN", "refuse", _put(LIN + "dt_bias", np.full(4, NAN, np.float32))),
        _tensor_case("qwen3_5_text", "A_log inf", "refuse", _put(LIN + "A_log", np.full(4, INF, np.float32))),
        _tensor_case("qwen3_5_text", "out_proj one column short", "refuse",
                     _put(LIN + "out_proj.weight", lambda t: t[LIN + "out_proj.weight"][:, :-1].copy())),
        _tensor_case("qwen3_5_text", "gated norm of 7", "refuse", _put(LIN + "norm.weight", np.ones(7, np.float32))),
        _tensor_case("qwen3_5_text", "A_log missing", "refuse", lambda t: (t.pop(LIN + "A_log"), None)[1]),
        _tensor_case("qwen3_5_text", "q_proj without the output gate (half the rows)", "either",
                     _put("model.layers.3.self_attn.q_proj.weight",
                          lambda t: t["model.layers.3.self_attn.q_proj.weight"][:32].copy())),
        _tensor_case("qwen3_5_text", "q_proj three times the rows", "refuse",
                     _put("model.layers.3.self_attn.q_proj.weight", np.zeros((96, 32), np.float32))),
        _tensor_case("qwen3_5_text", "in_proj_qkv also under model.language_model.", "refuse",
                     _put("model.language_model.layers.0.linear_attn.in_proj_qkv.weight", lambda t: t[qkv])),
        _tensor_case("qwen3_next", "fused in_proj_qkvz beside a split in_proj_qkv", "refuse",
                     _put(qkv, np.zeros((64, 32), np.float32))),
        _tensor_case("qwen3_next", "in_proj_ba beside in_proj_a", "refuse",
                     _put(LIN + "in_proj_a.weight", np.zeros((4, 32), np.float32))),
        _tensor_case("qwen3_next", "in_proj_qkvz one row short", "refuse", _put(qkvz, lambda t: t[qkvz][:-1])),
        _tensor_case("qwen3_next", "shared_expert_gate of 2 rows", "refuse",
                     _put("model.layers.0.mlp.shared_expert_gate.weight", np.zeros((2, 32), np.float32))),
        _tensor_case("qwen3_next", "router of 5 experts", "refuse",
                     _put("model.layers.0.mlp.gate.weight", np.zeros((5, 32), np.float32))),
    ]


# ---------------------------------------------------------------------------------------------- GGUF
def _gguf_base(d: Path) -> Path:
    import sys
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.hybrid_gguf import write_gguf
    hf = dict(CONFIGS["qwen3_5_text"], layer_types=["linear_attention"] * 3 + ["full_attention"])
    path = d / "qwen35.gguf"
    write_gguf(str(path), base_tensors("qwen3_5_text"), hf)
    return path


def _gguf_case(name, expect, patch=None) -> Case:
    """patch(raw, values, tensors) -> [(offset, bytes)] overwrites the valid file in place (widths unchanged)."""
    def build(d: Path) -> Path:
        path = _gguf_base(d)
        if patch:
            raw = bytearray(path.read_bytes())
            values, tensors = hb.walk_gguf(bytes(raw))
            for at, data in patch(bytes(raw), values, tensors):
                raw[at:at + len(data)] = data
            path.write_bytes(bytes(raw))
        return path
    return Case("hybrid", f"qwen35 GGUF: {name}", expect, build)


def _kv(key, fmt, value):
    return lambda raw, values, tensors: [(values[key][0], struct.pack(fmt, value))]


def _rename(key):
    """The key spelled with its last letter changed: the reader no longer finds it (a dropped key)."""
    def patch(raw, values, tensors):
        at = values[key][0] - 4 - len(key)
        return [(at + len(key) - 1, b"Z")]
    return patch


def _tensor_field(stem, field, value):
    def patch(raw, values, tensors):
        name, ne_at, type_at, offset_at = next(t for t in tensors if t[0] == stem)
        where = {"ne0": ne_at[0], "type": type_at, "offset": offset_at}[field]
        return [(where, struct.pack("<I" if field == "type" else "<Q", value))]
    return patch


def gguf_cases() -> list[Case]:
    a = "qwen35"
    cases = [_gguf_case("valid", "load")]
    for suffix in ("ssm.conv_kernel", "ssm.state_size", "ssm.group_count", "ssm.time_step_rank", "ssm.inner_size",
                   "full_attention_interval", "rope.dimension_count", "attention.key_length"):
        for value in (0, 3, 2**32 - 1):
            odd_rotation = (suffix, value) == ("rope.dimension_count", 3)  # transformers' reading: 2 pairs
            cases.append(_gguf_case(f"{suffix}={value}", "either" if odd_rotation else "refuse",
                                    _kv(f"{a}.{suffix}", "<I", value)))
    for suffix in ("ssm.inner_size", "ssm.time_step_rank", "ssm.state_size", "ssm.group_count"):
        cases.append(_gguf_case(f"no {suffix}", "refuse", _rename(f"{a}.{suffix}")))
    cases += [
        _gguf_case("context_length 3", "load", _kv(f"{a}.context_length", "<I", 3)),
        _gguf_case("context_length 0", "refuse", _kv(f"{a}.context_length", "<I", 0)),
        _gguf_case("value_length 16 (key_length 8)", "refuse", _kv(f"{a}.attention.value_length", "<I", 16)),
        _gguf_case("rms epsilon NaN", "refuse", _kv(f"{a}.attention.layer_norm_rms_epsilon", "<f", NAN)),
        _gguf_case("rope base 0", "refuse", _kv(f"{a}.rope.freq_base", "<f", 0.0)),
        _gguf_case("ssm_a ne[0] doubled", "refuse", _tensor_field("blk.0.ssm_a", "ne0", 8)),
        _gguf_case("ssm_conv1d type I32", "refuse", _tensor_field("blk.0.ssm_conv1d.weight", "type", 26)),
        _gguf_case("ssm_out offset 0", "refuse", _tensor_field("blk.0.ssm_out.weight", "offset", 0)),
    ]
    return cases


def hybrid_cases() -> list[Case]:
    if not available():
        return []
    return config_cases() + tensor_cases() + gguf_cases()
