"""GQA attention, CUDA path (same signature as impnb/reference/attention.py): cuBLAS batched GEMMs in float32.

Dimensions: T query tokens, S view slots, Hq / Hkv heads (G = Hq / Hkv), D / Dv head dims. One batched SGEMM per
kv-head group for the scores and one for the output, softmax in float32 with the row max (and the sink) subtracted,
a row with nothing allowed gives zeros. This is the prefill attention of the engine; decode uses the split-K kernel
in engine.cu (attn_partial, combined in the o-proj GEMV's input stage). GPU only (CuPy).
"""
from __future__ import annotations

from ._outputs import guarded
from ._launch import gpu_only, require_gpu


@gpu_only
def attention(q, k, v, mask, *, scale, softcap=None, sinks=None):
    """q [T, Hq, D], k [S, Hkv, D], v [S, Hkv, Dv], mask bool [T, S], sinks [Hq] or None -> float32 [T, Hq, Dv]."""
    require_gpu("attention")
    import cupy as cp
    q, k, v = (cp.asarray(a, dtype=cp.float32) for a in (q, k, v))
    t, hq, d = q.shape
    s, hkv, dv = v.shape
    mask = cp.asarray(mask, dtype=bool)
    if hq % hkv or k.shape != (s, hkv, d) or mask.shape != (t, s):
        raise ValueError(f"attention shapes: q {q.shape}, k {k.shape}, v {v.shape}, mask {mask.shape}")
    g = hq // hkv
    qg = q.reshape(t, hkv, g, d).transpose(1, 2, 0, 3).reshape(hkv, g * t, d)  # [Hkv, G*T, D]
    scores = cp.matmul(qg, k.transpose(1, 2, 0)) * cp.float32(scale)  # [Hkv, G*T, S]
    if softcap is not None:
        scores = cp.float32(softcap) * cp.tanh(scores / cp.float32(softcap))
    allowed = cp.broadcast_to(mask[None, None], (hkv, g, t, s)).reshape(hkv, g * t, s)
    scores = cp.where(allowed, scores, cp.float32(-cp.inf))
    row_max = scores.max(axis=-1) if s else cp.full((hkv, g * t), -cp.inf, cp.float32)
    if sinks is not None:
        sink = cp.repeat(cp.asarray(sinks, dtype=cp.float32).reshape(hkv, g), t, axis=1)  # [Hkv, G*T]
        row_max = cp.maximum(row_max, sink)
    row_max = cp.where(cp.isfinite(row_max), row_max, cp.float32(0.0))
    p = cp.exp(scores - row_max[..., None])
    denom = p.sum(axis=-1, dtype=cp.float32)
    if sinks is not None:
        denom = denom + cp.exp(sink - row_max)
    denom = cp.where(denom > 0, denom, cp.float32(1.0))
    out = cp.matmul(p, v.transpose(1, 0, 2)) / denom[..., None]  # [Hkv, G*T, Dv]
    out = out.reshape(hkv, g, t, dv).transpose(2, 0, 1, 3).reshape(t, hq, dv)
    return guarded(out.astype(cp.float32, copy=False), "attention")
