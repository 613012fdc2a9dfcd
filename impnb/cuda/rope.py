"""Rotary position embedding, CUDA path (same signature as impnb/reference/rope.py).

Dimensions: T tokens, H heads, D head dim, R = 2F rotary dims. The angle table float32(pos) * inv_freq and its cos /
sin (times attention_scaling) are computed on the host exactly as the reference does (T x F values), then the
rotation runs as CuPy elementwise kernels in the reference's operation order (a * cos - b * sin, unfused), so the
result is bit-identical. The engine's fused forms (kernels/rope.cu) are ops of their own: qkv_rope_append
(QK-norm + RoPE + KV append, kernel ``qkv_rope_append``) and rms_norm_qkv_rope_append (the q|k|v GEMV with RoPE
and the append in its epilogue, ``rms_norm_qkv_rope_gemv``); their cos / sin tables [positions, F] are built on the
host as here (``rope_tables``). ``append_rows`` / ``norm_qkv_rope_gemv`` launch on resident buffers (st[0] = the
first position). GPU only (CuPy).
"""
from __future__ import annotations

import numpy as np

from . import _alloc
from ._launch import gpu_only, require_gpu
from ._outputs import guarded


@gpu_only
def rope(x, positions, inv_freq, *, style="neox", attention_scaling=1.0):
    """Rotate x [T, H, D] at integer positions [T] with inv_freq [F] (rotary_dim R = 2F <= D): float32 [T, H, D]."""
    require_gpu("rope")
    import cupy as cp
    from ._runtime import to_host
    x = cp.asarray(x, dtype=cp.float32)
    inv = np.asarray(to_host(inv_freq), dtype=np.float32)
    rot = 2 * inv.shape[0]
    if rot > x.shape[-1]:
        raise ValueError(f"rope: {inv.shape[0]} frequencies need rotary_dim {rot} > head_dim {x.shape[-1]}")
    angle = np.asarray(to_host(positions)).astype(np.float32)[:, None] * inv[None, :]  # [T, F]
    cos = cp.asarray((np.cos(angle) * np.float32(attention_scaling)).astype(np.float32))[:, None, :]
    sin = cp.asarray((np.sin(angle) * np.float32(attention_scaling)).astype(np.float32))[:, None, :]
    out = x.copy()
    if style == "neox":
        half = rot // 2
        a, b = x[..., :half], x[..., half:rot]
    elif style == "interleaved":
        a, b = x[..., 0:rot:2], x[..., 1:rot:2]
    else:
        raise ValueError(f"rope style {style!r}; expected 'neox' or 'interleaved'")
    first = a * cos - b * sin
    second = b * cos + a * sin
    if style == "neox":
        out[..., :half], out[..., half:rot] = first, second
    else:
        out[..., 0:rot:2], out[..., 1:rot:2] = first, second
    return guarded(out, "rope")


# ---- the engine's fused forms (kernels/rope.cu) -------------------------------------------------------------------
def rope_tables(inv_freq, attention_scaling, n_positions: int):
    """(cos, sin) float32 [n_positions, F] on the host, exactly as ``rope`` computes them per position."""
    inv = np.asarray(to_host_array(inv_freq), dtype=np.float32)
    angle = np.arange(n_positions).astype(np.float32)[:, None] * inv[None, :]  # [P, F]
    scaling = np.float32(attention_scaling)
    return (np.cos(angle) * scaling).astype(np.float32), (np.sin(angle) * scaling).astype(np.float32)


def to_host_array(a):
    from ._runtime import to_host
    return to_host(a)


def norm_flags(q_norm, k_norm) -> int:
    """The kernel's QK-norm switch: bit 0 normalises the query heads (q_norm given), bit 1 the key heads."""
    return (q_norm is not None) | (k_norm is not None) << 1


def append_rows(qkv, row_stride, q, kc, vc, slot_pos, st, *, rows, q_norm, k_norm, v_norm, k_eq_v, eps, offset, cos,
                sin, F, interleaved, H, HKV, D, C) -> None:
    """QK-norm + RoPE + KV append of ``rows`` tokens at positions st[0] + m: q -> q [rows, H, D]; k, v -> caches
    [C, HKV, D] at slot position % C; slot_pos[slot] = position."""
    from ._launch import launch_raw
    launch_raw("rope.cu", "qkv_rope_append", (H + HKV, rows), (max(32, min(1024, -(-D // 32) * 32)),),
               (qkv, row_stride, q, kc, vc, slot_pos, st, q_norm, k_norm, norm_flags(q_norm, k_norm), bool(v_norm),
                bool(k_eq_v), float(eps), float(offset), cos, sin, F, bool(interleaved), H, HKV, D, C),
               shared_mem=4 * D)


def norm_qkv_rope_gemv(w, x, norm, *, eps, offset, q, kc, vc, slot_pos, st, cos, sin, F, interleaved, H, HKV, D,
                       C) -> None:
    """q|k|v = W @ rms_norm(x) with RoPE and the KV append of the token at st[0] in the epilogue (one kernel)."""
    from ._kernels import THREADS, WARPS, gemv_name
    from ._launch import launch_raw, sm_count
    tasks = (H + HKV) * F + HKV * D // 2
    blocks = min(-(-tasks // WARPS), 8 * sm_count())
    launch_raw("rope.cu", gemv_name("rms_norm_qkv_rope_gemv", w.fmt), (blocks,), (THREADS,),
               (w.data, w.scales, w.rmult, w.bias, x, norm, float(eps), float(offset), q, kc, vc, slot_pos, st, cos,
                sin, F, bool(interleaved), H, HKV, D, C, w.K), shared_mem=4 * w.K)


def _cache_operands(k_cache, v_cache, slot_pos, positions, inv_freq, attention_scaling):
    """Device copies of the cache (outputs), the start position state and the rope tables for ``positions``."""
    import cupy as cp
    pos = np.asarray(to_host_array(positions), dtype=np.int64).reshape(-1)
    if pos.size and np.any(np.diff(pos) != 1):
        raise ValueError("qkv_rope_append: the CUDA kernels take consecutive positions")
    kc = _alloc.empty(np.shape(k_cache), np.float32, label="k_cache")
    vc = _alloc.empty(np.shape(v_cache), np.float32, label="v_cache")
    kc[...], vc[...] = cp.asarray(k_cache, dtype=cp.float32), cp.asarray(v_cache, dtype=cp.float32)
    slots32 = cp.ascontiguousarray(cp.asarray(slot_pos).astype(cp.int32))
    slots = _alloc.empty(np.shape(slot_pos), cp.asarray(slot_pos).dtype, label="slot_pos")
    cos, sin = rope_tables(inv_freq, attention_scaling, int(pos[-1]) + 1 if pos.size else 1)
    st = cp.asarray(np.array([pos[0] if pos.size else 0, 0, 0, 0], np.int32))
    return kc, vc, slots, slots32, cp.asarray(cos), cp.asarray(sin), st, pos


@gpu_only
def qkv_rope_append(qkv, k_cache, v_cache, slot_pos, positions, inv_freq, *, n_heads, q_norm=None, k_norm=None,
                    v_norm=False, k_eq_v=False, eps=1e-6, offset=0.0, style="neox", attention_scaling=1.0):
    """Split q|k|v, QK-norm, RoPE, append k, v at slot position % C -> (q, k_cache, v_cache, slot_pos)."""
    require_gpu("qkv_rope_append")
    import cupy as cp
    from ..errors import Unsupported
    c, hkv, d = np.shape(k_cache)
    f = np.shape(inv_freq)[0]
    for norm in (q_norm, k_norm):
        if norm is not None and np.shape(norm)[0] != d:
            raise Unsupported("qkv_rope_append: the kernel normalises whole heads (QK-norm over chunks smaller "
                              "than head_dim runs on the reference)")
    rows = cp.ascontiguousarray(cp.asarray(qkv, dtype=cp.float32))
    kc, vc, slots, slots32, cos, sin, st, pos = _cache_operands(k_cache, v_cache, slot_pos, positions, inv_freq,
                                                                attention_scaling)
    q = _alloc.empty((rows.shape[0], n_heads, d), np.float32, label="qkv_rope_append q")
    vec = lambda a: None if a is None else cp.ascontiguousarray(cp.asarray(a, dtype=cp.float32))  # noqa: E731
    if rows.shape[0]:
        append_rows(rows, rows.shape[1], q, kc, vc, slots32, st, rows=rows.shape[0], q_norm=vec(q_norm),
                    k_norm=vec(k_norm), v_norm=v_norm, k_eq_v=k_eq_v, eps=eps, offset=offset, cos=cos, sin=sin,
                    F=f, interleaved=style == "interleaved", H=n_heads, HKV=hkv, D=d, C=c)
    slots[...] = slots32.astype(slots.dtype)
    return q, kc, vc, slots


@gpu_only
def rms_norm_qkv_rope_append(x, norm_weight, weight, k_cache, v_cache, slot_pos, positions, inv_freq, *, n_heads,
                             bias=None, eps, offset=0.0, style="neox", attention_scaling=1.0):
    """qkv_rope_append(rms_norm_linear(x, norm_weight, W, bias)) on the fused kernel, one launch per token."""
    require_gpu("rms_norm_qkv_rope_append")
    import cupy as cp
    from ..errors import Unsupported
    from ._device_weights import as_device_linear
    c, hkv, d = np.shape(k_cache)
    f = np.shape(inv_freq)[0]
    if 2 * f != d:
        raise Unsupported("rms_norm_qkv_rope_append: the fused kernel rotates the whole head (partial rotary "
                          "runs as rms_norm_linear + qkv_rope_append)")
    w = as_device_linear(weight, bias)
    x = cp.ascontiguousarray(cp.asarray(x, dtype=cp.float32)).reshape(-1, w.K)
    norm = cp.ascontiguousarray(cp.asarray(norm_weight, dtype=cp.float32))
    kc, vc, slots, slots32, cos, sin, st, pos = _cache_operands(k_cache, v_cache, slot_pos, positions, inv_freq,
                                                                attention_scaling)
    q = _alloc.empty((x.shape[0], n_heads, d), np.float32, label="rms_norm_qkv_rope_append q")
    for t in range(x.shape[0]):
        st[0] = int(pos[t])
        norm_qkv_rope_gemv(w, x[t], norm, eps=eps, offset=offset, q=q[t], kc=kc, vc=vc, slot_pos=slots32, st=st,
                           cos=cos, sin=sin, F=f, interleaved=style == "interleaved", H=n_heads, HKV=hkv, D=d, C=c)
    slots[...] = slots32.astype(slots.dtype)
    return q, kc, vc, slots
