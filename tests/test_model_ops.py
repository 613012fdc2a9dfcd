"""Reference model ops (impnb/reference/{norms,rope,masks,attention,activations,moe,embedding,linear}.py) against
float64 formulas written out by hand, plus their contracts (tie-breaks, empty rows, idle experts, bad input)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from impnb import ops
from impnb.config import RopeConfig
from impnb.reference.rope import rope_inv_freq

R = dict(backend="reference")


def _n(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


# ---- norms ----
@pytest.mark.parametrize("offset", [0.0, 1.0])
def test_rms_norm_formula(rng, offset):
    x, w = _n(rng, 5, 37) * 10, _n(rng, 37)
    x64 = x.astype(np.float64)
    want = x64 / np.sqrt((x64 ** 2).mean(-1, keepdims=True) + 1e-6) * (offset + w.astype(np.float64))
    got = ops.rms_norm(x, w, eps=1e-6, offset=offset, **R)
    np.testing.assert_allclose(got, want, rtol=2e-6, atol=1e-6)


def test_rms_norm_weightless_and_per_chunk(rng):
    x = _n(rng, 2, 3, 4, 8)  # QK-norm with norm_dim 8 < head_dim 32: per chunk
    got = ops.rms_norm(x, None, eps=1e-6, **R)
    np.testing.assert_allclose((got.astype(np.float64) ** 2).mean(-1), 1.0, rtol=1e-4)


# ---- rope ----
def _rotate64(x, pos, inv, style):
    x = x.astype(np.float64)
    out = x.copy()
    rot = 2 * inv.size
    # the angle is the float32 product pos * inv_freq, as in transformers (at pos 9000 a float64 angle differs by
    # ~5e-4 rad: matching HF means matching its float32 angle); everything after it is float64
    ang = (pos.astype(np.float32)[:, None] * inv.astype(np.float32)[None]).astype(np.float64)  # [T, F]
    for f in range(inv.size):
        i, j = (f, f + rot // 2) if style == "neox" else (2 * f, 2 * f + 1)
        c, s = np.cos(ang[:, f])[:, None], np.sin(ang[:, f])[:, None]
        out[:, :, i] = x[:, :, i] * c - x[:, :, j] * s
        out[:, :, j] = x[:, :, j] * c + x[:, :, i] * s
    return out


@pytest.mark.parametrize("style", ["neox", "interleaved"])
@pytest.mark.parametrize("partial", [1.0, 0.5])
def test_rope_rotates_pairs_and_passes_the_tail(rng, style, partial):
    x, pos = _n(rng, 4, 3, 16), np.array([0, 1, 517, 9000])
    inv, _ = rope_inv_freq(RopeConfig(theta=10000.0, partial_rotary_factor=partial), 16)
    got = ops.rope(x, pos, inv, style=style, **R)
    np.testing.assert_allclose(got, _rotate64(x, pos, inv, style), atol=2e-5)
    np.testing.assert_array_equal(got[:, :, 2 * inv.size:], x[:, :, 2 * inv.size:])
    np.testing.assert_array_equal(got[0], x[0])  # position 0 is the identity


def test_rope_inv_freq_formulas():
    inv, s = rope_inv_freq(RopeConfig(theta=10000.0), 8)
    np.testing.assert_allclose(inv, [1, 0.1, 0.01, 0.001], rtol=1e-6)
    lin, _ = rope_inv_freq(RopeConfig(theta=10000.0, kind="linear", factor=4.0), 8)
    np.testing.assert_allclose(lin, inv / 4, rtol=1e-6)
    prop, _ = rope_inv_freq(RopeConfig(theta=1e6, kind="proportional", partial_rotary_factor=0.25), 32)
    np.testing.assert_allclose(prop[:4], 1e6 ** (-np.arange(0, 8, 2) / 32), rtol=1e-6)  # / head_dim, not / 8
    assert prop.size == 16 and (prop[4:] == 0).all()
    _, yarn_scale = rope_inv_freq(RopeConfig(theta=1e4, kind="yarn", factor=16.0,
                                             original_max_position_embeddings=4096), 64)
    assert yarn_scale == pytest.approx(0.1 * math.log(16.0) + 1.0)
    ff, _ = rope_inv_freq(RopeConfig(theta=10000.0, freq_factors=(1.0, 2.0, 4.0, 8.0)), 8)
    np.testing.assert_allclose(ff, inv / [1, 2, 4, 8], rtol=1e-6)


# ---- masks ----
def test_mask_window_counts_the_query_and_skips_empty_slots():
    slots = np.array([4, 5, -1, 2, 3])
    got = ops.attention_mask(np.array([5]), slots, window=3, **R)
    assert got.tolist() == [[True, True, False, False, True]]  # 3, 4, 5 visible; 2 is 3 back; -1 empty
    assert ops.attention_mask(np.array([2]), slots, **R).tolist() == [[False, False, False, True, False]]


# ---- attention ----
def _attention64(q, k, v, mask, scale, softcap=None, sinks=None):
    t, hq, _ = q.shape
    g = hq // k.shape[1]
    out = np.zeros((t, hq, v.shape[2]))
    for h in range(hq):
        s = q[:, h].astype(np.float64) @ k[:, h // g].astype(np.float64).T * scale
        if softcap:
            s = softcap * np.tanh(s / softcap)
        s = np.where(mask, s, -np.inf)
        extra = np.full((t, 1), sinks[h] if sinks is not None else -np.inf)
        z = np.concatenate([s, extra], axis=1)
        m = z.max(1, keepdims=True)
        p = np.exp(z - m)
        out[:, h] = (p[:, :-1] / p.sum(1, keepdims=True)) @ v[:, h // g].astype(np.float64)
    return out


@pytest.mark.parametrize("softcap,use_sinks", [(None, False), (20.0, False), (None, True)])
def test_attention_gqa_formula(rng, softcap, use_sinks):
    q, k, v = _n(rng, 3, 6, 8), _n(rng, 7, 2, 8), _n(rng, 7, 2, 5)
    mask = ops.attention_mask(np.array([4, 5, 6]), np.array([0, 1, 2, 3, 4, 5, 6]), window=4, **R)
    sinks = _n(rng, 6) if use_sinks else None
    got = ops.attention(q, k, v, mask, scale=0.3, softcap=softcap, sinks=sinks, **R)
    np.testing.assert_allclose(got, _attention64(q, k, v, mask, 0.3, softcap, sinks), atol=2e-6)


def test_attention_row_without_keys_is_zero_not_nan(rng):
    q, k, v = _n(rng, 2, 2, 4), _n(rng, 3, 1, 4), _n(rng, 3, 1, 4)
    mask = np.array([[False] * 3, [True] * 3])
    got = ops.attention(q, k, v, mask, scale=1.0, **R)
    assert np.isfinite(got).all() and (got[0] == 0).all()


# ---- activations ----
def test_activation_formulas(rng):
    x, u = _n(rng, 200) * 6, _n(rng, 200)
    x64 = x.astype(np.float64)
    silu = x64 / (1 + np.exp(-x64))
    gelu = 0.5 * x64 * (1 + np.tanh(math.sqrt(2 / math.pi) * (x64 + 0.044715 * x64 ** 3)))
    for name, want in [("silu", silu), ("gelu_tanh", gelu)]:
        np.testing.assert_allclose(getattr(ops, name)(x, **R), want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ops.swiglu(x, u, **R), silu * u, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ops.geglu_tanh(x, u, **R), gelu * u, rtol=1e-5, atol=1e-6)
    g, up = np.minimum(x64, 7.0), np.clip(u.astype(np.float64) * 9, -7, 7)
    want = (up + 1) * g / (1 + np.exp(-1.702 * g))
    np.testing.assert_allclose(ops.swiglu_oai(x, u * 9, alpha=1.702, limit=7.0, **R), want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ops.softcap(x * 10, cap=30.0, **R), 30 * np.tanh(x64 * 10 / 30), rtol=1e-5)
    assert np.isfinite(ops.silu(np.array([-1e4, 1e4], np.float32), **R)).all()


# ---- moe ----
def test_moe_route_ties_go_to_the_lower_index():
    logits = np.array([[0.5, 2.0, 1.0, 2.0, 2.0]], np.float32)
    w, ids = ops.moe_route(logits, top_k=2, gating="softmax", renormalize=True, **R)
    assert ids.tolist() == [[1, 3]] and ids.dtype == np.int32
    np.testing.assert_allclose(w, [[0.5, 0.5]], rtol=1e-6)


@pytest.mark.parametrize("gating", ["softmax", "topk_softmax", "sigmoid"])
def test_moe_route_gatings(rng, gating):
    logits = _n(rng, 4, 9)
    scale = (0.5 + rng.random(9)).astype(np.float32)
    w, ids = ops.moe_route(logits, top_k=3, gating=gating, renormalize=True, expert_scale=scale, **R)
    l64 = logits.astype(np.float64)
    want_ids = np.argsort(-l64, axis=1, kind="stable")[:, :3]  # all three gatings are monotone in the logit
    np.testing.assert_array_equal(ids, want_ids)
    top = np.take_along_axis(l64, want_ids, 1)
    base = np.exp(top) if gating != "sigmoid" else 1 / (1 + np.exp(-top))
    np.testing.assert_allclose(w, base / base.sum(1, keepdims=True) * scale[want_ids], rtol=1e-5)


def test_moe_experts_formula_and_idle_experts_never_run(rng):
    t, e, k, h, i = 5, 4, 2, 6, 3
    x = _n(rng, t, h)
    ids = np.array([[0, 1], [1, 0], [2, 0], [0, 2], [1, 2]], np.int32)  # expert 3 is idle
    w = rng.random((t, k)).astype(np.float32)
    gate_up, down = _n(rng, e, 2 * i, h), _n(rng, e, h, i)
    gate_up[3] = np.nan  # would poison the output if the idle expert ran
    got = ops.moe_experts(x, w, ids, gate_up, down, activation="silu", **R)
    want = np.zeros((t, h))
    for r in range(t):
        for j in range(k):
            hh = gate_up[ids[r, j]].astype(np.float64) @ x[r]
            act = hh[:i] / (1 + np.exp(-hh[:i])) * hh[i:]
            want[r] += w[r, j] * (down[ids[r, j]].astype(np.float64) @ act)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


# ---- embedding / linear ----
def test_embedding_scale_and_bad_ids(rng):
    table = _n(rng, 10, 4)
    np.testing.assert_array_equal(ops.embedding(np.array([3, 3]), table, scale=2.0, **R), table[[3, 3]] * 2)
    with pytest.raises(IndexError, match="token id 10 outside"):
        ops.embedding(np.array([10]), table, **R)
    with pytest.raises(IndexError, match="token id -1"):
        ops.embedding(np.array([-1]), table, **R)


def test_linear_formula_and_shape_error(rng):
    x, w, b = _n(rng, 3, 5), _n(rng, 4, 5), _n(rng, 4)
    np.testing.assert_allclose(ops.linear(x, w, b, **R), x.astype(np.float64) @ w.T + b, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="linear: x has 4 features"):
        ops.linear(x[:, :4], w, **R)
