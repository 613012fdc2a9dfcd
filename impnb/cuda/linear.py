"""Dense linear layer, CUDA path (same signature as impnb/reference/linear.py): one cuBLAS SGEMM (float32, TF32 off
as CuPy's default), x @ W.T (+ b). Dimensions: T tokens, K in features, N out features. GPU only (CuPy)."""
from __future__ import annotations

from ._outputs import guarded
from ._launch import gpu_only, require_gpu


@gpu_only
def linear(x, weight, bias=None):
    """x [..., K] @ weight[N, K].T (+ bias [N]) -> float32 [..., N]."""
    require_gpu("linear")
    import cupy as cp
    x = cp.asarray(x, dtype=cp.float32)
    w = cp.asarray(weight, dtype=cp.float32)
    if x.shape[-1] != w.shape[1]:
        raise ValueError(f"linear: x has {x.shape[-1]} features, weight expects {w.shape[1]} (shape {w.shape})")
    out = cp.matmul(x, w.T)
    if bias is not None:
        out += cp.asarray(bias, dtype=cp.float32)
    return guarded(out, "linear")
