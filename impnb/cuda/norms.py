"""RMSNorm, gated RMSNorm and L2 norm, CUDA path (same signatures as impnb/reference/norms.py).

Dimensions: ... = leading dims (flattened to rows), D = normalized width.
rms_norm: the engine's ``rmsnorm_rows`` kernel, one block per row, float32 sum of squares (block tree reduction
instead of NumPy's pairwise sum: ~1 ulp apart), x * (1 / sqrt(ms + eps)) * (offset + w) as the reference. GPU only
(a CuPy RawKernel; the simulator cannot run it).
gated_rms_norm, l2_norm: Numba kernels, one thread per row (D <= a few hundred in the models: the linear-attention
head dims), sequential float32 sums, then the reference's roundings; they also run in the CUDA simulator.
"""
from __future__ import annotations

import math

import numpy as np
from numba import cuda

from . import _alloc
from ._outputs import guarded
from ._common import kernel_float32
from ._launch import gpu_only, launch_numba, require_gpu

F32 = np.float32
ONE = F32(1.0)


@gpu_only
def rms_norm(x, weight, *, eps, offset=0.0):
    """RMSNorm over the last axis: x / sqrt(mean(x^2) + eps) * (offset + weight); weight None -> no scale.

    x: float32 [..., D]; weight: float32 [D] or None. Returns float32 [..., D] on the device.
    """
    require_gpu("rms_norm")
    import cupy as cp
    from . import _engine_kernels as K
    x = cp.ascontiguousarray(cp.asarray(x, dtype=cp.float32))
    d = x.shape[-1]
    w = None if weight is None else cp.ascontiguousarray(cp.asarray(weight, dtype=cp.float32))
    if w is not None and w.shape != (d,):
        raise ValueError(f"rms_norm: weight shape {w.shape} does not match width {d}")
    rows = int(np.prod(x.shape[:-1], dtype=np.int64))
    out = cp.empty_like(x)
    if rows and d:
        K.launch("rmsnorm_rows", rows, 256, (x, w, out, d, float(eps), float(offset)))
    return guarded(out, "rms_norm")


@cuda.jit
def _gated_rms_kernel(x, gate, w, out, rows, d, eps):
    r = cuda.grid(1)
    if r >= rows:
        return
    base = r * d
    ss = F32(0.0)
    for i in range(d):
        ss += x[base + i] * x[base + i]
    inv = ONE / math.sqrt(ss / F32(d) + eps)
    for i in range(d):
        z = gate[base + i]
        out[base + i] = ((x[base + i] * inv) * w[i]) * (z / (ONE + math.exp(-z)))


@cuda.jit
def _l2_kernel(x, out, rows, d, eps):
    r = cuda.grid(1)
    if r >= rows:
        return
    base = r * d
    ss = F32(0.0)
    for i in range(d):
        ss += x[base + i] * x[base + i]
    inv = ONE / math.sqrt(ss + eps)
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
