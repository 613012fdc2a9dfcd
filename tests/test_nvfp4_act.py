"""W4A4 activation quantize-dequantize (impnb/reference/nvfp4_act.py) against an independent spelling of the spec.

The oracle below uses ml_dtypes' float8_e4m3fn cast (after the clamp: the saturating encoder of docs/numerics.md §2)
and an E2M1 grid search with ties to the even code, not impnb's codecs.
"""
from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

from impnb import ops
from impnb.reference.nvfp4_act import fake_quantize_nvfp4_activations
from impnb.reference.nvfp4 import nvfp4_dequantize, nvfp4_quantize

F32 = np.float32
E2M1 = np.array([0, 0.5, 1, 1.5, 2, 3, 4, 6], dtype=np.float64)


def _e2m1_rne(v: np.ndarray) -> np.ndarray:
    mag = np.minimum(np.abs(v.astype(np.float64)), 6.0)
    dist = np.abs(mag[..., None] - E2M1)  # [..., 8]
    best = dist.min(axis=-1, keepdims=True)
    cand = np.where(dist == best, np.arange(8), 99)
    even = np.where(cand % 2 == 0, cand, 99).min(axis=-1)  # a tie between two grid points: the even code
    idx = np.where((dist == best).sum(axis=-1) > 1, even, cand.min(axis=-1))
    return (np.sign(v) * E2M1[idx]).astype(F32)


def oracle(x: np.ndarray, igs: float) -> np.ndarray:
    igs = F32(igs)
    blocks = x.reshape(-1, x.shape[-1] // 16, 16)
    amax = np.abs(blocks).max(-1)
    s = np.clip(igs * (amax / F32(6)), -448, 448).astype(ml_dtypes.float8_e4m3fn).astype(F32)
    s = np.where(s == 0, F32(0.125), s)
    div = s / igs
    q = _e2m1_rne(np.clip(blocks / div[..., None], -6, 6))
    return (q * div[..., None]).reshape(x.shape)


def test_matches_independent_oracle(rng):
    x = (rng.standard_normal((7, 64)) * rng.choice([0.01, 1, 30], (7, 64))).astype(F32)
    x[0, :16] = 0
    igs = float(F32(2688) / F32(20.0))
    np.testing.assert_array_equal(fake_quantize_nvfp4_activations(x, igs), oracle(x, igs))


def test_same_as_weight_quantizer_with_shared_global_scale(rng):
    """A row block quantized as activations equals the weight quantizer's bytes when gs is the same number."""
    x = rng.standard_normal((4, 32)).astype(F32)
    t = nvfp4_quantize(x)  # gs = 2688 / amax(x) computed by the op core
    np.testing.assert_array_equal(fake_quantize_nvfp4_activations(x, t.global_scale), nvfp4_dequantize(t))


def test_modelopt_scalar_is_the_reciprocal(rng):
    x = rng.standard_normal((3, 48)).astype(F32)
    input_scale = F32(5.0) / F32(2688)
    got = fake_quantize_nvfp4_activations(x, float(input_scale), layout="modelopt")
    np.testing.assert_array_equal(got, fake_quantize_nvfp4_activations(x, float(F32(1) / input_scale)))


def test_saturates_beyond_calibration_range():
    x = np.zeros((1, 16), F32)
    x[0, 3] = 1000.0  # calibration amax was 4: igs = 672, block scale clamps to 448, codes to 6
    out = fake_quantize_nvfp4_activations(x, float(F32(2688) / F32(4)))
    assert out[0, 3] == F32(6) * (F32(448) / F32(672))
    assert np.count_nonzero(out) == 1


@pytest.mark.parametrize("scalar", [0.0, float("inf"), float("nan"), -1.0])
def test_unusable_scale_is_a_clear_error(scalar):
    with pytest.raises(ValueError, match="activation scale"):
        fake_quantize_nvfp4_activations(np.ones((1, 16), F32), scalar)


def test_bad_shapes_and_dtypes_are_clear_errors():
    with pytest.raises(ValueError, match="multiple of 16"):
        fake_quantize_nvfp4_activations(np.ones((2, 24), F32), 1.0)
    with pytest.raises(TypeError, match="float32"):
        fake_quantize_nvfp4_activations(np.ones((2, 16)), 1.0)
    with pytest.raises(ValueError, match="non-finite"):
        fake_quantize_nvfp4_activations(np.full((1, 16), np.inf, F32), 1.0)


def test_registered_and_dispatched(rng):
    x = rng.standard_normal((2, 32)).astype(F32)
    np.testing.assert_array_equal(ops.fake_quantize_nvfp4_activations(x, 300.0, backend="reference"),
                                  fake_quantize_nvfp4_activations(x, 300.0))


def test_static_scale_is_not_a_no_op():
    """It has been claimed that the stored input scale is absorbed by the dynamic per-block scale. It is not: it sets the
    FP8 grid the block scales fall on, so a block far below the calibrated range is flushed, and one above it is
    clipped."""
    x = np.zeros((1, 32), F32)
    x[0, :16] = F32(1e-4)  # igs * amax / 6 = 2688/100 * 1e-4 / 6 ~ 4.5e-4 < 2^-10: the FP8 block scale underflows
    x[0, 16] = F32(100.0)  # the calibrated amax
    out = fake_quantize_nvfp4_activations(x, float(F32(2688) / F32(100)))
    assert not out[0, :16].any() and np.isclose(out[0, 16], 100.0, rtol=1e-6)
    # a scale calibrated on the small block keeps it (per-block scales alone would too) and clips the large one
    out = fake_quantize_nvfp4_activations(x, float(F32(2688) / F32(1e-4)))
    assert np.isclose(out[0, 0], 1e-4, rtol=1e-6) and np.isclose(out[0, 16], 1e-4, rtol=1e-6)  # 100 clipped
