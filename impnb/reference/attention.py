"""Scaled dot-product attention with GQA, masks, logit softcap and sinks: the reference for impnb/cuda/attention.py.

Dimensions: T = query tokens, S = KV slots in the cache view, Hq = query heads, Hkv = KV heads, G = Hq / Hkv
(query head h reads KV head h // G), D = q/k head dim, Dv = v head dim.

    s[h, t, j] = scale * <q[t, h], k[j, h // G]>
    s          = softcap * tanh(s / softcap)              if softcap (Gemma-2 style; before the mask, as in HF)
    s[h, t, j] = -inf                                     where not mask[t, j]
    p[h, t, :] = softmax_j(s[h, t, :] ++ [sink[h]])[:S]   the sink logit (gpt-oss) joins only the denominator
    out[t, h]  = sum_j p[h, t, j] v[j, h // G]
Softmax in float32 with the row max subtracted (max over the row and the sink). A row with no allowed key and no
sink gives zeros (never NaN). Vectorised over heads: one batched matmul per KV head group, no Python loop.
"""
from __future__ import annotations

import numpy as np


def attention(q, k, v, mask, *, scale, softcap=None, sinks=None):
    """q [T, Hq, D], k [S, Hkv, D], v [S, Hkv, Dv], mask bool [T, S], sinks [Hq] or None -> float32 [T, Hq, Dv]."""
    q, k, v = (np.asarray(a, dtype=np.float32) for a in (q, k, v))
    t, hq, d = q.shape
    s, hkv, dv = v.shape
    if hq % hkv or k.shape != (s, hkv, d) or np.shape(mask) != (t, s):
        raise ValueError(f"attention shapes: q {q.shape}, k {k.shape}, v {v.shape}, mask {np.shape(mask)}")
    g = hq // hkv
    qg = q.reshape(t, hkv, g, d).transpose(1, 2, 0, 3).reshape(hkv, g * t, d)  # [Hkv, G*T, D]
    scores = qg @ k.transpose(1, 2, 0)  # [Hkv, G*T, S]
    scores *= np.float32(scale)
    if softcap is not None:
        scores = np.float32(softcap) * np.tanh(scores / np.float32(softcap))
    allowed = np.broadcast_to(np.asarray(mask, dtype=bool)[None, None], (hkv, g, t, s)).reshape(hkv, g * t, s)
    scores = np.where(allowed, scores, np.float32(-np.inf))
    row_max = scores.max(axis=-1)  # [Hkv, G*T]
    if sinks is not None:
        sink = np.repeat(np.asarray(sinks, dtype=np.float32).reshape(hkv, g), t, axis=1)  # [Hkv, G*T]
        row_max = np.maximum(row_max, sink)
    row_max = np.where(np.isfinite(row_max), row_max, np.float32(0.0))
    p = np.exp(scores - row_max[..., None])  # [Hkv, G*T, S]
    denom = p.sum(axis=-1, dtype=np.float32)
    if sinks is not None:
        denom = denom + np.exp(sink - row_max)
    denom = np.where(denom > 0, denom, np.float32(1.0))
    out = (p @ v.transpose(1, 0, 2)) / denom[..., None]  # [Hkv, G*T, Dv]
    return out.reshape(hkv, g, t, dv).transpose(2, 0, 1, 3).reshape(t, hq, dv).astype(np.float32, copy=False)


def attention_decode(q, k_cache, v_cache, slot_pos, position, *, scale, softcap=None, window=None, chunk=64):
    """Split-K attention partials of one decode token over a layer's cache slots (combined by attention_output).

    q [Hq, D]; k_cache, v_cache [C, Hkv, D]; slot_pos int [C]; position: the token's absolute position. The slots
    [0, min(position + 1, C)) are read (a cache fills its slots in order until a ring wraps) in S = ceil(C / chunk)
    splits of ``chunk`` slots. A slot is allowed as impnb.reference.masks.attention_mask decides from the position
    it stores (>= 0, <= position, within ``window``). For split j and head h, with scores s over its allowed slots
    (scale * <q, k>, softcapped as in ``attention``):
        m[h, j] = max s (-inf when none is allowed);  l[h, j] = sum exp(s - m);  acc[h, j] = sum exp(s - m) v
    Returns (m float32 [Hq, S], l float32 [Hq, S], acc float32 [Hq, S, D])."""
    from .masks import attention_mask
    q = np.asarray(q, dtype=np.float32)
    k, v = np.asarray(k_cache, dtype=np.float32), np.asarray(v_cache, dtype=np.float32)
    c, hkv, d = k.shape
    hq, splits = q.shape[0], -(-c // chunk)
    used = min(int(position) + 1, c)
    allowed = attention_mask(np.asarray([position]), np.asarray(slot_pos)[:used], window=window)[0]  # [used]
    scores = np.einsum("hd,shd->hs", q, np.repeat(k[:used], hq // hkv, axis=1)) * np.float32(scale)  # [Hq, used]
    if softcap is not None:
        scores = np.float32(softcap) * np.tanh(scores / np.float32(softcap))
    scores = np.where(allowed[None, :], scores, np.float32(-np.inf)).astype(np.float32)
    m = np.full((hq, splits), -np.inf, np.float32)
    l, acc = np.zeros((hq, splits), np.float32), np.zeros((hq, splits, d), np.float32)
    vh = np.repeat(v[:used], hq // hkv, axis=1)  # [used, Hq, D]
    for j in range(min(splits, -(-used // chunk))):
        s = scores[:, j * chunk:(j + 1) * chunk]
        m[:, j] = s.max(axis=1)
        e = np.where(np.isfinite(s), np.exp(s - np.where(np.isfinite(m[:, j]), m[:, j], 0)[:, None]), 0)
        l[:, j] = e.sum(axis=1, dtype=np.float32)
        acc[:, j] = np.einsum("hs,shd->hd", e.astype(np.float32), vh[j * chunk:(j + 1) * chunk])
    return m, l, acc


def attention_combine(m, l, acc, sinks=None):
    """The attention output of one token from its split-K partials: per head h, with M = max(sink, max_j m) and
    w_j = exp(m_j - M) (0 where m_j = -inf), L = sum_j w_j l_j + exp(sink - M):
        out[h] = sum_j w_j acc[h, j] / L      (0 when L = 0). float32 [Hq, D]. (A helper of attention_output.)"""
    m, l, acc = (np.asarray(a, dtype=np.float32) for a in (m, l, acc))
    sink = None if sinks is None else np.asarray(sinks, dtype=np.float32)
    top = m.max(axis=1) if sink is None else np.maximum(m.max(axis=1), sink)  # [Hq]
    safe = np.where(np.isfinite(top), top, np.float32(0.0))
    w = np.where(np.isfinite(m), np.exp(m - safe[:, None]), np.float32(0.0)).astype(np.float32)  # [Hq, S]
    total = (w * l).sum(axis=1, dtype=np.float32)
    if sink is not None:
        total = total + np.exp(sink - safe)
    inv = np.where(total > 0, np.float32(1.0) / np.where(total > 0, total, 1), np.float32(0.0)).astype(np.float32)
    return np.einsum("hs,hsd->hd", w * inv[:, None], acc).astype(np.float32)


def attention_output(m, l, acc, weight, bias=None, *, sinks=None, residual=None):
    """The o-projection of a decode token's attention, combining the split-K partials of attention_decode first:

        y = linear(attention_combine(m, l, acc; sinks).reshape(Hq D), W, b)  (+ residual)

    m, l [Hq, S], acc [Hq, S, D]; W [N, Hq D] float32 or NVFP4Tensor; residual [N] or None. float32 [N]."""
    from .linear import dense_weight, linear
    out = attention_combine(m, l, acc, sinks).reshape(-1)
    y = linear(out, dense_weight(weight), bias)
    return y if residual is None else np.asarray(residual, dtype=np.float32) + y
