"""Conformance of the FP8 E4M3FN codec (impnb/reference/fp8.py) to docs/numerics.md §2.

Independent oracle: ml_dtypes' float8_e4m3fn cast, which is RNE with NaN on overflow; the saturating encoder must
equal ``ml_dtypes(clip(x, -448, 448))`` with NaN passed through as 0x7F | sign (docs/numerics.md §2).
The reference is looked up through its module at call time, so tests/test_known_engine_bugs.py can inject a bug.
"""
import ml_dtypes
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from impnb.reference import fp8 as ref
from impnb.conformance.cases.fp8 import e4m3_midpoints, midpoints_with_neighbours, wide_range_float32

F32 = np.float32
E4M3 = ml_dtypes.float8_e4m3fn


def oracle_saturating(x) -> np.ndarray:
    """ml_dtypes after a clip to +-448, NaN -> 0x7F | sign: the saturating encoder's independent definition."""
    x = np.asarray(x, dtype=F32)
    with np.errstate(invalid="ignore"):
        codes = np.clip(x, -448, 448).astype(E4M3).view(np.uint8)
    return np.where(np.isnan(x), np.where(np.signbit(x), 0xFF, 0x7F), codes).astype(np.uint8)


def oracle_non_saturating(x) -> np.ndarray:
    x = np.asarray(x, dtype=F32)
    with np.errstate(invalid="ignore"):
        codes = x.astype(E4M3).view(np.uint8)
    return np.where(np.isnan(x), np.where(np.signbit(x), 0xFF, 0x7F), codes).astype(np.uint8)


def assert_codes_equal(got, want, x):
    __tracebackhide__ = True
    bad = np.flatnonzero(np.asarray(got) != np.asarray(want))
    if bad.size:
        i = bad[0]
        raise AssertionError(f"{bad.size}/{np.size(want)} codes differ; first at x={np.ravel(x)[i]!r}: "
                             f"got 0x{np.ravel(got)[i]:02x}, want 0x{np.ravel(want)[i]:02x}")


# ---- decode: all 256 codes ---------------------------------------------------------------------------------------
def test_decode_all_256_codes_match_ml_dtypes_bit_for_bit():
    codes = np.arange(256, dtype=np.uint8)
    got = ref.fp8_e4m3_decode(codes)
    want = codes.view(E4M3).astype(F32)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))


def test_decode_exponent_field_15_is_finite_and_only_0x7f_0xff_are_nan():
    values = ref.fp8_e4m3_decode(np.arange(0x78, 0x7F, dtype=np.uint8))
    np.testing.assert_array_equal(values, [256, 288, 320, 352, 384, 416, 448])
    nan_codes = np.flatnonzero(np.isnan(ref.fp8_e4m3_decode(np.arange(256, dtype=np.uint8))))
    assert nan_codes.tolist() == [0x7F, 0xFF]


def test_decode_smallest_values_and_negative_zero():
    v = ref.fp8_e4m3_decode(np.array([0x01, 0x07, 0x08, 0x80], dtype=np.uint8))
    assert v[0] == 2.0 ** -9 and v[1] == 7 * 2.0 ** -9 and v[2] == 2.0 ** -6
    assert v[3] == 0 and np.signbit(v[3])


@pytest.mark.parametrize("bad", [np.array([256]), np.array([-1]), np.array([1.0])], ids=["256", "-1", "float"])
def test_decode_rejects_non_codes(bad):
    with pytest.raises((ValueError, TypeError), match="fp8_e4m3_decode"):
        ref.fp8_e4m3_decode(bad)


# ---- encode: the canonical table, one test per case (docs/numerics.md §2) ------------------------------------------
SATURATING = [
    (256.0, 0x78), (288.0, 0x79), (300.0, 0x79), (304.0, 0x7A), (416.0, 0x7D), (432.0, 0x7E), (448.0, 0x7E),
    (464.0, 0x7E), (464.00003, 0x7E), (465.0, 0x7E), (480.0, 0x7E), (500.0, 0x7E), (1e30, 0x7E),
    (np.inf, 0x7E), (-500.0, 0xFE), (-np.inf, 0xFE), (6.0, 0x4C), (1.0, 0x38), (0.125, 0x20),
    (2.0 ** -6, 0x08), (2.0 ** -9, 0x01), (2.0 ** -10, 0x00), (3 * 2.0 ** -10, 0x02), (15 * 2.0 ** -10, 0x08),
    (-0.0, 0x80), (-1e-10, 0x80), (0.0, 0x00), (np.nan, 0x7F), (-np.nan, 0xFF),
]
NON_SATURATING = [(448.0, 0x7E), (464.0, 0x7E), (464.00003, 0x7F), (465.0, 0x7F), (480.0, 0x7F), (500.0, 0x7F),
                  (1e30, 0x7F), (np.inf, 0x7F), (-500.0, 0xFF), (-np.inf, 0xFF), (304.0, 0x7A), (np.nan, 0x7F)]


@pytest.mark.parametrize("x,code", SATURATING, ids=[f"{x!r}->0x{c:02X}" for x, c in SATURATING])
def test_canonical_saturating(x, code):
    got = int(ref.fp8_e4m3_encode(F32(x)))
    assert got == code, f"encode({x!r}) = 0x{got:02X}, want 0x{code:02X}"


@pytest.mark.parametrize("x,code", NON_SATURATING, ids=[f"{x!r}->0x{c:02X}" for x, c in NON_SATURATING])
def test_canonical_non_saturating(x, code):
    got = int(ref.fp8_e4m3_encode(F32(x), saturate=False))
    assert got == code, f"encode({x!r}, saturate=False) = 0x{got:02X}, want 0x{code:02X}"


# ---- encode: exhaustive and random against ml_dtypes --------------------------------------------------------------
def test_every_float16_value_saturating_matches_ml_dtypes_clip_then_cast():
    h = np.arange(1 << 16, dtype=np.uint16).view(np.float16)
    assert_codes_equal(ref.fp8_e4m3_encode(h), oracle_saturating(h.astype(F32)), h)


def test_every_float16_value_non_saturating_matches_ml_dtypes():
    h = np.arange(1 << 16, dtype=np.uint16).view(np.float16)
    assert_codes_equal(ref.fp8_e4m3_encode(h, saturate=False), oracle_non_saturating(h.astype(F32)), h)


def test_random_wide_range_float32_matches_ml_dtypes(rng):
    x = wide_range_float32(rng, 200_000)
    assert_codes_equal(ref.fp8_e4m3_encode(x), oracle_saturating(x), x)


def test_every_midpoint_and_its_float32_neighbours_matches_ml_dtypes():
    x = midpoints_with_neighbours()
    assert_codes_equal(ref.fp8_e4m3_encode(x), oracle_saturating(x), x)


def test_midpoints_round_to_the_even_code():
    codes = ref.fp8_e4m3_encode(e4m3_midpoints().astype(F32))
    assert np.all(codes % 2 == 0), "a tie must go to the code with an even mantissa"


def test_every_finite_code_round_trips():
    codes = np.array([c for c in range(256) if c & 0x7F != 0x7F], dtype=np.uint8)
    np.testing.assert_array_equal(ref.fp8_e4m3_encode(ref.fp8_e4m3_decode(codes)), codes)


def test_float64_input_is_rounded_once():
    """272 is the tie between 256 (0x78, even) and 288 (0x79); 272 + 1e-9 is above it. A float64 input must be
    rounded once: via float32 it would first become 272 and then tie down to 0x78 (double rounding)."""
    assert int(ref.fp8_e4m3_encode(np.float64(272.0))) == 0x78
    assert int(ref.fp8_e4m3_encode(np.float64(272.0 + 1e-9))) == 0x79
    assert int(ref.fp8_e4m3_encode(np.float64(272.0 - 1e-9))) == 0x78


def test_encode_keeps_shape_and_gives_uint8():
    out = ref.fp8_e4m3_encode(np.ones((2, 3, 4), dtype=np.float16))
    assert out.shape == (2, 3, 4) and out.dtype == np.uint8
    assert ref.fp8_e4m3_encode(1.0).shape == ()


def test_encode_rejects_non_numbers():
    with pytest.raises(TypeError, match="fp8_e4m3_encode"):
        ref.fp8_e4m3_encode(np.array(["1.0"]))


# ---- properties ----------------------------------------------------------------------------------------------------
floats32 = st.floats(width=32, allow_nan=True, allow_infinity=True)
finite32 = st.floats(width=32, allow_nan=False, allow_infinity=False)


@settings(max_examples=300, deadline=None)
@given(floats32, st.booleans())
def test_encode_of_decode_of_encode_is_idempotent(x, saturate):
    once = ref.fp8_e4m3_encode(F32(x), saturate=saturate)
    again = ref.fp8_e4m3_encode(ref.fp8_e4m3_decode(once), saturate=saturate)
    assert int(again) == int(once)


@settings(max_examples=300, deadline=None)
@given(finite32, finite32)
def test_encode_is_monotone(a, b):
    lo, hi = sorted((F32(a), F32(b)))
    assert ref.fp8_e4m3_decode(ref.fp8_e4m3_encode(lo)) <= ref.fp8_e4m3_decode(ref.fp8_e4m3_encode(hi))


@settings(max_examples=300, deadline=None)
@given(st.floats(min_value=-448.0, max_value=448.0, width=32))
def test_encode_is_nearest(x):
    """|x - decode(encode(x))| is at most half the gap to the next grid point on x's side."""
    v = float(ref.fp8_e4m3_decode(ref.fp8_e4m3_encode(F32(x))))
    grid = ref.fp8_e4m3_decode(np.arange(0x7F, dtype=np.uint8)).astype(np.float64)
    grid = np.concatenate([-grid[::-1], grid])
    assert abs(x - v) == np.min(np.abs(grid - x))
