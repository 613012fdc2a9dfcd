"""FP4 E2M1 codec and nibble packing, CUDA path (Numba kernels; they also run in the CUDA simulator).

Same names, signatures and results as impnb/reference/fp4.py (bit-exact). Dimension legend: K = elements along
the last axis; "..." = any leading axes. Packing: element 2i in the LOW nibble of byte i.
"""
from __future__ import annotations

import numpy as np

from . import _alloc
from ._common import as_float64_flat, codes_input, real_input
from ._launch import launch_numba, xp


def e2m1_encode(x):
    """float -> E2M1 code 0..15 (uint8, same shape): RNE, +-6 saturation, x < 0 sets bit 3, NaN -> 0x7."""
    from ._codec_kernels import e2m1_encode_kernel
    a = real_input(x, "e2m1_encode")
    flat = as_float64_flat(a)  # [n]
    out = _alloc.empty(a.shape, np.uint8, label="e2m1_encode")
    launch_numba(e2m1_encode_kernel, flat.size, flat, out.reshape(-1))
    return out


def e2m1_decode(codes):
    """E2M1 code 0..15 -> float32 (same shape), exact; 0x8 -> -0.0."""
    from ._codec_kernels import e2m1_decode_kernel
    c = codes_input(codes, 15, "e2m1_decode")
    out = _alloc.empty(c.shape, np.float32, label="e2m1_decode")
    launch_numba(e2m1_decode_kernel, c.size, c.reshape(-1), out.reshape(-1).view(np.uint32))
    return out


def fp4_pack(codes):
    """E2M1 codes uint8 [..., K] (K even, 0..15) -> bytes uint8 [..., K/2], element 2i in the low nibble."""
    from ._codec_kernels import fp4_pack_kernel
    shape = xp().asarray(codes).shape
    if len(shape) == 0 or shape[-1] % 2:
        raise ValueError(f"fp4_pack: the last axis must have an even length, got shape {shape}")
    c = codes_input(codes, 15, "fp4_pack")
    out = _alloc.empty(shape[:-1] + (shape[-1] // 2,), np.uint8, label="fp4_pack")
    launch_numba(fp4_pack_kernel, out.size, c.reshape(-1), out.reshape(-1))
    return out


def fp4_unpack(packed):
    """Bytes uint8 [..., K/2] -> E2M1 codes uint8 [..., K]: low nibble first."""
    from ._codec_kernels import fp4_unpack_kernel
    p = xp().asarray(packed)
    if p.dtype != np.uint8 or p.ndim == 0:
        raise TypeError(f"fp4_unpack: expected a uint8 array with at least one axis, got {p.dtype} {p.shape}")
    p = xp().ascontiguousarray(p)
    out = _alloc.empty(p.shape[:-1] + (2 * p.shape[-1],), np.uint8, label="fp4_unpack")
    launch_numba(fp4_unpack_kernel, p.size, p.reshape(-1), out.reshape(-1))
    return out
