"""Numba kernels of the FP8 E4M3 and FP4 E2M1 codecs (device functions shared with the NVFP4 quantizer).

Dimension legend: n = elements of the flattened input. One thread per element (per byte for packing).
They run on a GPU and, unchanged, in the Numba CUDA simulator. Float results that must match the reference bit
for bit (NaN payloads, -0.0) are written through a uint32 view of the float32 output.
Rounding: round to nearest, ties to even, computed exactly in float64 (every float16/float32 input is exact in
float64, so there is one rounding, as in impnb/reference/fp8.py and fp4.py).
"""
from __future__ import annotations

import math

import numpy as np
from numba import cuda

F32_NAN_BITS = np.uint32(0x7FC00000)  # the NaN NumPy's float32 NaN has (the reference's decode tables)
F32_SIGN = np.uint32(0x80000000)


@cuda.jit(device=True)
def round_half_even(v):
    """RNE of 0 <= v < 2^52 to an integer (returned as int64)."""
    t = int(math.floor(v))
    frac = v - t
    if frac > 0.5 or (frac == 0.5 and (t & 1) == 1):
        t += 1
    return t


@cuda.jit(device=True)
def fp8_magnitude_code(a, saturate):
    """Bits 6..0 of the E4M3 code of the magnitude a >= 0 (float64, not NaN): RNE, overflow after rounding."""
    if a > 464.0:  # rounds above 448 (inf included)
        return 0x7E if saturate else 0x7F
    if a < 0.015625:  # below 2^-6: subnormal grid of 2^-9 (a * 512 is exact); 8 means 2^-6 = 0x08
        return round_half_even(a * 512.0)
    e = 8
    top = 256.0
    while a < top:  # 2^e <= a < 2^(e+1), e >= -6
        top *= 0.5
        e -= 1
    t = round_half_even(a / (top * 0.125))  # 8 <= t <= 16, exact division by a power of two
    if t == 16:
        t = 8
        e += 1
    return ((e + 7) << 3) | (t - 8)


@cuda.jit(device=True)
def fp8_code(v, negative, saturate):
    """E4M3 code of a float64 v whose sign bit is ``negative`` (passed apart: a GPU float64 cast of a NaN loses its
    sign bit, the reference keeps it): NaN -> 0x7F | sign."""
    sign = 0x80 if negative else 0
    if math.isnan(v):
        return 0x7F | sign
    return fp8_magnitude_code(abs(v), saturate) | sign


@cuda.jit(device=True)
def fp8_bits(code):
    """float32 bit pattern of an E4M3 code (0x7F / 0xFF -> 0x7FC00000 / 0xFFC00000)."""
    code = int(code)  # NumPy scalars in the simulator: keep uint8 arithmetic from wrapping
    sign = np.uint32(code & 0x80) << np.uint32(24)
    mag = code & 0x7F
    if mag == 0x7F:
        return F32_NAN_BITS | sign
    e = mag >> 3
    m = mag & 7
    if e > 0:
        return sign | (np.uint32(e + 120) << np.uint32(23)) | (np.uint32(m) << np.uint32(20))
    if m == 0:
        return sign
    p = 2 if m >= 4 else (1 if m >= 2 else 0)  # m * 2^-9 = 2^(p-9) * (m / 2^p)
    return sign | (np.uint32(118 + p) << np.uint32(23)) | (np.uint32(m - (1 << p)) << np.uint32(23 - p))


@cuda.jit(device=True)
def fp8_value(code):
    """E4M3 code -> float32 value (NaN for 0x7F / 0xFF)."""
    code = int(code)  # NumPy scalars in the simulator: keep uint8 arithmetic from wrapping
    mag = code & 0x7F
    if mag == 0x7F:
        return np.float32(math.nan)
    e = mag >> 3
    m = mag & 7
    if e > 0:
        v = np.float32(1.0 + m * 0.125) * np.float32(2.0 ** (e - 7))
    else:
        v = np.float32(m * 0.001953125)  # m * 2^-9, exact
    return -v if code & 0x80 else v


@cuda.jit(device=True)
def e2m1_code(v):
    """E2M1 code 0..15 of a float64 v: RNE with +-6 saturation; x < 0 sets bit 3 (-0.0 -> 0); NaN -> 0x7."""
    a = abs(v)
    if math.isnan(a):
        return 7
    mag = 0
    if a > 0.25:
        mag += 1
    if a >= 0.75:
        mag += 1
    if a > 1.25:
        mag += 1
    if a >= 1.75:
        mag += 1
    if a > 2.5:
        mag += 1
    if a >= 3.5:
        mag += 1
    if a > 5.0:
        mag += 1
    return mag | 8 if v < 0.0 else mag


@cuda.jit(device=True)
def e2m1_bits(code):
    """float32 bit pattern of an E2M1 code (0x8 -> -0.0)."""
    code = int(code)  # NumPy scalars in the simulator: keep uint8 arithmetic from wrapping
    sign = np.uint32(code & 8) << np.uint32(28)
    m3 = code & 7
    if m3 == 0:
        return sign
    if m3 == 1:
        return sign | np.uint32(0x3F000000)  # 0.5
    return sign | (np.uint32(126 + (m3 >> 1)) << np.uint32(23)) | (np.uint32(m3 & 1) << np.uint32(22))


@cuda.jit(device=True)
def e2m1_value(code):
    code = int(code)  # NumPy scalars in the simulator: keep uint8 arithmetic from wrapping
    m3 = code & 7
    e = m3 >> 1
    v = np.float32(0.5 * (m3 & 1)) if e == 0 else np.float32((1.0 + 0.5 * (m3 & 1)) * 2.0 ** (e - 1))
    return -v if code & 8 else v


# ---- elementwise kernels ---------------------------------------------------------------------------------------
@cuda.jit
def fp8_encode_kernel(x, negative, out, saturate):  # x float64 [n], negative bool [n] -> out uint8 [n]
    i = cuda.grid(1)
    if i < x.size:
        out[i] = fp8_code(x[i], negative[i], saturate != 0)


@cuda.jit
def fp8_decode_kernel(codes, out_bits):  # codes uint8 [n] -> float32 bits uint32 [n]
    i = cuda.grid(1)
    if i < codes.size:
        out_bits[i] = fp8_bits(codes[i])


@cuda.jit
def e2m1_encode_kernel(x, out):  # x float64 [n] -> codes uint8 [n]
    i = cuda.grid(1)
    if i < x.size:
        out[i] = e2m1_code(x[i])


@cuda.jit
def e2m1_decode_kernel(codes, out_bits):  # codes uint8 [n] -> float32 bits uint32 [n]
    i = cuda.grid(1)
    if i < codes.size:
        out_bits[i] = e2m1_bits(codes[i])


@cuda.jit
def fp4_pack_kernel(codes, out):  # codes uint8 [2n] -> bytes uint8 [n]
    i = cuda.grid(1)
    if i < out.size:
        out[i] = codes[2 * i] | (codes[2 * i + 1] << 4)


@cuda.jit
def fp4_unpack_kernel(packed, out):  # bytes uint8 [n] -> codes uint8 [2n]
    i = cuda.grid(1)
    if i < packed.size:
        b = packed[i]
        out[2 * i] = b & 0x0F
        out[2 * i + 1] = b >> 4
