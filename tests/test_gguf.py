"""GGUF reader on tiny files written in the test: dequantization of every required type, canonical names, the
Q/K permutation and the Gemma norm offset undone, and one FormatError test per malformation.

Legend: R = rows (out_features), C = columns (in_features, GGUF ne[0]); H heads of hd rows in q_proj.
"""
from __future__ import annotations

import struct

import gguf
import numpy as np
import pytest
from gguf import GGMLQuantizationType as T
from gguf.quants import dequantize as gguf_dequantize
from gguf.quants import quantize

import impnb
from impnb.loaders.gguf import read_gguf, undo_qk_permutation
from impnb.loaders.names import gguf_to_canonical

from .gguf_helpers import (REFERENCE, arch_kv, build_gguf, gguf_string, pack_k_block, random_blocks,
                           reference_dequantize)

R, C = 6, 256   # 6 rows of one K super-block (or 8 small blocks) each


def _write(path, arch, tensors, kv=()):
    """tensors: {gguf name: (array, raw_dtype or None)}; kv: (key, value) strings / ints via the writer."""
    w = gguf.GGUFWriter(str(path), arch)
    for key, value in kv:
        (w.add_uint32 if isinstance(value, int) else w.add_string)(key, value)
    for name, (array, raw_dtype) in tensors.items():
        w.add_tensor(name, array, raw_dtype=raw_dtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


# ---- dequantization: round trips within each type's precision ------------------------------------------------

# type -> worst |error| of quantize -> dequantize, relative to the block's max |x| (or its range for the
# affine types): half a step of the type's grid, plus fp16 rounding of the block scale.
ROUND_TRIP_BOUND = {
    "F32": 0.0, "F16": 2.0 ** -11, "BF16": 2.0 ** -8,
    "Q8_0": 1 / 254 + 1e-3,           # d = amax/127, error <= d/2
    "Q4_0": 1 / 8 + 1e-3,             # d = max/-8: the far end of the range clamps to 7d (error amax/8)
    "Q5_0": 1 / 16 + 1e-3,            # d = max/-16, same clamp argument
    "Q4_1": 1 / 30 + 1e-3,            # d = range/15, error <= d/2 (relative to the range)
    "Q5_1": 1 / 62 + 1e-3,            # d = range/31
}


@pytest.mark.parametrize("type_name", list(ROUND_TRIP_BOUND))
def test_round_trip_within_type_precision(tmp_path, rng, type_name):
    x = rng.standard_normal((R, C)).astype(np.float32)                   # [R, C]
    qtype = T[type_name]
    stored = x if qtype == T.F32 else x.astype(np.float16) if qtype == T.F16 else quantize(x, qtype)
    path = _write(tmp_path / "m.gguf", "qwen2", {"blk.0.ffn_up.weight": (stored, None if qtype in (T.F32, T.F16)
                                                                         else qtype)})
    got = read_gguf(path).tensors["model.layers.0.mlp.up_proj.weight"]
    assert got.dtype == np.float32 and got.shape == (R, C)
    block = 32
    xb, gb = x.reshape(-1, block), got.reshape(-1, block)
    affine = type_name in ("Q4_1", "Q5_1")
    span = (xb.max(1) - xb.min(1)) if affine else np.abs(xb).max(1)
    err = np.abs(gb - xb).max(1)
    bound = ROUND_TRIP_BOUND[type_name] * (span if type_name.startswith("Q") else np.abs(xb).max(1))
    assert np.all(err <= bound + 1e-7), f"{type_name}: worst block error {err.max()} > bound {bound.max()}"


@pytest.mark.parametrize("type_name", ["Q4_K", "Q5_K", "Q6_K"])
def test_k_quant_round_trip_exact(tmp_path, rng, type_name):
    """Chosen codes and scales packed into K-quant blocks decode to exactly the values they encode."""
    blocks = [pack_k_block(rng, type_name) for _ in range(R)]
    raw = np.frombuffer(b"".join(b for b, _ in blocks), np.uint8).reshape(R, -1)
    expected = np.stack([v for _, v in blocks]).astype(np.float32)       # [R, 256]
    path = _write(tmp_path / "k.gguf", "qwen2", {"blk.0.ffn_down.weight": (raw, T[type_name])})
    got = read_gguf(path).tensors["model.layers.0.mlp.down_proj.weight"]
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("type_name", list(REFERENCE))
def test_gguf_dequantizer_matches_our_block_reading(rng, type_name):
    """gguf.quants (what impnb calls) agrees with tests/gguf_helpers.py's reading of the block layouts."""
    block, size, _ = REFERENCE[type_name]
    raw = random_blocks(rng, type_name, 16)
    ours = reference_dequantize(raw, type_name)
    theirs = gguf_dequantize(np.frombuffer(raw, np.uint8).reshape(16, size), T[type_name]).reshape(-1)
    np.testing.assert_allclose(theirs, ours, rtol=1e-6, atol=1e-9)


# ---- names ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("gguf_name, arch, canonical", [
    ("token_embd.weight", "llama", "model.embed_tokens.weight"),
    ("output.weight", "llama", "lm_head.weight"),
    ("output_norm.weight", "gemma3", "model.norm.weight"),
    ("blk.3.attn_q.weight", "llama", "model.layers.3.self_attn.q_proj.weight"),
    ("blk.3.attn_k.bias", "qwen2", "model.layers.3.self_attn.k_proj.bias"),
    ("blk.0.attn_output.weight", "llama", "model.layers.0.self_attn.o_proj.weight"),
    ("blk.1.ffn_norm.weight", "llama", "model.layers.1.post_attention_layernorm.weight"),
    ("blk.1.ffn_norm.weight", "gemma3", "model.layers.1.pre_feedforward_layernorm.weight"),
    ("blk.1.post_attention_norm.weight", "gemma3", "model.layers.1.post_attention_layernorm.weight"),
    ("blk.1.post_ffw_norm.weight", "gemma3", "model.layers.1.post_feedforward_layernorm.weight"),
    ("blk.2.attn_q_norm.weight", "qwen3", "model.layers.2.self_attn.q_norm.weight"),
    ("blk.4.ffn_gate_exps.weight", "qwen3moe", "model.layers.4.mlp.experts.gate_proj.weight"),
    ("blk.4.ffn_gate_inp.weight", "qwen3moe", "model.layers.4.mlp.gate.weight"),
    ("blk.4.ffn_up_shexp.weight", "qwen2moe", "model.layers.4.mlp.shared_expert.up_proj.weight"),
    ("blk.0.attn_sinks.weight", "gpt-oss", "model.layers.0.self_attn.sinks.weight"),
])
def test_name_table(gguf_name, arch, canonical):
    assert gguf_to_canonical(gguf_name, arch) == canonical


def test_unknown_tensor_kept_under_its_gguf_name(tmp_path):
    one = np.ones((4,), np.float32)
    path = _write(tmp_path / "u.gguf", "llama", {"blk.0.attn_norm.weight": (one, None),
                                                 "blk.0.mystery_thing.weight": (one, None)})
    gf = read_gguf(path)
    assert set(gf.tensors) == {"model.layers.0.input_layernorm.weight", "blk.0.mystery_thing.weight"}
    assert gf.unmapped == ["blk.0.mystery_thing.weight"]


# ---- the converter's value transforms, undone -----------------------------------------------------------------

def llama_cpp_permute(w: np.ndarray, n_heads: int) -> np.ndarray:
    """What convert_hf_to_gguf.py's LlamaModel.permute does to q_proj / k_proj rows (the forward direction)."""
    hd = w.shape[0] // n_heads
    return w.reshape(n_heads, 2, hd // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


@pytest.mark.parametrize("arch, permuted", [("llama", True), ("mistral", True), ("qwen2", False)])
def test_qk_permutation_undone_only_for_llama_family(tmp_path, rng, arch, permuted):
    n_heads, n_kv, hd, hidden = 4, 2, 8, 32
    q_hf = rng.standard_normal((n_heads * hd, hidden)).astype(np.float32)    # [H*hd, hidden]
    k_hf = rng.standard_normal((n_kv * hd, hidden)).astype(np.float32)
    k_bias = rng.standard_normal((n_kv * hd,)).astype(np.float32)
    store = (lambda w, h: llama_cpp_permute(w, h)) if permuted else (lambda w, h: w)
    path = _write(tmp_path / "p.gguf", arch, {
        "blk.0.attn_q.weight": (store(q_hf, n_heads), None), "blk.0.attn_k.weight": (store(k_hf, n_kv), None),
        "blk.0.attn_k.bias": (store(k_bias, n_kv), None)},
        kv=[(f"{arch}.attention.head_count", n_heads), (f"{arch}.attention.head_count_kv", n_kv)])
    t = read_gguf(path).tensors
    np.testing.assert_array_equal(t["model.layers.0.self_attn.q_proj.weight"], q_hf)
    np.testing.assert_array_equal(t["model.layers.0.self_attn.k_proj.weight"], k_hf)
    np.testing.assert_array_equal(t["model.layers.0.self_attn.k_proj.bias"], k_bias)


def _rope_halves(x, pos, theta=10000.0):
    """HF rotate_half RoPE on [H, hd]: pair i is (x[i], x[i + hd/2])."""
    hd = x.shape[-1]
    ang = pos * theta ** (-np.arange(hd // 2) * 2 / hd)
    a, b = x[..., : hd // 2], x[..., hd // 2:]
    return np.concatenate([a * np.cos(ang) - b * np.sin(ang), a * np.sin(ang) + b * np.cos(ang)], -1)


def _rope_interleaved(x, pos, theta=10000.0):
    """llama.cpp's "normal" RoPE on [H, hd]: pair i is (x[2i], x[2i + 1])."""
    hd = x.shape[-1]
    ang = pos * theta ** (-np.arange(hd // 2) * 2 / hd)
    a, b = x[..., 0::2], x[..., 1::2]
    out = np.empty_like(x)
    out[..., 0::2], out[..., 1::2] = a * np.cos(ang) - b * np.sin(ang), a * np.sin(ang) + b * np.cos(ang)
    return out


def test_unpermuted_rows_make_hf_rope_equal_llama_cpp_rope(rng):
    """Why the permutation exists: llama.cpp's interleaved RoPE on the GGUF rows equals HF's half-split RoPE on
    our un-permuted rows (up to the same row permutation), at every position. A wrong un-permutation fails this."""
    n_heads, hd, hidden = 3, 16, 24
    w_gguf = rng.standard_normal((n_heads * hd, hidden))
    w_ours = undo_qk_permutation(w_gguf, n_heads)
    x = rng.standard_normal(hidden)
    for pos in (0, 1, 7, 1000):
        ours = _rope_halves((w_ours @ x).reshape(n_heads, hd), pos)
        theirs = _rope_interleaved((w_gguf @ x).reshape(n_heads, hd), pos)
        np.testing.assert_allclose(undo_qk_permutation(theirs.reshape(-1), n_heads).reshape(n_heads, hd), ours,
                                   rtol=1e-12, atol=1e-12)
        # and the scores q.k are identical whichever layout each side uses
        np.testing.assert_allclose(ours.ravel() @ ours.ravel(), theirs.ravel() @ theirs.ravel(), rtol=1e-12)


def test_gemma_norms_stored_plus_one_are_shifted_back(tmp_path, rng):
    w = rng.standard_normal(16).astype(np.float32)
    lin = rng.standard_normal((4, 32)).astype(np.float32)
    path = _write(tmp_path / "g.gguf", "gemma3", {
        "blk.0.attn_norm.weight": (w + 1, None), "blk.0.attn_q_norm.weight": (w + 1, None),
        "output_norm.weight": (w + 1, None), "blk.0.ffn_up.weight": (lin, None)})
    t = read_gguf(path).tensors
    for name in ("model.layers.0.input_layernorm.weight", "model.layers.0.self_attn.q_norm.weight",
                 "model.norm.weight"):
        np.testing.assert_allclose(t[name], w, atol=2e-7)
    np.testing.assert_array_equal(t["model.layers.0.mlp.up_proj.weight"], lin)


def test_metadata_plain_values_and_raw_bytes(tmp_path, rng):
    x = rng.standard_normal((R, C)).astype(np.float32)
    q = quantize(x, T.Q4_1)
    path = _write(tmp_path / "m.gguf", "llama", {"blk.0.ffn_up.weight": (q, T.Q4_1)},
                  kv=[("llama.block_count", 1), ("general.name", "tiny")])
    gf = read_gguf(path)
    assert gf.architecture == "llama" and gf.metadata["llama.block_count"] == 1
    assert gf.metadata["general.name"] == "tiny" and type(gf.metadata["llama.block_count"]) is int
    np.testing.assert_array_equal(gf.raw("blk.0.ffn_up.weight"), q)
    metadata, tensors, tokenizer_info = gf       # the tuple form impnb.loaders uses
    assert metadata is gf.metadata and tokenizer_info == {}


# ---- malformed files: FormatError naming what is wrong ---------------------------------------------------------

def _tensor(name="t.weight", ne=(32,), gtype=0, data=None, **kw):
    data = data if data is not None else b"\0" * (4 * int(np.prod(ne)))
    return (name, ne, gtype, data, *kw.values())


GOOD_KV = [arch_kv()]


def _header(n_kv: int, n_tensors: int = 0) -> bytes:
    return b"GGUF" + struct.pack("<IQQ", 3, n_tensors, n_kv)


# case -> (file bytes, a fragment the error message must contain)
MALFORMED = {
    "empty file": (b"", "cannot map"),
    "bad magic": (b"GGUX" + build_gguf(GOOD_KV)[4:], "magic"),
    "version 1": (build_gguf(GOOD_KV, version=1), "version 1"),
    "version 4": (build_gguf(GOOD_KV, version=4), "version 4"),
    "big-endian": (b"GGUF" + struct.pack(">I", 3) + build_gguf(GOOD_KV)[8:], "big-endian"),
    "truncated header": (build_gguf(GOOD_KV)[:13], "truncated"),
    "kv count beyond file": (build_gguf(GOOD_KV, n_kv=1 << 62), "cannot fit"),
    "tensor count beyond file": (build_gguf(GOOD_KV, n_tensors=1 << 40), "cannot fit"),
    "unknown value type": (build_gguf([("general.architecture", 13, b"\0" * 8)]), "unknown value type 13"),
    # gguf.GGUFReader loops forever on this one (a 0-byte read past the end never advances its cursor)
    "huge u8 array count": (_header(1) + gguf_string("x") + struct.pack("<IIQ", 9, 0, 1 << 60), "cannot fit"),
    "huge string length": (_header(1) + gguf_string("general.architecture") + struct.pack("<IQ", 8, 1 << 62),
                           "truncated"),
    "array nested too deep": (_header(1) + gguf_string("x") + struct.pack("<IIQIQIQ", 9, 9, 1, 9, 1, 9, 1),
                              "nested"),
    "invalid utf-8 key": (build_gguf([(b"\xff\xfe", 4, 1)]), "UTF-8"),
    "duplicate key": (build_gguf([arch_kv(), arch_kv()]), "duplicate metadata key"),
    "alignment not a power of two": (build_gguf([arch_kv(), ("general.alignment", 4, 24)]), "alignment"),
    "missing architecture": (build_gguf([("general.name", 8, "x")], [_tensor()]), "general.architecture"),
    "unknown ggml type": (build_gguf(GOOD_KV, [_tensor(gtype=77)]), "unknown ggml type 77"),
    "n_dims 0": (build_gguf(GOOD_KV, [_tensor(ne=())]), "n_dims 0"),
    "n_dims 5": (build_gguf(GOOD_KV, [_tensor(ne=(1, 1, 1, 1, 32))]), "n_dims 5"),
    "ne[0] not a multiple of the block": (build_gguf(GOOD_KV, [_tensor(ne=(20,), gtype=8, data=b"\0" * 34)]),
                                          "multiple of its block size"),
    "shape product overflows": (build_gguf(GOOD_KV, [_tensor(ne=(1 << 40, 1 << 40, 1 << 40), data=b"")]),
                                "more data than the file"),
    "tensor data past the end": (build_gguf(GOOD_KV, [_tensor(ne=(32,))])[:-64], "past the end"),
    "misaligned offset": (build_gguf(GOOD_KV, [_tensor(ne=(8,), data=b"\0" * 32, offset=4)]), "alignment"),
    "overlapping tensors": (build_gguf(GOOD_KV, [_tensor("a", ne=(16,), data=b"\0" * 64),
                                                 _tensor("b", ne=(16,), data=b"\0" * 64, offset=32)]), "overlap"),
    "duplicate tensor names": (build_gguf(GOOD_KV, [_tensor("a"), _tensor("a")]), "duplicate tensor name"),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_raises_format_error(tmp_path, case):
    data, fragment = MALFORMED[case]
    path = tmp_path / "bad.gguf"
    path.write_bytes(data)
    with pytest.raises(impnb.FormatError) as info:
        read_gguf(path)
    assert str(path) in str(info.value) and fragment in str(info.value), str(info.value)


def test_well_formed_builder_output_reads(tmp_path):
    """The builder the malformed cases start from writes valid files."""
    path = tmp_path / "ok.gguf"
    path.write_bytes(build_gguf(GOOD_KV, [_tensor("a", ne=(8, 2)), _tensor("b", ne=(32,))]))
    gf = read_gguf(path)
    assert {k: v.shape for k, v in gf.tensors.items()} == {"a": (2, 8), "b": (32,)}


def test_custom_alignment(tmp_path):
    """general.alignment = 64: data start and every offset on 64-byte boundaries."""
    data = np.arange(16, dtype="<f4").tobytes()
    path = tmp_path / "a64.gguf"
    path.write_bytes(build_gguf([arch_kv(), ("general.alignment", 4, 64)],
                                [_tensor("a", ne=(16,), data=data), _tensor("b", ne=(16,), data=data)], alignment=64))
    gf = read_gguf(path)
    assert gf.header.alignment == 64 and all(t.offset % 64 == 0 for t in gf.tensor_infos)
    np.testing.assert_array_equal(gf.tensors["b"], np.arange(16, dtype=np.float32))


@pytest.mark.parametrize("type_name", ["Q4_1", "Q4_K", "Q6_K"])
def test_dequantize_grouping_gives_gguf_values_bit_for_bit(rng, type_name):
    """impnb's dequantize hands gguf.quants rows of many blocks, in chunks, with a remainder row of single blocks:
    the values are those of decoding every block on its own."""
    from impnb.loaders.gguf import _BLOCKS_PER_CHUNK, dequantize
    block, size, _ = REFERENCE[type_name]
    n = _BLOCKS_PER_CHUNK + 64 * 3 + 5  # two chunks; the second ends with 5 blocks outside a whole row
    raw = np.frombuffer(random_blocks(rng, type_name, n), np.uint8)
    got = dequantize(raw, T[type_name], (n * block,))
    one_by_one = gguf_dequantize(raw.reshape(n, size), T[type_name]).reshape(-1)
    assert np.array_equal(got.view(np.uint32), one_by_one.astype(np.float32).view(np.uint32))
