"""Inputs that sit on, or one float32 step either side of, an E2M1 rounding tie after the block division.

A quantizer computes q = e2m1(x / d) with d the block's divisor (s / gs, s * ws2, s / igs). Where x / d is a tie
or one ulp away from it, the code depends on doing exactly that float32 division: a reciprocal multiply
x * (1 / d), an FMA, float64 arithmetic or a differently rounded d moves the quotient across the tie.
"""
from __future__ import annotations

import numpy as np

from impnb.reference.fp4 import TIES
from impnb.reference.fp8 import fp8_e4m3_decode, fp8_e4m3_encode

F32 = np.float32


def near_tie_values(divisor, ties, rng) -> np.ndarray:
    """float32 [3 len(ties)]: for each tie t, fl(t d) and its two float32 neighbours, with random signs."""
    centre = (ties.astype(F32) * F32(divisor)).astype(F32)
    values = np.concatenate([np.nextafter(centre, F32(0)), centre, np.nextafter(centre, F32(np.inf))])
    return (values * rng.choice(np.array([-1, 1], F32), values.size)).astype(F32)


def plant(row: np.ndarray, divisors, rng) -> None:
    """Fill blocks of ``row`` (in place) with near-tie values for their divisors, keeping each block's amax: block
    g gets ties [0:5] (g even) or [2:7] (g odd), 15 values; its 16th element (the amax) stays where it is."""
    for g, d in enumerate(divisors):
        block = row[16 * g:16 * g + 16]
        keep = int(np.argmax(np.abs(block)))
        ties = TIES[0:5] if g % 2 == 0 else TIES[2:7]
        others = [i for i in range(16) if i != keep]
        block[others] = near_tie_values(d, ties, rng)


def ct_divisors(block_amax, global_scale) -> np.ndarray:
    """s / gs per block, compressed-tensors' steps: s = fp8(clamp(gs * (amax_b / 6), 448)), 0 -> 0x20."""
    gs = F32(global_scale)
    codes = fp8_e4m3_encode(np.clip(gs * (np.asarray(block_amax, F32) / F32(6.0)), F32(-448.0), F32(448.0)))
    codes = np.where(fp8_e4m3_decode(codes) == 0, 0x20, codes).astype(np.uint8)
    return fp8_e4m3_decode(codes) / gs


def modelopt_divisors(block_amax, ws2) -> np.ndarray:
    """s * ws2 per block, ModelOpt's steps: s = fp8(clamp(amax_b / (6 ws2), 2^-9, 448))."""
    ws2 = F32(ws2)
    s = np.asarray(block_amax, F32) / (F32(6.0) * ws2)
    codes = fp8_e4m3_encode(np.clip(np.where(s == 0, F32(1.0), s), F32(2.0 ** -9), F32(448.0)))
    return fp8_e4m3_decode(codes) * ws2


# Midpoints between neighbouring E4M3 values, one per region (subnormal, around 1, 8..16, the top); each
# tie goes to the even code: 2.5 * 2^-9 -> 2^-8, 1.0625 -> 1, 1.1875 -> 1.25, 12.5 -> 12, 432 -> 448.
FP8_SCALE_TIES = np.array([2.5 * 2.0 ** -9, 1.0625, 1.1875, 12.5, 432.0], dtype=F32)


def amax_for_scale(target, scale_of, *, steps: int = 512):
    """A float32 block amax a with scale_of(a) == target exactly (scale_of: the producer's float32 block-scale
    steps before the FP8 rounding), or None. Walks float32 neighbours from a good first guess."""
    target = F32(target)
    a = F32(target / scale_of(F32(1.0)))  # scale_of is linear in a up to rounding
    for _ in range(steps):
        s = scale_of(a)
        if s == target:
            return a
        a = np.nextafter(a, F32(np.inf) if s < target else F32(0))
    return None


def scale_tie_amaxes(scale_of) -> list:
    """Block amaxes whose block scale lands exactly on each FP8 tie of FP8_SCALE_TIES and one float32 step either
    side of it (where such an amax exists): RNE of the scale, and the producer's operation order, decide."""
    amaxes = []
    for m in FP8_SCALE_TIES:
        for target in (np.nextafter(m, F32(0)), m, np.nextafter(m, F32(np.inf))):
            a = amax_for_scale(target, scale_of)
            if a is not None:
                amaxes.append(a)
    return amaxes


def fill_blocks(row: np.ndarray, amaxes, rng) -> None:
    """Give block g of ``row`` (in place) the amax amaxes[g], at a random position, the rest below it."""
    for g, a in enumerate(amaxes[: row.size // 16]):
        block = (rng.uniform(-1.0, 1.0, 16) * F32(a) * F32(0.9)).astype(F32)
        block[rng.integers(0, 16)] = F32(a) * rng.choice(np.array([-1, 1], F32))
        row[16 * g:16 * g + 16] = block
