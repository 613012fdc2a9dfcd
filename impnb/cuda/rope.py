"""Rotary position embedding, CUDA path (same signature as impnb/reference/rope.py).

Dimensions: T tokens, H heads, D head dim, R = 2F rotary dims. The angle table float32(pos) * inv_freq and its cos /
sin (times attention_scaling) are computed on the host exactly as the reference does (T x F values), then the
rotation runs as CuPy elementwise kernels in the reference's operation order (a * cos - b * sin, unfused), so the
result is bit-identical. The engine fuses the same rotation with QK-norm and the KV append (engine.cu
qkv_rope_append, whose tables are built the same way). GPU only (CuPy).
"""
from __future__ import annotations

import numpy as np

from ._outputs import guarded
from ._launch import gpu_only, require_gpu


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
