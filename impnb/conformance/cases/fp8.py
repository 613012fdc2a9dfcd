"""Cross-check cases of the FP8 E4M3 codec (impnb/reference/fp8.py).

Inputs: fresh random float32 of a wide dynamic range (2^-30 .. 2^14, both signs), the canonical table (the
saturation and overflow boundaries 240 / 256 / 448 / 464 in both modes, the subnormal range and its 2^-10 tie,
signed zeros, +-inf, NaNs of both signs with quiet and signalling payloads, float32 subnormals) and every E4M3
midpoint with its float32 neighbours, every float16 value (real) or a random sample of them (tiny: the simulator
runs one Python thread per element), and random bytes for the decoder.
"""
from __future__ import annotations

import numpy as np

from . import case

F32 = np.float32
_N = {"tiny": 257, "real": 1 << 20}


def wide_range_float32(rng, n):
    """Random float32 whose magnitudes span 2^-30 .. 2^14: underflow, subnormal, normal and overflow ranges."""
    mag = np.exp2(rng.uniform(-30.0, 14.0, n))
    return (np.where(rng.random(n) < 0.5, -mag, mag)).astype(F32)  # [n]


def e4m3_midpoints():
    """Every midpoint between neighbouring non-negative E4M3 values, plus 464 (448's upper tie), as float64."""
    from impnb.reference.fp8 import fp8_e4m3_decode
    grid = fp8_e4m3_decode(np.arange(0x7F, dtype=np.uint8)).astype(np.float64)  # 0 .. 448
    return np.concatenate([(grid[:-1] + grid[1:]) / 2, [464.0]])


def midpoints_with_neighbours():
    """Each midpoint m, as float32, with nextafter below and above, for both signs."""
    m = e4m3_midpoints().astype(F32)
    around = np.concatenate([np.nextafter(m, F32(0)), m, np.nextafter(m, F32(np.inf))])
    return np.concatenate([around, -around]).astype(F32)


CANONICAL = np.array([256, 288, 300, 304, 416, 432, 448, 464, 464.00003, 465, 480, 500, 1e30, np.inf, -500,
                      -np.inf, 6.0, 1.0, 0.125, 2.0 ** -6, 2.0 ** -9, 2.0 ** -10, 3 * 2.0 ** -10, 15 * 2.0 ** -10,
                      0.0, -0.0, -1e-10, np.nan, -np.nan], dtype=F32)


def all_float16_as_float32(rng, size):
    values = np.arange(1 << 16, dtype=np.uint16).view(np.float16).astype(F32)
    if size == "tiny":
        values = rng.choice(values, 512, replace=False)
    return values


@case("fp8_e4m3_encode", "wide_random")
def _(rng, size):
    return (wide_range_float32(rng, _N[size]),), {}


@case("fp8_e4m3_encode", "canonical_and_midpoints")
def _(rng, size):
    x = np.concatenate([CANONICAL, midpoints_with_neighbours()])
    return (rng.permutation(x),), {}


@case("fp8_e4m3_encode", "float16_values")
def _(rng, size):
    return (all_float16_as_float32(rng, size),), {}


@case("fp8_e4m3_encode", "non_saturating")
def _(rng, size):
    x = np.concatenate([CANONICAL, wide_range_float32(rng, _N[size])])
    return (x,), {"saturate": False}


@case("fp8_e4m3_encode", "non_saturating_midpoints")
def _(rng, size):
    return (rng.permutation(np.concatenate([CANONICAL, midpoints_with_neighbours()])),), {"saturate": False}


@case("fp8_e4m3_encode", "block_scales_2d")
def _(rng, size):
    n, g = (5, 7) if size == "tiny" else (4096, 256)  # the [N, K/16] scale matrix of a 4096 x 4096 weight
    return (np.abs(wide_range_float32(rng, n * g)).reshape(n, g),), {}


@case("fp8_e4m3_decode", "all_codes")
def _(rng, size):
    return (rng.permutation(np.arange(256, dtype=np.uint8)),), {}


@case("fp8_e4m3_decode", "random_bytes_2d")
def _(rng, size):
    shape = (3, 37) if size == "tiny" else (4096, 256)
    return (rng.integers(0, 256, shape, dtype=np.uint8),), {}
