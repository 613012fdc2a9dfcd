"""The norms family, CUDA path (same signatures as impnb/reference/norms.py): kernels/norms.cu. GPU only (CuPy).

Dimensions: ... = leading dims (flattened to rows), D = normalized width. One block per row, float32 sum of squares
(block tree reduction instead of NumPy's pairwise sum: ~1 ulp apart), x * (1 / sqrt(ms + eps)) * (offset + w) as
the reference. ``rms_norm_rows`` / ``rms_norm_add_rows`` launch on device buffers (the engine's prefill and
decode); the op functions convert their operands and launch the same kernels.
"""
from __future__ import annotations

import numpy as np

from . import _alloc
from ._launch import gpu_only, launch_raw, require_gpu


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
