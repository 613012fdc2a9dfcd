"""FP8 E4M3FN (``float8_e4m3fn``): the byte codec. The spec for impnb/cuda/fp8.py.

Shapes: any; every op is elementwise and keeps the input's shape (a scalar gives a 0-d array).

Bit layout of one code: ``s eeee mmm`` (bit 7 sign, bits 6..3 exponent with bias 7, bits 2..0 mantissa).
    e > 0:  (-1)^s * 2^(e-7) * (1 + m/8)        0x08 = 2^-6 (smallest normal) ... 0x7E = 448 (largest)
    e = 0:  (-1)^s * 2^-6   * (m/8)              0x01 = 2^-9 (smallest subnormal); 0x80 = -0.0
    There are no infinities. Exponent field 15 is FINITE for m = 0..6 (0x78..0x7E = 256..448); only
    0x7F / 0xFF are NaN (docs/numerics.md §2; an encoder that treats e = 15 as overflow clamps to 0x77 = 240, a bug).

Encoding (docs/numerics.md §2): round to nearest, ties to even, on the E4M3 grid (spacing 2^-9 below 2^-6),
overflow decided AFTER rounding: the rounded magnitude exceeds 448 exactly when |x| > 464 (464 is the tie between
448 and the non-existent 480 and goes to the even 448).
    saturate=True  (CUDA __NV_SATFINITE, PTX cvt.rn.satfinite, torch 2.13):  overflow and +-inf -> 0x7E | sign
    saturate=False (CUDA __NV_NOSAT, ml_dtypes):                              overflow and +-inf -> 0x7F | sign
    NaN -> 0x7F | sign in both modes; -0.0 and negative underflow -> 0x80; |x| <= 2^-10 -> +-0 (2^-10 is a tie).
Source: CUDA cuda_fp8.hpp __nv_cvt_double_to_fp8 (FP8_OVERFLOW_THRESHOLD 464.0, FP8_MAXNORM 0x7E).
"""
from __future__ import annotations

import numpy as np

MAX_NORMAL = 448.0  # 0x7E
OVERFLOW_THRESHOLD = 464.0  # largest |x| that still rounds to 448
MIN_NORMAL_EXP = -6  # 2^-6 = 0x08
MANTISSA_BITS = 3
EXP_BIAS = 7
SATURATED_CODE = 0x7E
NAN_CODE = 0x7F
SIGN_BIT = 0x80


def fp8_e4m3_encode(x, *, saturate=True):
    """float -> FP8 E4M3FN byte (uint8, same shape): round to nearest even, then the overflow policy.

    Math: with a = |x| taken exactly in float64 (exact for float16/float32/float64 inputs, so there is ONE
    rounding), the grid quantum is 2^(max(floor(log2 a), -6) - 3); r = rint(a / quantum) * quantum (rint is
    ties-to-even; dividing by a power of two is exact). r > 448 is overflow: 0x7E if ``saturate`` else 0x7F.
    Otherwise the code is r's exponent and 3 mantissa bits, biased by 7 (e = 0 for subnormals, m = r / 2^-9).
    The sign bit is the input's sign bit: -0.0 -> 0x80, -NaN -> 0xFF, -500 -> 0xFE (saturating).
    Canonical: 256->0x78, 300->0x79, 304->0x7A, 448->0x7E, 464->0x7E, 500->0x7E, 2^-9->0x01, 2^-10->0x00.
    """
    xs = np.asarray(x)
    if xs.dtype.kind not in "fiub":
        raise TypeError(f"fp8_e4m3_encode: input must be real numbers, got dtype {xs.dtype}")
    with np.errstate(invalid="ignore"):  # signalling NaNs (e.g. from float16 bit patterns) are just NaN here
        a = np.abs(xs.astype(np.float64))  # exact: every float16/32 value is a float64
    sign = np.where(np.signbit(xs), SIGN_BIT, 0).astype(np.uint8)
    nan = np.isnan(a)
    a = np.where(nan, 0.0, a)
    rounded = _round_to_grid(a)  # [...]: RNE onto the E4M3 magnitude grid, may exceed 448
    overflow = rounded > MAX_NORMAL  # also true for +-inf
    magnitude = _magnitude_code(np.where(overflow, 0.0, rounded))
    magnitude = np.where(overflow, SATURATED_CODE if saturate else NAN_CODE, magnitude)
    magnitude = np.where(nan, NAN_CODE, magnitude)
    return (magnitude.astype(np.uint8) | sign).astype(np.uint8)


def _round_to_grid(a: np.ndarray) -> np.ndarray:
    """RNE of a >= 0 onto {m * 2^(e-3)}: quantum 2^(e-3) with e = max(floor(log2 a), -6). inf stays inf."""
    finite = np.isfinite(a)
    safe = np.where(finite & (a > 0), a, 1.0)
    _, exp2 = np.frexp(safe)  # safe = f * 2^exp2, f in [0.5, 1): floor(log2 safe) = exp2 - 1
    e = np.maximum(exp2 - 1, MIN_NORMAL_EXP)
    quantum = np.ldexp(1.0, e - MANTISSA_BITS)
    rounded = np.rint(safe / quantum) * quantum
    return np.where(finite, np.where(a > 0, rounded, 0.0), np.inf)


def _magnitude_code(r: np.ndarray) -> np.ndarray:
    """Bits 6..0 of an exactly representable magnitude 0 <= r <= 448 (normal: e,m; subnormal: e = 0)."""
    safe = np.where(r > 0, r, 1.0)
    _, exp2 = np.frexp(safe)
    e = exp2 - 1  # r in [2^e, 2^(e+1))
    normal = (r >= 2.0 ** MIN_NORMAL_EXP)
    mant_normal = np.rint((safe / np.ldexp(1.0, e) - 1.0) * 8).astype(np.int64)  # exact
    code_normal = ((e + EXP_BIAS) << MANTISSA_BITS) | mant_normal
    code_subnormal = np.rint(r / 2.0 ** (MIN_NORMAL_EXP - MANTISSA_BITS)).astype(np.int64)  # m / 2^-9
    return np.where(normal, code_normal, code_subnormal)


def _decode_table() -> np.ndarray:
    codes = np.arange(256)
    s = np.where(codes & SIGN_BIT, -1.0, 1.0)
    e = (codes >> MANTISSA_BITS) & 0xF
    m = codes & 0x7
    value = np.where(e > 0, np.ldexp(1.0 + m / 8.0, e - EXP_BIAS), np.ldexp(m / 8.0, MIN_NORMAL_EXP))
    value = np.where((codes & 0x7F) == NAN_CODE, np.nan, value)
    return np.copysign(value, s).astype(np.float32)  # 0xFF is a NaN with the sign bit set


DECODE_TABLE = _decode_table()  # [256] float32; 0x80 is -0.0, 0x7F/0xFF are NaN


def fp8_e4m3_decode(codes):
    """FP8 E4M3FN byte -> float32 (same shape): (-1)^s 2^(e-7)(1+m/8) for e > 0, (-1)^s 2^-6 (m/8) for e = 0.

    Every code is exact in float32. 0x78..0x7E decode to 256, 288, 320, 352, 384, 416, 448; 0x80 to -0.0;
    only 0x7F (+NaN) and 0xFF (-NaN) are NaN. Input: uint8 (or integers in 0..255), any shape.
    """
    c = _as_codes(codes, 255, "fp8_e4m3_decode")
    return DECODE_TABLE[c]


def _as_codes(codes, top: int, op: str) -> np.ndarray:
    c = np.asarray(codes)
    if c.dtype.kind not in "iu":
        raise TypeError(f"{op}: codes must be integers (uint8), got dtype {c.dtype}")
    if c.size and (c.min() < 0 or c.max() > top):
        raise ValueError(f"{op}: codes must lie in 0..{top}, got min {c.min()} max {c.max()}")
    return c.astype(np.intp)
