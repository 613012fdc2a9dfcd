"""FP8 E4M3FN byte codec, CUDA path (Numba kernels; they also run in the CUDA simulator).

Same names, signatures and results as impnb/reference/fp8.py (bit-exact; see its docstring for the math).
Shapes: any; elementwise, the output keeps the input's shape. One thread per element.
"""
from __future__ import annotations

import numpy as np

from . import _alloc
from ._common import as_float64_flat, codes_input, real_input
from ._launch import launch_numba, xp


def fp8_e4m3_encode(x, *, saturate=True):
    """float -> FP8 E4M3FN byte (uint8, same shape), RNE; saturate=True: SATFINITE, False: NaN on overflow."""
    from ._codec_kernels import fp8_encode_kernel
    a = real_input(x, "fp8_e4m3_encode")
    flat = as_float64_flat(a)  # [n]
    negative = xp().ascontiguousarray(xp().signbit(a)).reshape(-1)  # [n]: the input's own sign bit (NaN too)
    out = _alloc.empty(a.shape, np.uint8, label="fp8_e4m3_encode")
    launch_numba(fp8_encode_kernel, flat.size, flat, negative, out.reshape(-1), 1 if saturate else 0)
    return out


def fp8_e4m3_decode(codes):
    """FP8 E4M3FN byte -> float32 (same shape); 0x7F / 0xFF -> NaN (bits 0x7FC00000 / 0xFFC00000)."""
    from ._codec_kernels import fp8_decode_kernel
    c = codes_input(codes, 255, "fp8_e4m3_decode")
    out = _alloc.empty(c.shape, np.float32, label="fp8_e4m3_decode")
    launch_numba(fp8_decode_kernel, c.size, c.reshape(-1), out.reshape(-1).view(np.uint32))
    return out
