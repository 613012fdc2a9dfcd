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
