"""Conformance of the E2M1 codec and nibble packing (impnb/reference/fp4.py) to docs/numerics.md §1.

Independent oracle: ml_dtypes' float4_e2m1fn (RNE, saturating); it differs from compressed-tensors only on the
sign of zero (-0.0 -> 0x8 in ml_dtypes, 0x0 in compressed-tensors), which the comparisons allow for by value.
compressed-tensors' own encoder is compared in tests/test_oracle_quant.py when it is installed.
"""
import ml_dtypes
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from impnb.reference import fp4 as ref
from impnb.conformance.cases.fp4 import e2m1_ties

F32 = np.float32

# (tie, code just below it, code at the tie = the even one, code just above it): docs/numerics.md §1.3
TIE_TABLE = [(0.25, 0x0, 0x0, 0x1), (0.75, 0x1, 0x2, 0x2), (1.25, 0x2, 0x2, 0x3), (1.75, 0x3, 0x4, 0x4),
             (2.5, 0x4, 0x4, 0x5), (3.5, 0x5, 0x6, 0x6), (5.0, 0x6, 0x6, 0x7)]
TIE_CASES = [(tie, side, sign) for tie, *_ in TIE_TABLE for side in ("below", "at", "above") for sign in (1, -1)]


def _tie_input(tie, side, sign):
    t = F32(tie)
    x = {"below": np.nextafter(t, F32(0)), "at": t, "above": np.nextafter(t, F32(np.inf))}[side]
    return F32(sign * x)


@pytest.mark.parametrize("tie,side,sign", TIE_CASES, ids=[f"{'-' if s < 0 else ''}{t}-{side}" for t, side, s in
                                                          TIE_CASES])
def test_every_tie_and_its_float32_neighbours(tie, side, sign):
    below, at, above = next(row[1:] for row in TIE_TABLE if row[0] == tie)
    want = {"below": below, "at": at, "above": above}[side] | (0x8 if sign < 0 else 0)
    x = _tie_input(tie, side, sign)
    got = int(ref.e2m1_encode(x))
    assert got == want, f"e2m1_encode({x!r}) = 0x{got:X}, want 0x{want:X}"


def test_the_tie_table_lists_every_midpoint():
    mids = (ref.E2M1_MAGNITUDES[:-1] + ref.E2M1_MAGNITUDES[1:]) / 2
    np.testing.assert_array_equal(e2m1_ties(), mids)
    assert [row[0] for row in TIE_TABLE] == mids.tolist()


SIGN_AND_SATURATION = [(6.0, 0x7), (6.5, 0x7), (1e30, 0x7), (np.inf, 0x7), (-6.0, 0xF), (-7.0, 0xF),
                       (-np.inf, 0xF), (0.0, 0x0), (-0.0, 0x0), (-1e-30, 0x8), (-0.25, 0x8), (1e-30, 0x0),
                       (np.nan, 0x7), (-np.nan, 0x7)]


@pytest.mark.parametrize("x,code", SIGN_AND_SATURATION, ids=[f"{x!r}->0x{c:X}" for x, c in SIGN_AND_SATURATION])
def test_saturation_and_sign_of_zero(x, code):
    got = int(ref.e2m1_encode(F32(x)))
    assert got == code, f"e2m1_encode({x!r}) = 0x{got:X}, want 0x{code:X}"


def test_dense_sweep_matches_ml_dtypes_by_value():
    """Every float16 value in [-8, 8] (all ties included) against ml_dtypes' RNE saturating cast."""
    h = np.arange(1 << 16, dtype=np.uint16).view(np.float16).astype(F32)
    x = h[np.isfinite(h) & (np.abs(h) <= 8)]
    got = ref.e2m1_encode(x)
    want = x.astype(ml_dtypes.float4_e2m1fn).view(np.uint8) & 0xF
    same = (got == want) | ((got & 0x7) == 0) & ((want & 0x7) == 0)  # zero: 0x0 and 0x8 are equal
    assert same.all(), f"first difference at x={x[~same][0]!r}"
    negative_zero = (x < 0) & ((got & 0x7) == 0)
    assert np.all(got[negative_zero] == 0x8), "a negative value that rounds to zero is 0x8"


def test_decode_all_16_codes():
    values = ref.e2m1_decode(np.arange(16, dtype=np.uint8))
    assert values.dtype == np.float32
    np.testing.assert_array_equal(values, [0, .5, 1, 1.5, 2, 3, 4, 6, -0.0, -.5, -1, -1.5, -2, -3, -4, -6])
    assert np.signbit(values[8]) and not np.signbit(values[0])
    oracle = np.arange(16, dtype=np.uint8).view(ml_dtypes.float4_e2m1fn).astype(F32)
    np.testing.assert_array_equal(values.view(np.uint32), oracle.view(np.uint32))


def test_every_code_round_trips_except_negative_zero():
    codes = np.arange(16, dtype=np.uint8)
    back = ref.e2m1_encode(ref.e2m1_decode(codes))
    np.testing.assert_array_equal(back, np.where(codes == 0x8, 0x0, codes))  # -0.0 encodes as 0x0 (as CT)


def test_decode_rejects_packed_bytes():
    with pytest.raises(ValueError, match="0..15"):
        ref.e2m1_decode(np.array([0x21], dtype=np.uint8))


# ---- packing ------------------------------------------------------------------------------------------------------
def test_hand_built_byte_0x21_is_half_then_one():
    codes = ref.fp4_unpack(np.array([[0x21]], dtype=np.uint8))
    np.testing.assert_array_equal(codes, [[0x1, 0x2]])  # element 0 from the low nibble
    np.testing.assert_array_equal(ref.e2m1_decode(codes), [[0.5, 1.0]])
    np.testing.assert_array_equal(ref.fp4_pack(np.array([0x1, 0x2], dtype=np.uint8)), [0x21])


def test_pack_unpack_round_trip_on_a_batched_shape(rng):
    codes = rng.integers(0, 16, (2, 3, 10), dtype=np.uint8)
    packed = ref.fp4_pack(codes)
    assert packed.shape == (2, 3, 5) and packed.dtype == np.uint8
    np.testing.assert_array_equal(ref.fp4_unpack(packed), codes)
    every_byte = np.arange(256, dtype=np.uint8)
    np.testing.assert_array_equal(ref.fp4_pack(ref.fp4_unpack(every_byte)), every_byte)


@pytest.mark.parametrize("bad,err", [(np.zeros(3, np.uint8), ValueError), (np.array([16, 0]), ValueError),
                                     (np.array([0.5, 1.0]), TypeError)], ids=["odd_length", "code_16", "floats"])
def test_pack_rejects_bad_codes(bad, err):
    with pytest.raises(err, match="fp4_pack"):
        ref.fp4_pack(bad)


def test_unpack_rejects_non_bytes():
    with pytest.raises(TypeError, match="fp4_unpack"):
        ref.fp4_unpack(np.array([1, 2], dtype=np.int32))


# ---- properties ----------------------------------------------------------------------------------------------------
floats32 = st.floats(width=32, allow_nan=False, allow_infinity=True)


@settings(max_examples=300, deadline=None)
@given(floats32)
def test_encode_of_decode_of_encode_is_idempotent(x):
    once = int(ref.e2m1_encode(F32(x)))
    again = int(ref.e2m1_encode(ref.e2m1_decode(np.uint8(once))))
    assert again == once or (once == 0x8 and again == 0x0)  # -0 re-encodes as +0 (CT's sign rule)


@settings(max_examples=300, deadline=None)
@given(floats32, floats32)
def test_encode_is_monotone(a, b):
    lo, hi = sorted((F32(a), F32(b)))
    assert ref.e2m1_decode(ref.e2m1_encode(lo)) <= ref.e2m1_decode(ref.e2m1_encode(hi))


@settings(max_examples=300, deadline=None)
@given(st.floats(min_value=-6.0, max_value=6.0, width=32))
def test_encode_is_nearest(x):
    v = float(ref.e2m1_decode(ref.e2m1_encode(F32(x))))
    grid = np.concatenate([-ref.E2M1_MAGNITUDES, ref.E2M1_MAGNITUDES]).astype(np.float64)
    assert abs(x - v) == np.min(np.abs(grid - x))
