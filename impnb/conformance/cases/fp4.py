"""Cross-check cases of the E2M1 codec and nibble packing (impnb/reference/fp4.py).

Inputs: every E2M1 tie with its float32 neighbours, +-0, +-inf, NaNs of both signs (with payloads), negative
values that round to zero, float32 subnormals, values past the saturation point, fresh random
float32 spread over (-8, 8) (the range a quantizer feeds the encoder), all 16 codes, random codes and bytes on
awkward shapes (odd row counts, a leading batch axis) and on the packed shape of a real weight.
"""
from __future__ import annotations

import numpy as np

from . import case

F32 = np.float32
_N = {"tiny": 263, "real": 1 << 20}
_PACK_SHAPES = {"tiny": [(3, 10), (2, 3, 16)], "real": [(2816, 704), (4096, 4096)]}


def e2m1_ties():
    """The 7 E2M1 midpoints 0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5 (float32)."""
    from impnb.reference.fp4 import TIES
    return TIES.astype(F32)


def ties_with_neighbours():
    """Every tie t, nextafter(t, 0) and nextafter(t, inf), both signs (float32)."""
    t = e2m1_ties()
    around = np.concatenate([np.nextafter(t, F32(0)), t, np.nextafter(t, F32(np.inf))])
    return np.concatenate([around, -around]).astype(F32)


SPECIALS = np.concatenate([
    np.array([0.0, -0.0, 1e-30, -1e-30, 1e-40, -1e-40, -0.2, -0.25, 0.5, -0.5, 6.0, -6.0, 6.5, -7.0, 100.0, -1e30,
              np.inf, -np.inf], dtype=F32),
    np.array([0x7FC00000, 0xFFC00000, 0x7FC00007, 0xFF800001], dtype=np.uint32).view(F32)])  # NaNs, both signs


@case("e2m1_encode", "ties_and_neighbours")
def _(rng, size):
    return (rng.permutation(np.concatenate([ties_with_neighbours(), SPECIALS])),), {}


@case("e2m1_encode", "random_range")
def _(rng, size):
    return (rng.uniform(-8.0, 8.0, _N[size]).astype(F32),), {}


@case("e2m1_encode", "random_2d")
def _(rng, size):
    shape = _PACK_SHAPES[size][0]
    return ((rng.standard_normal(shape) * 3.0).astype(F32),), {}


@case("e2m1_decode", "all_codes")
def _(rng, size):
    return (rng.permutation(np.arange(16, dtype=np.uint8)),), {}


@case("e2m1_decode", "random_codes_3d")
def _(rng, size):
    shape = _PACK_SHAPES[size][1]
    return (rng.integers(0, 16, shape, dtype=np.uint8),), {}


@case("fp4_pack", "random_codes")
def _(rng, size):
    shape = _PACK_SHAPES[size][0]
    return (rng.integers(0, 16, shape, dtype=np.uint8),), {}


@case("fp4_pack", "random_codes_batched")
def _(rng, size):
    shape = _PACK_SHAPES[size][1]
    return (rng.integers(0, 16, shape, dtype=np.uint8),), {}


@case("fp4_unpack", "random_bytes")
def _(rng, size):
    shape = _PACK_SHAPES[size][0]
    return (rng.integers(0, 256, shape, dtype=np.uint8),), {}


@case("fp4_unpack", "all_bytes")
def _(rng, size):
    return (rng.permutation(np.arange(256, dtype=np.uint8)).reshape(16, 16),), {}
