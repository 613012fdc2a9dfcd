"""The attention family, CUDA path (same signatures as impnb/reference/attention.py). GPU only (CuPy).

Dimensions: T query tokens, S view slots (decode: split-K splits), Hq / Hkv heads (G = Hq / Hkv), D / Dv head dims,
C cache slots.
  * attention (the engine's prefill): one batched SGEMM per kv-head group for the scores and one for the output,
    softmax in float32 with the row max (and the sink) subtracted, a row with nothing allowed gives zeros.
  * attention_decode (kernels/attention.cu attention_partials): one block per (head, split of ``chunk`` slots),
    masked from the positions the slots store; writes the split's max, exp-sum and exp-weighted v sum.
  * attention_output (attention_output_gemv): the o-proj GEMV whose input stage combines those partials (+ sinks).
``attention_partials`` / ``attention_output_gemv`` launch on the engine's resident buffers (``st[0]`` = position).
"""
from __future__ import annotations

import numpy as np

from . import _alloc
from ._launch import gpu_only, launch_raw, require_gpu
from ._outputs import guarded


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


# ---- decode: split-K partials and the combining o-proj -----------------------------------------------------------
def attention_partials(q, kc, vc, slot_pos, st, part, *, H, HKV, D, C, chunk, window, scale, softcap) -> int:
    """Partials (m [H, S], l [H, S], acc [H, S, D] in ``part``) of the token at position st[0] over the C slots
    of one layer's cache; returns S. Needs D % 4 == 0 and chunk a power of two (the block has max(256, chunk)
    threads, a power-of-two number per slot)."""
    splits = -(-C // chunk)
    pm, pl, pacc = part
    block = max(256, chunk)
    launch_raw("attention.cu", "attention_partials", (H, splits), (block,),
               (q, kc, vc, slot_pos, st, H, HKV, D, C, chunk, window or 0, float(scale), float(softcap or 0.0), pm,
                pl, pacc), shared_mem=4 * (D + chunk + block))
    return splits


def attention_output_gemv(w, part, sinks, splits: int, D: int, y, *, accumulate: bool = False) -> None:
    """y[N] (+)= W @ (attention output combined from the split partials); ``w`` a DeviceLinear [N, H D]."""
    from ._kernels import THREADS, WARPS, gemv_name
    from ._launch import sm_count
    pm, pl, pacc = part
    blocks = min(-(-w.N // WARPS), 8 * sm_count())
    launch_raw("attention.cu", gemv_name("attention_output_gemv", w.fmt), (blocks,), (THREADS,),
               (w.data, w.scales, w.rmult, w.bias, pm, pl, pacc, sinks, splits, D, y, w.N, w.K, int(accumulate)),
               shared_mem=4 * (w.K + (w.K // D) * splits))


@gpu_only
def attention_decode(q, k_cache, v_cache, slot_pos, position, *, scale, softcap=None, window=None, chunk=64):
    """Split-K partials of one decode token: q [Hq, D], caches [C, Hkv, D], slot_pos [C] ->
    (m [Hq, S], l [Hq, S], acc [Hq, S, D]), S = ceil(C / chunk)."""
    require_gpu("attention_decode")
    import cupy as cp
    from ..errors import Unsupported
    q = cp.ascontiguousarray(cp.asarray(q, dtype=cp.float32))
    kc = cp.ascontiguousarray(cp.asarray(k_cache, dtype=cp.float32))
    vc = cp.ascontiguousarray(cp.asarray(v_cache, dtype=cp.float32))
    c, hkv, d = kc.shape
    hq = q.shape[0]
    if d % 4 or chunk & (chunk - 1) or not 8 <= chunk <= 1024:
        raise Unsupported(f"attention_decode: the kernel needs head_dim % 4 == 0 (got {d}) and a power-of-two "
                          f"chunk in [8, 1024] (got {chunk})")
    splits = -(-c // chunk)
    part = (_alloc.empty((hq, splits), np.float32, label="attention_decode m"),
            _alloc.empty((hq, splits), np.float32, label="attention_decode l"),
            _alloc.empty((hq, splits, d), np.float32, label="attention_decode acc"))
    st = cp.asarray(np.array([int(position), 0, 0, 0], np.int32))
    positions = cp.ascontiguousarray(cp.asarray(slot_pos).astype(cp.int32))
    attention_partials(q, kc, vc, positions, st, part, H=hq, HKV=hkv, D=d, C=c, chunk=chunk, window=window,
                       scale=scale, softcap=softcap)
    return part


@gpu_only
def attention_output(m, l, acc, weight, bias=None, *, sinks=None, residual=None):
    """linear(combine(m, l, acc; sinks), W, b) (+ residual) -> float32 [N]."""
    require_gpu("attention_output")
    import cupy as cp
    from ._device_weights import as_device_linear
    part = tuple(cp.ascontiguousarray(cp.asarray(a, dtype=cp.float32)) for a in (m, l, acc))
    hq, splits, d = part[2].shape
    w = as_device_linear(weight, bias)
    if w.K != hq * d:
        raise ValueError(f"attention_output: weight has {w.K} inputs, the partials give {hq} heads of {d}")
    y = _alloc.empty((w.N,), np.float32, label="attention_output")
    if residual is None:
        y[...] = 0
    else:
        y[...] = cp.asarray(residual, dtype=cp.float32).reshape(-1)
    sink = None if sinks is None else cp.ascontiguousarray(cp.asarray(sinks, dtype=cp.float32))
    attention_output_gemv(w, part, sink, splits, d, y, accumulate=True)
    return y
