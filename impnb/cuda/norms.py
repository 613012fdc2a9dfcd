"""RMSNorm, CUDA path (same signature as impnb/reference/norms.py): the engine's ``rmsnorm_rows`` kernel.

Dimensions: ... = leading dims (flattened to rows), D = normalized width. One block per row, float32 sum of
squares (block tree reduction instead of NumPy's pairwise sum: ~1 ulp apart), x * (1 / sqrt(ms + eps)) * (offset + w)
as the reference. GPU only (a CuPy RawKernel; the simulator cannot run it).
"""
from __future__ import annotations

import numpy as np

from ._outputs import guarded
from ._launch import gpu_only, require_gpu


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
