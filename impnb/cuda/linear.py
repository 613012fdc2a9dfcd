"""The linear family, CUDA path (same signatures as impnb/reference/linear.py). GPU only (CuPy).

Dimensions: T tokens, K in features, N out features.
  * linear: one cuBLAS SGEMM (float32, TF32 off as CuPy's default), x @ W.T (+ b).
  * rms_norm_linear / gated_linear: the engine's GEMVs (kernels/linear.cu rms_norm_gemv, gated_gemv: one warp per
    1 or 4 rows, the input stage (RMSNorm, or act(gate) * up) computed into shared memory first, weights NVFP4 or
    dense f32 / f16 / bf16 decoded in registers). The engine launches them on its resident buffers through
    ``rms_norm_gemv`` / ``gated_gemv``; the op functions convert their operands and launch the same kernels.
"""
from __future__ import annotations

import numpy as np

from . import _alloc
from ..errors import Unsupported
from ._device_weights import as_device_linear
from ._kernels import ACTS, THREADS, WARPS, gemv_name
from ._launch import gpu_only, launch_raw, require_gpu, sm_count
from ._outputs import guarded


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


# ---- the engine's GEMVs (kernels/linear.cu, nvfp4.cu): launchers on device buffers -----------------------------
def gemv_rows_per_warp(n_rows: int) -> int:
    """4 rows per warp once the rows fill 8 warps per SM, else 1 (measured on H100: bench/NOTES.md)."""
    return 4 if n_rows >= 8 * WARPS * sm_count() else 1


def launch_gemv(filename: str, name: str, w, x, y, *, aux=None, eps: float = 0.0, offset: float = 0.0,
                accumulate: bool = False, softcap: float = 0.0, rows: int = 1, max_blocks: int | None = None) -> None:
    """y[N] (+)= epi(W @ input(x)) with kernel ``name`` (a GEMV of impnb.cuh's signature); ``w`` a DeviceLinear
    (impnb/cuda/_device_weights.py). Launches on CuPy's current stream; allocates nothing (graph-capturable)."""
    blocks = min(-(-w.N // (rows * WARPS)), max_blocks or 8 * sm_count())
    launch_raw(filename, name, (blocks,), (THREADS,), (w.data, w.scales, w.rmult, w.bias, x, aux, eps, offset, y,
                                                      w.N, w.K, int(accumulate), softcap), shared_mem=4 * w.K)


def rms_norm_gemv(w, x, y, *, norm, eps: float, offset: float = 0.0, softcap: float = 0.0,
                  accumulate: bool = False) -> None:
    """y[N] (+)= epi(W @ rms_norm(x [K], norm)): op rms_norm_linear on resident buffers."""
    rows = gemv_rows_per_warp(w.N)
    launch_gemv("linear.cu", gemv_name("rms_norm_gemv", w.fmt, rows), w, x, y, aux=norm, eps=eps, offset=offset,
                accumulate=accumulate, softcap=softcap, rows=rows)


def gated_gemv(w, gate_up, y, *, activation: str, accumulate: bool = False) -> None:
    """y[N] (+)= W @ (act(gate) * up), gate_up [2K]: op gated_linear on resident buffers."""
    rows = gemv_rows_per_warp(w.N)
    launch_gemv("linear.cu", gemv_name("gated_gemv", w.fmt, ACTS[activation], rows), w, gate_up, y,
                accumulate=accumulate, rows=rows)


# ---- fused ops (reference signatures) ----------------------------------------------------------------------------
@gpu_only
def rms_norm_linear(x, norm_weight, weight, bias=None, *, eps, offset=0.0, softcap=None):
    """linear(rms_norm(x, norm_weight), W, b) [softcap]: x [..., K] -> float32 [..., N] (one GEMV per row)."""
    require_gpu("rms_norm_linear")
    w = as_device_linear(weight, bias)
    rows, norm = _rows(x, w.K, "rms_norm_linear"), _vector(norm_weight, w.K)
    y = _alloc.empty((rows.shape[0], w.N), np.float32, label="rms_norm_linear")
    for t in range(rows.shape[0]):
        rms_norm_gemv(w, rows[t], y[t], norm=norm, eps=eps, offset=offset, softcap=softcap or 0.0)
    return y.reshape(np.shape(x)[:-1] + (w.N,))


@gpu_only
def gated_linear(gate_up, weight, bias=None, *, activation="silu", residual=None):
    """linear(act(gate) * up, W, b) (+ residual): gate_up [..., 2I] -> float32 [..., N] (one GEMV per row)."""
    require_gpu("gated_linear")
    import cupy as cp
    if activation not in ACTS:
        raise Unsupported(f"gated_linear: the CUDA kernel runs silu and gelu_tanh, not {activation!r}")
    w = as_device_linear(weight, bias)
    rows = _rows(gate_up, 2 * w.K, "gated_linear")
    y = _alloc.empty((rows.shape[0], w.N), np.float32, label="gated_linear")
    if residual is None:
        y[...] = 0
    else:
        y[...] = cp.asarray(residual, dtype=cp.float32).reshape(y.shape)
    for t in range(rows.shape[0]):
        gated_gemv(w, rows[t], y[t], activation=activation, accumulate=True)
    return y.reshape(np.shape(gate_up)[:-1] + (w.N,))


def _rows(x, width: int, op: str):
    import cupy as cp
    a = cp.ascontiguousarray(cp.asarray(x, dtype=cp.float32))
    if a.shape[-1] != width:
        raise ValueError(f"{op}: input has {a.shape[-1]} features, the weight expects {width}")
    return a.reshape(-1, width)


def _vector(v, n: int):
    import cupy as cp
    out = cp.ascontiguousarray(cp.asarray(v, dtype=cp.float32)).reshape(-1)
    if out.shape[0] != n:
        raise ValueError(f"norm weight has {out.shape[0]} entries, expected {n}")
    return out
