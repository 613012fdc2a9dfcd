"""Tensor tables checked as a whole (GGUF and safetensors) and side files parsed with bounds: each refusal is a
FormatError naming the file and the tensor or field, raised before any tensor is read."""
from __future__ import annotations

import json
import struct
import time

import numpy as np
import pytest

import impnb
from impnb import FormatError
from impnb.loaders.gguf import read_gguf
from impnb.loaders.safetensors import save_safetensors

from .gguf_helpers import arch_kv, build_gguf
from .quantize_helpers import write_tiny_llama

F32 = 0


def _f32(n: int) -> bytes:
    return np.arange(n, dtype="<f4").tobytes()


# ---------------------------------------------------------------------------------------------- GGUF tables
def test_gguf_overlap_hidden_behind_a_zero_size_tensor(tmp_path):
    """Sorted by offset: A [0, 256), Z [64, 64) (zero size), B [128, 256): B overlaps A though its neighbour Z
    does not."""
    tensors = [("a.weight", (64,), F32, _f32(64), 0), ("z.weight", (0,), F32, b"", 64),
               ("b.weight", (32,), F32, _f32(32), 128)]
    path = tmp_path / "o.gguf"
    path.write_bytes(build_gguf([arch_kv()], tensors))
    with pytest.raises(FormatError, match="'a.weight'.*'b.weight'.*overlap"):
        read_gguf(path)


def test_gguf_zero_size_dimension_cannot_hide_a_huge_one(tmp_path):
    path = tmp_path / "z.gguf"
    path.write_bytes(build_gguf([arch_kv()], [("z.weight", (0, 2**62), F32, b"")]))
    with pytest.raises(FormatError, match="'z.weight'.*more data than the file"):
        read_gguf(path)


def test_gguf_integer_tensor_is_not_a_weight(tmp_path):
    path = tmp_path / "i.gguf"
    path.write_bytes(build_gguf([arch_kv()], [("token_embd.weight", (8,), 26, np.arange(8, dtype="<i4").tobytes())]))
    with pytest.raises(FormatError, match="'token_embd.weight'.*I32.*integer"):
        read_gguf(path)


# ---------------------------------------------------------------------------------------------- safetensors
@pytest.fixture
def tiny(tmp_path, rng):
    return write_tiny_llama(tmp_path / "tiny", rng)


def _rewrite(directory, change):
    from impnb.loaders.safetensors import read_safetensors
    tensors, meta = read_safetensors(directory / "model.safetensors")
    tensors = {k: np.array(v) for k, v in tensors.items()}
    dtypes = change(tensors) or {}
    (directory / "model.safetensors").unlink()
    save_safetensors(directory / "model.safetensors", tensors, meta, dtypes)


@pytest.mark.parametrize("dtype, array", [
    ("F8_E8M0", np.full((64,), 127, np.uint8)), ("F4", np.zeros((32,), np.uint8)), (None, np.zeros(64, np.int32)),
    (None, np.zeros(64, np.complex64)), (None, np.ones(64, bool)), ("F8_E4M3", np.zeros(64, np.uint8)),
])
def test_a_dense_weight_must_be_a_float(tiny, dtype, array):
    name = "model.norm.weight"
    _rewrite(tiny, lambda t: (t.__setitem__(name, array), {name: dtype} if dtype else None)[1])
    with pytest.raises(FormatError, match=f"'{name}'.*cannot be a dense weight"):
        impnb.load_checkpoint(tiny)


def test_one_weight_under_two_aliases_is_refused(tiny):
    _rewrite(tiny, lambda t: t.__setitem__("model.language_model.norm.weight", t["model.norm.weight"] * 2))
    with pytest.raises(FormatError, match="both 'norm.weight'"):
        impnb.load_checkpoint(tiny)


def test_dense_weight_beside_its_packed_twin_is_refused(tiny):
    from impnb.reference.nvfp4 import nvfp4_quantize
    m = "model.layers.0.mlp.down_proj"

    def add_packed(t):
        q = nvfp4_quantize(t[m + ".weight"], layout="compressed-tensors")
        t.update({m + ".weight_packed": q.packed, m + ".weight_scale": q.scales,
                  m + ".weight_global_scale": np.array([q.global_scale], np.float32)})
        return {m + ".weight_scale": "F8_E4M3"}

    _rewrite(tiny, add_packed)
    config = json.loads((tiny / "config.json").read_text())
    config["quantization_config"] = {"quant_method": "compressed-tensors", "format": "nvfp4-pack-quantized",
                                     "config_groups": {"group_0": {"format": "nvfp4-pack-quantized",
                                                                   "weights": {"group_size": 16}}}}
    (tiny / "config.json").write_text(json.dumps(config))
    with pytest.raises(FormatError, match=f"'{m}.weight' is stored both dense and quantized"):
        impnb.load_checkpoint(tiny)


def test_two_expert_layouts_or_two_routers_are_refused():
    from impnb.loaders.tables import check_unique_sources
    base = ["model.layers.0.mlp.experts.gate_up_proj", "model.layers.0.mlp.experts.down_proj"]
    check_unique_sources(base, "x")   # fused gate|up with its stacked down projection: one layout
    with pytest.raises(FormatError, match="gate_up_proj.*gate_proj"):
        check_unique_sources(base + ["model.layers.0.mlp.experts.gate_proj"], "x")
    with pytest.raises(FormatError, match="down_proj.*3.down_proj"):
        check_unique_sources(base + ["model.layers.0.mlp.experts.3.down_proj.weight"], "x")
    with pytest.raises(FormatError, match="router"):
        check_unique_sources(["model.layers.1.mlp.gate.weight", "model.layers.1.mlp.router.weight"], "x")


def test_config_checked_against_tensors_before_the_model_is_built(tiny):
    config = json.loads((tiny / "config.json").read_text())
    (tiny / "config.json").write_text(json.dumps({**config, "num_attention_heads": 2, "head_dim": 16,
                                                  "num_key_value_heads": 2}))
    with pytest.raises(impnb.ConfigError, match="q_proj"):
        impnb.load_model(tiny, backend="reference")


# ---------------------------------------------------------------------------------------------- JSON side files
@pytest.mark.parametrize("name", ["config.json", "tokenizer_config.json", "generation_config.json",
                                  "chat_template.json"])
def test_deep_json_is_a_format_error(tiny, name):
    (tiny / name).write_text('{"a": ' + "[" * 50_000 + "]" * 50_000 + "}")
    with pytest.raises(FormatError, match=name.replace(".", r"\.")):
        impnb.load_model(tiny, backend="reference")


def test_moderately_deep_json_is_refused_by_the_depth_limit(tiny):
    (tiny / "config.json").write_text('{"a": ' + "[" * 500 + "]" * 500 + "}")
    with pytest.raises(FormatError, match="nested deeper than 64"):
        impnb.load_checkpoint(tiny)


def test_oversized_config_is_refused_before_it_is_read(tiny, monkeypatch):
    from impnb.loaders import jsonfile
    monkeypatch.setattr(jsonfile, "MAX_CONFIG_BYTES", 1000)
    (tiny / "config.json").write_text(json.dumps({**json.loads((tiny / "config.json").read_text()),
                                                  "pad": "x" * 2000}))
    with pytest.raises(FormatError, match="over the 1000-byte limit"):
        jsonfile.read_json_file(tiny / "config.json", max_bytes=jsonfile.MAX_CONFIG_BYTES)


# ---------------------------------------------------------------------------------------------- tokenizers
def _edit_tokenizer(directory, change):
    obj = json.loads((directory / "tokenizer.json").read_text())
    change(obj)
    (directory / "tokenizer.json").write_text(json.dumps(obj))


def test_bpe_dropout_is_refused(tmp_path):
    from tokenizers import Tokenizer, models
    tok = Tokenizer(models.BPE({"a": 0, "b": 1, "ab": 2}, [("a", "b")], dropout=0.5))
    tok.save(str(tmp_path / "tokenizer.json"))
    with pytest.raises(FormatError, match="dropout.*deterministic"):
        impnb.tokenizer.Tokenizer.from_directory(tmp_path)


@pytest.mark.parametrize("pattern", [r"(a|aa)+$", r"(\w+\s?)+$", r"(?:x*)*y", r"(a|b){2,}c", r"(.)\1"])
def test_pathological_pre_tokenizer_regex_is_refused_before_rust_panics(tiny, pattern):
    _edit_tokenizer(tiny, lambda o: o.update(pre_tokenizer={"type": "Split", "pattern": {"Regex": pattern},
                                                            "behavior": "Isolated", "invert": False}))
    with pytest.raises(FormatError, match="pre_tokenizer"):
        impnb.tokenizer.Tokenizer.from_directory(tiny)


def test_real_pre_tokenizer_regexes_pass():
    from impnb.loaders.gguf_vocab import PRE_TOKENIZER_SPLITS
    from impnb.tokenizer_checks import check_oniguruma_pattern
    o200k = (r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
             r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+")
    for pattern in [p for splits in PRE_TOKENIZER_SPLITS.values() for p in splits] + [o200k, r" {2,}", r"\d{1,3}"]:
        check_oniguruma_pattern(pattern, "tokenizer.json", "pre_tokenizer")


def test_a_library_panic_becomes_a_format_error(tiny):
    """Should a pattern slip past the check, the tokenizers library's PanicException is caught."""
    from tokenizers import Regex, pre_tokenizers
    tok = impnb.tokenizer.Tokenizer.from_directory(tiny)
    tok.backend.pre_tokenizer = pre_tokenizers.Split(Regex(r"(a|aa)+$"), behavior="isolated")
    with pytest.raises(FormatError, match="tokenizer failed to encode"):
        tok.encode("a" * 5000 + "!")


def test_vocabulary_limits(tiny):
    from impnb.tokenizer_checks import MAX_MERGES
    _edit_tokenizer(tiny, lambda o: o["model"].update(type="BPE", merges=["a b"] * (MAX_MERGES + 1)))
    with pytest.raises(FormatError, match="model.merges"):
        impnb.tokenizer.Tokenizer.from_directory(tiny)


def test_long_sentencepiece_vocabulary_is_refused_fast():
    """3 MB of 1000-character pieces: recovering their merges would slice every piece at every position."""
    info = {"ggml.model": "llama", "ggml.tokens": ["x" * 1000 + str(i) for i in range(3000)],
            "ggml.scores": [0.0] * 3000, "ggml.token_type": [1] * 3000}
    start = time.perf_counter()
    with pytest.raises(FormatError, match="at most 256 characters"):
        impnb.tokenizer.Tokenizer.from_gguf_info(info, "llama", "v.gguf")
    info["ggml.tokens"] = ["y" * 250 + str(i) for i in range(3000)]
    with pytest.raises(FormatError, match="too long to recover"):
        impnb.tokenizer.Tokenizer.from_gguf_info(info, "llama", "v.gguf")
    assert time.perf_counter() - start < 2


def test_gguf_vocabulary_lists_must_agree():
    base = {"ggml.model": "llama", "ggml.tokens": ["a", "b", "ab"], "ggml.scores": [0.0, 0.0, 1.0]}
    with pytest.raises(FormatError, match="scores must be a list of 3"):
        impnb.tokenizer.Tokenizer.from_gguf_info({**base, "ggml.scores": [0.0]}, "llama", "v.gguf")
    with pytest.raises(FormatError, match="finite"):
        impnb.tokenizer.Tokenizer.from_gguf_info({**base, "ggml.scores": [0.0, float("nan"), 1.0]}, "llama", "v")
    with pytest.raises(FormatError, match="add_bos_token"):
        impnb.tokenizer.Tokenizer.from_gguf_info({**base, "ggml.add_bos_token": "false"}, "llama", "v.gguf")


def test_header_helpers_agree_with_struct():
    """build_gguf's offsets are what the overlap test above relies on."""
    raw = build_gguf([arch_kv()], [("a.weight", (8,), F32, _f32(8), 32)])
    assert struct.unpack_from("<Q", raw, raw.index(b"a.weight") + 8 + 4 + 8 + 4)[0] == 32


def test_nan_block_scales_next_to_a_usable_global_scale_are_refused_at_load(tmp_path, rng):
    """A NaN scale byte would make every logit NaN; with a zero global scale (ModelOpt's all-zero tensor) the layer
    contributes zeros instead, and loads."""
    import warnings

    from impnb.api import _finite_weight
    from impnb.reference.nvfp4 import nvfp4_quantize
    q = nvfp4_quantize(rng.standard_normal((8, 32)).astype(np.float32), layout="compressed-tensors")
    scales = np.array(q.scales)
    scales[2, 1] = 0x7F
    bad = type(q)(q.packed, scales, q.global_scale, q.layout)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # the zero global scale is warned about when the tensor is built
        zero = type(q)(q.packed, scales, 0.0, q.layout)
    assert _finite_weight(q) and not _finite_weight(bad) and _finite_weight(zero) and not _finite_weight((q, bad))
