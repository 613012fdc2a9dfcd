"""FP4 E2M1: the element codec and nibble packing of NVFP4/MXFP4. The spec for impnb/cuda/fp4.py.

Dimension legend: K = elements along the last axis (even for packing); "..." = any leading axes.

A code is 4 bits ``s e1 e0 m`` (exponent bias 1, no inf/NaN). value = (-1)^s * M[code & 7] with
M = {0, 0.5, 1, 1.5, 2, 3, 4, 6}; 0x8 is -0 (docs/numerics.md §1.1). Decoders must treat 0x0 and 0x8 both as zero.

Packing (docs/numerics.md §1.2, compressed-tensors / ModelOpt / vLLM / PTX cvt.e2m1x2 agree): element 2i goes in the
LOW nibble (bits 0..3) of byte i, element 2i+1 in the HIGH nibble. (GGUF's half-split order is NOT this one.)
"""
from __future__ import annotations

import numpy as np

from .fp8 import _as_codes

E2M1_MAGNITUDES = np.array([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0], dtype=np.float32)
DECODE_TABLE = np.concatenate([E2M1_MAGNITUDES, -E2M1_MAGNITUDES])  # [16] float32; 0x8 is -0.0
SIGN_BIT = 0x8
MAX_MAGNITUDE_CODE = 0x7  # 6.0

# The 7 midpoints between neighbouring magnitudes, and whether a tie there goes UP (to the even code above).
# Ties to the even code: 0.25 -> 0 (code 0), 0.75 -> 1 (code 2), 1.25 -> 1 (code 2), 1.75 -> 2 (code 4),
# 2.5 -> 2 (code 4), 3.5 -> 4 (code 6), 5 -> 4 (code 6).
TIES = np.array([0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0])
TIE_GOES_UP = np.array([False, True, False, True, False, True, False])


def e2m1_encode(x):
    """float -> E2M1 code 0..15 (uint8, same shape): round to nearest, ties to even, saturate at +-6.

    Math (compressed-tensors cast_to_fp4 + its clamp, docs/numerics.md §1.3): with a = |x| (exact, float64),
        magnitude code = #{ties t below a}, counting a tie t itself only where the even code lies above it:
        a <= 0.25 -> 0; (0.25, 0.75) -> 0.5; [0.75, 1.25] -> 1; (1.25, 1.75) -> 1.5; [1.75, 2.5] -> 2;
        (2.5, 3.5) -> 3; [3.5, 5] -> 4; > 5 -> 6 (so +-inf -> +-6).
    Sign: x < 0 sets bit 3, so a negative value that rounds to zero gives 0x8; -0.0 gives 0x0 (as
    compressed-tensors, whose sign(-0.0) = 0). NaN (unspecified by compressed-tensors) gives 0x7 whatever its sign
    bit, as ModelOpt's _cast_fp4 does (NaN < 0 is false): so ModelOpt's all-zero tensor (ws2 = 0, 0/0 = NaN)
    packs to the same 0x77 bytes.
    """
    xs = np.asarray(x)
    if xs.dtype.kind not in "fiub":
        raise TypeError(f"e2m1_encode: input must be real numbers, got dtype {xs.dtype}")
    with np.errstate(invalid="ignore"):  # signalling NaNs are just NaN here
        a = np.abs(xs.astype(np.float64))  # [...]
    magnitude = np.zeros(a.shape, dtype=np.uint8)
    for tie, up in zip(TIES, TIE_GOES_UP):
        magnitude += (a >= tie) if up else (a > tie)
    magnitude = np.where(np.isnan(a), MAX_MAGNITUDE_CODE, magnitude)
    negative = xs < 0  # false for -0.0 and for NaN
    return (magnitude | np.where(negative, SIGN_BIT, 0)).astype(np.uint8)


def e2m1_decode(codes):
    """E2M1 code 0..15 -> float32 (same shape): (-1)^(code >> 3) * M[code & 7], exact; 0x8 -> -0.0.

    Codes outside 0..15 are an error (a packed byte is not a code: unpack it first with fp4_unpack).
    """
    return DECODE_TABLE[_as_codes(codes, 15, "e2m1_decode")]


def fp4_pack(codes):
    """E2M1 codes uint8 [..., K] (K even, values 0..15) -> bytes uint8 [..., K/2].

    byte[..., i] = codes[..., 2i] | (codes[..., 2i+1] << 4): element 2i in the low nibble.
    """
    c = np.asarray(codes)
    if c.ndim == 0 or c.shape[-1] % 2:
        raise ValueError(f"fp4_pack: the last axis must have an even length, got shape {c.shape}")
    c = _as_codes(c, 15, "fp4_pack").astype(np.uint8)
    return (c[..., 0::2] | (c[..., 1::2] << 4)).astype(np.uint8)


def fp4_unpack(packed):
    """Bytes uint8 [..., K/2] -> E2M1 codes uint8 [..., K]: codes[..., 2i] = low nibble, [..., 2i+1] = high."""
    p = np.asarray(packed)
    if p.dtype != np.uint8 or p.ndim == 0:
        raise TypeError(f"fp4_unpack: expected a uint8 array with at least one axis, got {p.dtype} {p.shape}")
    out = np.empty(p.shape[:-1] + (2 * p.shape[-1],), dtype=np.uint8)  # [..., K]
    out[..., 0::2] = p & 0x0F
    out[..., 1::2] = p >> 4
    return out
