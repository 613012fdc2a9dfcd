"""Each fused op's reference equals the step-by-step composition of the ops it replaces, on fresh random inputs
(the engine's kernels are cross-checked against these references in tests/test_crosscheck.py on a GPU)."""
from __future__ import annotations

import numpy as np
import pytest

from impnb.formats import NVFP4Tensor
from impnb.reference import activations as act_ref
from impnb.reference import attention as attn_ref
from impnb.reference import linear as lin_ref
from impnb.reference import moe as moe_ref
from impnb.reference import norms as norm_ref
from impnb.reference import rope as rope_ref
from impnb.reference.masks import attention_mask
from impnb.reference.nvfp4 import nvfp4_dequantize, nvfp4_quantize
from impnb.tolerances import assert_close

F32 = np.float32


def _x(rng, *shape, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(F32)


@pytest.mark.parametrize("window,softcap,sinks", [(None, None, False), (5, 30.0, True), (3, None, True)])
def test_split_k_decode_attention_then_output_equals_attention_then_linear(rng, window, softcap, sinks):
    hq, hkv, d, c, chunk, n = 4, 2, 8, 16, 4, 12
    position = 37  # a wrapped ring of 16 slots: slot s holds the newest position congruent to s
    slot_pos = np.array([position - ((position - s) % c) for s in range(c)])
    k, v, q = _x(rng, c, hkv, d), _x(rng, c, hkv, d), _x(rng, hq, d)
    sink = _x(rng, hq) if sinks else None
    w, residual = _x(rng, n, hq * d, scale=0.3), _x(rng, n)
    m, l, acc = attn_ref.attention_decode(q, k, v, slot_pos, position, scale=0.3, softcap=softcap, window=window,
                                          chunk=chunk)
    assert m.shape == (hq, c // chunk) and acc.shape == (hq, c // chunk, d)
    got = attn_ref.attention_output(m, l, acc, w, sinks=sink, residual=residual)
    mask = attention_mask(np.array([position]), slot_pos, window=window)
    want = residual + lin_ref.linear(attn_ref.attention(q[None], k, v, mask, scale=0.3, softcap=softcap,
                                                        sinks=sink).reshape(-1), w)
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-5)


def test_decode_attention_of_an_empty_split_is_minus_inf_zero():
    rng = np.random.default_rng(1)
    k, v = _x(rng, 16, 1, 4), _x(rng, 16, 1, 4)
    slot_pos = np.full(16, -1)
    slot_pos[:3] = np.arange(3)
    m, l, acc = attn_ref.attention_decode(_x(rng, 2, 4), k, v, slot_pos, 2, scale=1.0, chunk=4)
    assert np.isfinite(m[:, 0]).all() and np.isneginf(m[:, 1:]).all()
    assert (l[:, 1:] == 0).all() and (acc[:, 1:] == 0).all()


def test_rms_norm_linear_and_gated_linear_are_their_compositions(rng):
    x, nw, w, b = _x(rng, 3, 32), _x(rng, 32), _x(rng, 24, 32), _x(rng, 24)
    t = nvfp4_quantize(w)
    want = act_ref.softcap(lin_ref.linear(norm_ref.rms_norm(x, nw, eps=1e-6, offset=1.0), nvfp4_dequantize(t), b),
                           cap=5.0)
    np.testing.assert_array_equal(lin_ref.rms_norm_linear(x, nw, t, b, eps=1e-6, offset=1.0, softcap=5.0), want)
    gu, wd, res = _x(rng, 2, 48), _x(rng, 16, 24), _x(rng, 2, 16)
    want = res + lin_ref.linear(act_ref.geglu_tanh(gu[:, :24], gu[:, 24:]), wd)
    np.testing.assert_array_equal(lin_ref.gated_linear(gu, wd, activation="gelu_tanh", residual=res), want)


def test_qkv_rope_append_matches_the_models_steps(rng):
    """QK-norm, RoPE and the cache write as impnb/model/blocks.py does them (kv.write on a KVCache ring)."""
    from impnb.kvcache import LayerKV
    hq, hkv, d, c, t = 4, 2, 16, 8, 3
    positions = np.arange(9, 9 + t)
    qkv = _x(rng, t, (hq + 2 * hkv) * d, scale=3.0)
    qn, kn = _x(rng, d), _x(rng, d)
    inv = (1.0 / (10000.0 ** (np.arange(0, d, 2) / d))).astype(F32)
    kv = LayerKV(c, hkv, d, d, ring_window=4)
    kv.k[:], kv.v[:] = _x(rng, c, hkv, d), _x(rng, c, hkv, d)
    kv.pos[:] = np.arange(c)
    kv.filled = c
    q, k_out, v_out, pos_out = rope_ref.qkv_rope_append(qkv, kv.k, kv.v, kv.pos, positions, inv, n_heads=hq,
                                                        q_norm=qn, k_norm=kn, eps=1e-6)
    q_want = rope_ref.rope(norm_ref.rms_norm(qkv[:, :hq * d].reshape(t, hq, d), qn, eps=1e-6), positions, inv)
    k = rope_ref.rope(norm_ref.rms_norm(qkv[:, hq * d:(hq + hkv) * d].reshape(t, hkv, d), kn, eps=1e-6),
                      positions, inv)
    kv.write(positions, k, qkv[:, (hq + hkv) * d:].reshape(t, hkv, d))
    np.testing.assert_array_equal(q, q_want)
    np.testing.assert_array_equal(k_out, kv.k)
    np.testing.assert_array_equal(v_out, kv.v)
    np.testing.assert_array_equal(pos_out, kv.pos)


def test_fused_qkv_and_moe_and_norm_add_references(rng):
    x, nw = _x(rng, 1, 32), _x(rng, 32)
    w = nvfp4_quantize(_x(rng, 3 * 2 * 8, 32))
    k, v, pos = np.zeros((6, 2, 8), F32), np.zeros((6, 2, 8), F32), np.full(6, -1)
    inv = (1.0 / (100.0 ** (np.arange(0, 8, 2) / 8))).astype(F32)
    fused = rope_ref.rms_norm_qkv_rope_append(x, nw, w, k, v, pos, np.array([4]), inv, n_heads=2, eps=1e-6)
    qkv = lin_ref.rms_norm_linear(x, nw, w, eps=1e-6)
    steps = rope_ref.qkv_rope_append(qkv, k, v, pos, np.array([4]), inv, n_heads=2)
    for a, b in zip(fused, steps):
        np.testing.assert_array_equal(a, b)
    assert pos[4] == -1, "the reference never modifies its inputs"
    ids, wts = np.array([[0, 2]], np.int32), rng.random((1, 2)).astype(F32)
    gu, dn = _x(rng, 3, 16, 32), _x(rng, 3, 32, 8)
    got = moe_ref.rms_norm_moe_experts(x, nw, wts, ids, gu, dn, eps=1e-6, residual=x)
    want = x + moe_ref.moe_experts(norm_ref.rms_norm(x, nw, eps=1e-6), wts, ids, gu, dn)
    np.testing.assert_array_equal(got, want)
    t = _x(rng, 2, 32)
    assert_close("rms_norm_add", x + norm_ref.rms_norm(t, nw, eps=1e-6, offset=1.0),
                 norm_ref.rms_norm_add(x, t, nw, eps=1e-6, offset=1.0), args=(x, t, nw),
                 kwargs={"eps": 1e-6, "offset": 1.0})


def test_embedding_of_an_nvfp4_table_dequantizes_its_rows(rng):
    from impnb.reference.embedding import embedding
    table = nvfp4_quantize(_x(rng, 10, 32))
    assert isinstance(table, NVFP4Tensor)
    ids = np.array([3, 0, 9, 3])
    np.testing.assert_array_equal(embedding(ids, table, scale=2.0), nvfp4_dequantize(table)[ids] * F32(2.0))


def test_gated_activation_covers_the_three_forms(rng):
    gu = _x(rng, 2, 20, scale=4.0)
    np.testing.assert_array_equal(act_ref.gated_activation(gu), act_ref.swiglu(gu[:, :10], gu[:, 10:]))
    np.testing.assert_array_equal(act_ref.gated_activation(gu, activation="swiglu_oai", limit=2.0),
                                  act_ref.swiglu_oai(gu[:, :10], gu[:, 10:], limit=2.0))
    with pytest.raises(ValueError, match="activation"):
        act_ref.gated_activation(gu, activation="relu")


def test_tolerances_catch_a_planted_error_in_a_fused_op(rng):
    """The fused ops' rules are tight enough to see a wrong eps or a dropped scale."""
    from impnb.errors import CrossCheckError
    x, nw, w = _x(rng, 1, 64, scale=0.01), _x(rng, 64), _x(rng, 32, 64)
    args, kw = (x, nw, w), {"eps": 1e-5}
    good = lin_ref.rms_norm_linear(*args, **kw)
    with pytest.raises(CrossCheckError, match="rms_norm_linear"):
        assert_close("rms_norm_linear", good, lin_ref.rms_norm_linear(x, nw, w, eps=1e-3), args=args, kwargs=kw)
    m, l, acc = attn_ref.attention_decode(_x(rng, 2, 8), _x(rng, 8, 1, 8), _x(rng, 8, 1, 8), np.arange(8), 7,
                                          scale=0.5, chunk=4)
    wo = _x(rng, 6, 16)
    good = attn_ref.attention_output(m, l, acc, wo)
    with pytest.raises(CrossCheckError, match="attention_output"):
        assert_close("attention_output", good, attn_ref.attention_output(m, l * F32(1.01), acc, wo),
                     args=(m, l, acc, wo))
