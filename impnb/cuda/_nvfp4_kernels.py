"""Numba kernels of NVFP4 quantize / dequantize (they also run in the CUDA simulator).

Dimension legend: N = rows, K = columns (K % 16 == 0), G = K / 16 blocks per row, n = N * K elements.
Float32 arithmetic only (every constant is a float32; no fastmath, so no FMA contraction and IEEE division), in
the reference's operation order (impnb/reference/nvfp4.py), so the bytes are identical.
"""
from __future__ import annotations

import math

import numpy as np
from numba import cuda

from ._codec_kernels import e2m1_code, e2m1_value, fp8_code, fp8_value
from ._intrinsics import warp_max

F32 = np.float32
SIX = F32(6.0)
FP8_MAX = F32(448.0)
MO_MIN_SCALE = F32(2.0 ** -9)
CT_ZERO_SCALE_CODE = 0x20
MO_NAN_SCALE_CODE = 0xFF  # 0/0 (all-zero ModelOpt block with ws2 = 0) is the x86 default NaN, sign bit set


@cuda.jit
def abs_max_kernel(w, out):  # w float32 [n] -> out float32 [1] (must start at 0): max |w|
    i = cuda.grid(1)
    stride = cuda.gridsize(1)
    local = F32(0.0)
    while i < w.size:
        a = abs(w[i])
        if a > local:
            local = a
        i += stride
    local = warp_max(local)
    if cuda.laneid == 0:
        cuda.atomic.max(out, 0, local)


@cuda.jit(device=True)
def _block_amax(w, base):
    amax = F32(0.0)
    for j in range(16):
        a = abs(w[base + j])
        if a > amax:
            amax = a
    return amax


@cuda.jit
def quantize_ct_kernel(w, gs, packed, scales):
    """compressed-tensors: one thread per 16-block. w float32 [N*K], packed uint8 [N*K/2], scales uint8 [N*G]."""
    b = cuda.grid(1)
    if b >= scales.size:
        return
    base = b * 16
    block_scale = gs * (_block_amax(w, base) / SIX)  # amax/6 first, then times gs
    if block_scale > FP8_MAX:
        block_scale = FP8_MAX
    code = fp8_code(np.float64(block_scale), False, True)
    if fp8_value(code) == F32(0.0):
        code = CT_ZERO_SCALE_CODE
    scales[b] = code
    divisor = fp8_value(code) / gs
    for j in range(8):
        lo = w[base + 2 * j] / divisor
        hi = w[base + 2 * j + 1] / divisor
        lo = min(max(lo, -SIX), SIX)
        hi = min(max(hi, -SIX), SIX)
        packed[b * 8 + j] = e2m1_code(np.float64(lo)) | (e2m1_code(np.float64(hi)) << 4)


@cuda.jit
def quantize_modelopt_kernel(w, ws2, packed, scales):
    """ModelOpt: one thread per 16-block (same arrays as quantize_ct_kernel)."""
    b = cuda.grid(1)
    if b >= scales.size:
        return
    base = b * 16
    block_scale = _block_amax(w, base) / (SIX * ws2)  # 0/0 = NaN when ws2 == 0, as ModelOpt
    if block_scale == F32(0.0):
        block_scale = F32(1.0)
    if math.isnan(block_scale):
        code = MO_NAN_SCALE_CODE
    else:
        block_scale = min(max(block_scale, MO_MIN_SCALE), FP8_MAX)
        code = fp8_code(np.float64(block_scale), False, True)
    scales[b] = code
    divisor = fp8_value(code) * ws2
    for j in range(8):
        lo = w[base + 2 * j] / divisor
        hi = w[base + 2 * j + 1] / divisor
        packed[b * 8 + j] = e2m1_code(np.float64(lo)) | (e2m1_code(np.float64(hi)) << 4)


@cuda.jit
def dequantize_kernel(packed, scales, scalar, divide, out):
    """One thread per packed byte: out[2i], out[2i+1] = q * (s / gs) or q * (s * ws2), one rounding each.
    (NaN scale bytes give NaN here; impnb.cuda.nvfp4 then writes the reference's NaN bits.)"""
    i = cuda.grid(1)
    if i >= packed.size:
        return
    s = fp8_value(scales[i // 8])
    mult = s / scalar if divide != 0 else s * scalar
    byte = packed[i]
    out[2 * i] = e2m1_value(byte & 0x0F) * mult
    out[2 * i + 1] = e2m1_value(byte >> 4) * mult
