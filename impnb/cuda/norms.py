"""The norms family, CUDA path (same signatures as impnb/reference/norms.py).

Dimensions: ... = leading dims (flattened to rows), D = normalized width.
rms_norm / rms_norm_add: kernels/norms.cu (GPU only, CuPy), one block per row, float32 sum of squares (block tree
reduction instead of NumPy's pairwise sum: ~1 ulp apart), x * (1 / sqrt(ms + eps)) * (offset + w) as the reference.
``rms_norm_rows`` / ``rms_norm_add_rows`` launch on device buffers (the engine's prefill and decode); the op
functions convert their operands and launch the same kernels.
gated_rms_norm, l2_norm: Numba kernels, one thread per row (D <= a few hundred in the models: the linear-attention
head dims), sequential float32 sums, then the reference's roundings; they also run in the CUDA simulator.
"""
from __future__ import annotations

import math

import numpy as np
from numba import cuda

from . import _alloc
from ._common import kernel_float32
from ._launch import gpu_only, launch_numba, launch_raw, require_gpu

F32 = np.float32
ONE = F32(1.0)


def rms_norm_rows(x, weight, out, rows: int, d: int, eps: float, offset: float = 0.0) -> None:
    """out[m, :] = rms_norm(x[m, :]) * (offset + weight) for m < rows (weight None: no scale)."""
    if rows and d:
        launch_raw("norms.cu", "rms_norm_rows", (rows,), (256,), (x, weight, out, d, float(eps), float(offset)))


def rms_norm_add_rows(t, weight, x, rows: int, d: int, eps: float, offset: float = 0.0, *, block: int = 256) -> None:
    """x[m, :] += rms_norm(t[m, :]) * (offset + weight) for m < rows (Gemma's sandwich post-norms)."""
    if rows and d:
        launch_raw("norms.cu", "rms_norm_add_rows", (rows,), (block,), (t, weight, x, d, float(eps), float(offset)))


@gpu_only
def rms_norm(x, weight, *, eps, offset=0.0):
    """RMSNorm over the last axis: x / sqrt(mean(x^2) + eps) * (offset + weight); weight None -> no scale.

    x: float32 [..., D]; weight: float32 [D] or None. Returns float32 [..., D] on the device.
    """
    require_gpu("rms_norm")
    x, w = _operands(x, weight, "rms_norm")
    out = _alloc.empty(x.shape, np.float32, label="rms_norm")
    rms_norm_rows(x, w, out, _n_rows(x), x.shape[-1], eps, offset)
    return out


@gpu_only
def rms_norm_add(x, t, weight, *, eps, offset=0.0):
    """x + rms_norm(t, weight): x, t float32 [..., D]; weight [D]. Returns float32 [..., D] on the device."""
    require_gpu("rms_norm_add")
    import cupy as cp
    t, w = _operands(t, weight, "rms_norm_add")
    if w is None:
        raise ValueError("rms_norm_add: the post-norm needs a weight")
    out = _alloc.empty(t.shape, np.float32, label="rms_norm_add")
    out[...] = cp.asarray(x, dtype=cp.float32).reshape(t.shape)
    rms_norm_add_rows(t, w, out, _n_rows(t), t.shape[-1], eps, offset)
    return out


def _operands(x, weight, op: str):
    import cupy as cp
    x = cp.ascontiguousarray(cp.asarray(x, dtype=cp.float32))
    w = None if weight is None else cp.ascontiguousarray(cp.asarray(weight, dtype=cp.float32))
    if w is not None and w.shape != (x.shape[-1],):
        raise ValueError(f"{op}: weight shape {w.shape} does not match width {x.shape[-1]}")
    return x, w


def _n_rows(x) -> int:
    return int(np.prod(x.shape[:-1], dtype=np.int64))


@cuda.jit(device=True)
def _sum_squares(x, base, d):
    """sum_i x[base + i]^2 over one row, left to right in float32."""
    ss = F32(0.0)
    for i in range(d):
        ss += x[base + i] * x[base + i]
    return ss


@cuda.jit
def _gated_rms_kernel(x, gate, w, out, rows, d, eps):
    r = cuda.grid(1)
    if r >= rows:
        return
    base = r * d
    inv = ONE / math.sqrt(_sum_squares(x, base, d) / F32(d) + eps)
    for i in range(d):
        z = gate[base + i]
        out[base + i] = ((x[base + i] * inv) * w[i]) * (z / (ONE + math.exp(-z)))


@cuda.jit
def _l2_kernel(x, out, rows, d, eps):
    r = cuda.grid(1)
    if r >= rows:
        return
    base = r * d
    inv = ONE / math.sqrt(_sum_squares(x, base, d) + eps)
    for i in range(d):
        out[base + i] = x[base + i] * inv


def _rows(x, op):
    x = kernel_float32(x)
    if x.ndim == 0:
        raise ValueError(f"{op}: x must have a last axis to normalise")
    return x, int(np.prod(x.shape[:-1], dtype=np.int64)), x.shape[-1]


def gated_rms_norm(x, gate, weight, *, eps):
    """Gated RMSNorm: x / sqrt(mean(x^2) + eps) * weight * silu(gate) over the last axis, float32 [..., D]."""
    x, rows, d = _rows(x, "gated_rms_norm")
    gate, w = kernel_float32(gate), kernel_float32(weight)
    if gate.shape != x.shape:
        raise ValueError(f"gated_rms_norm: gate shape {gate.shape} differs from x shape {x.shape}")
    if w.shape != (d,):
        raise ValueError(f"gated_rms_norm: weight shape {w.shape} does not match width {d}")
    out = _alloc.empty(x.shape, np.float32, label="gated_rms_norm")
    launch_numba(_gated_rms_kernel, rows, x.reshape(-1), gate.reshape(-1), w, out.reshape(-1), rows, d, F32(eps))
    return out


def l2_norm(x, *, eps=1e-6):
    """L2 normalisation over the last axis: x * (1 / sqrt(sum(x^2) + eps)), float32 [..., D]."""
    x, rows, d = _rows(x, "l2_norm")
    out = _alloc.empty(x.shape, np.float32, label="l2_norm")
    launch_numba(_l2_kernel, rows, x.reshape(-1), out.reshape(-1), rows, d, F32(eps))
    return out
