"""W4A4 activation quantize-dequantize, CUDA path (a Numba kernel; it also runs in the CUDA simulator).

Same name, signature and bits as impnb/reference/nvfp4_act.py (see its docstring for the math and sources).
Dimension legend: M = rows, K = features (K % 16 == 0), B = M * K / 16 blocks. One thread per 16-block: its amax,
its FP8 block scale, then 16 codes and values. Float32 arithmetic only, in the reference's order (no fastmath: IEEE
division, no FMA contraction), using the op core's device codecs (impnb/cuda/_codec_kernels.py).
"""
from __future__ import annotations

import numpy as np
from numba import cuda

from . import _alloc
from ._codec_kernels import e2m1_code, e2m1_value, fp8_code, fp8_value
from ._launch import launch_numba, xp

F32 = np.float32
SIX = F32(6.0)
FP8_MAX = F32(448.0)
CT_ZERO_SCALE_CODE = 0x20
GROUP = 16


@cuda.jit
def fake_quantize_kernel(x, igs, out):
    """x float32 [M*K], igs float32 (the divisor), out float32 [M*K]; one thread per 16-block."""
    b = cuda.grid(1)
    if b >= x.size // 16:
        return
    base = b * 16
    amax = F32(0.0)
    for j in range(16):
        a = abs(x[base + j])
        if a > amax:
            amax = a
    block_scale = igs * (amax / SIX)  # amax/6 first, then times igs
    if block_scale > FP8_MAX:
        block_scale = FP8_MAX
    code = fp8_code(np.float64(block_scale), False, True)
    if fp8_value(code) == F32(0.0):
        code = CT_ZERO_SCALE_CODE
    divisor = fp8_value(code) / igs
    for j in range(16):
        q = x[base + j] / divisor
        q = min(max(q, -SIX), SIX)
        out[base + j] = e2m1_value(e2m1_code(np.float64(q))) * divisor


def fake_quantize_nvfp4_activations(x, input_scale, *, layout="compressed-tensors"):
    """float32 X [..., K] -> float32 X^ [..., K] (see impnb.reference.nvfp4_act for the math)."""
    from ..reference.nvfp4_act import activation_divisor_scale
    a = xp().asarray(x)
    if a.dtype != np.float32:
        raise TypeError(f"fake_quantize_nvfp4_activations: X must be float32, got {a.dtype}")
    if a.ndim == 0 or a.shape[-1] % GROUP:
        raise ValueError(f"fake_quantize_nvfp4_activations: last axis of X {a.shape} must be a multiple of {GROUP}")
    if not bool(xp().isfinite(a).all()):
        raise ValueError("fake_quantize_nvfp4_activations: X has a non-finite value")
    igs = activation_divisor_scale(input_scale, layout)
    flat = xp().ascontiguousarray(a).reshape(-1)  # [M*K]
    out = _alloc.empty(a.shape, np.float32, label="fake_quantize_nvfp4_activations")
    launch_numba(fake_quantize_kernel, flat.size // GROUP, flat, F32(igs), out.reshape(-1))
    return out
