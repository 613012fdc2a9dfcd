"""Bugs that real NVFP4 engines shipped are caught: each is injected into the reference and the conformance tests
that must catch it are run against it and must FAIL.

    FP8 clamp   an E4M3 encoder that treats exponent field 15 as overflow and returns 0x77 (= 240) for every value
                >= 256 (kekzl/imp nvfp4_quant.cu float_to_fp8_e4m3): 300 -> 0x77 instead of 0x79, and the
                amax block's scale 448 is re-encoded as 240 (outputs came out at 0.53x)
    packed K    K taken from the packed width (K/2) instead of 2 x packed width
    divisor     compressed-tensors' weight_global_scale (a DIVISOR) used as a multiplier
A passing run of this file is the proof that the suite is not blind to them.
"""
import numpy as np
import pytest

from impnb.formats import NVFP4Tensor
from impnb.reference import fp8, nvfp4
from tests import test_fp8, test_golden_vectors, test_nvfp4

F32 = np.float32
CAUGHT = (AssertionError, pytest.fail.Exception)  # a failed assert, or a pytest.raises that saw no error


def _rng():
    return np.random.default_rng(20260000)


# ---- FP8 clamp: exponent field 15 treated as overflow -> 0x77 -----------------------------------------------------
def _encoder_with_0x77_bug(x, *, saturate=True):
    codes = _correct_encode(x, saturate=saturate)
    magnitude = codes & 0x7F
    overflowed = (magnitude >= 0x78) & (magnitude != 0x7F)  # every finite value >= 256
    return np.where(overflowed, 0x77 | (codes & 0x80), codes).astype(np.uint8)


_correct_encode = fp8.fp8_e4m3_encode


@pytest.fixture
def encoder_0x77(monkeypatch):
    monkeypatch.setattr(fp8, "fp8_e4m3_encode", _encoder_with_0x77_bug)
    monkeypatch.setattr(nvfp4, "fp8_e4m3_encode", _encoder_with_0x77_bug)  # the quantizer's block scales


def test_injected_encoder_really_returns_0x77_for_300(encoder_0x77):
    assert int(fp8.fp8_e4m3_encode(F32(300.0))) == 0x77


def test_canonical_table_catches_0x77(encoder_0x77):
    with pytest.raises(CAUGHT):
        test_fp8.test_canonical_saturating(300.0, 0x79)
    with pytest.raises(CAUGHT):
        test_fp8.test_canonical_saturating(448.0, 0x7E)


def test_float16_sweep_catches_0x77(encoder_0x77):
    with pytest.raises(CAUGHT):
        test_fp8.test_every_float16_value_saturating_matches_ml_dtypes_clip_then_cast()


@pytest.mark.parametrize("layout", ["compressed-tensors", "modelopt"])
def test_amax_block_scale_catches_0x77(encoder_0x77, layout):
    with pytest.raises(CAUGHT):
        test_nvfp4.test_the_amax_block_gets_scale_448(_rng(), layout)


def test_golden_vectors_catch_0x77(encoder_0x77):
    with pytest.raises(CAUGHT):
        test_golden_vectors.test_regenerated_vectors_equal_the_committed_ones()


# ---- packed K: K taken from the packed width ----------------------------------------------------------------------
_correct_dequantize = nvfp4.nvfp4_dequantize


def _gemv_with_packed_k(t, x):
    k = t.packed.shape[1]  # the bug: K/2
    w = _correct_dequantize(t)[:, :k]
    return (w @ np.asarray(x, F32)[:k]).astype(F32)


def test_gemv_bound_catches_packed_k(monkeypatch):
    monkeypatch.setattr(nvfp4, "nvfp4_gemv", _gemv_with_packed_k)
    with pytest.raises(CAUGHT):
        test_nvfp4.test_gemv_on_a_real_shape_is_within_bound(_rng())
    with pytest.raises(CAUGHT):
        test_nvfp4.test_activation_length_is_the_logical_k_not_the_packed_width(_rng())


def test_shape_test_catches_packed_k(monkeypatch):
    monkeypatch.setattr(NVFP4Tensor, "shape", property(lambda t: (t.packed.shape[0], t.packed.shape[1])))
    with pytest.raises(CAUGHT):
        test_nvfp4.test_shapes_dtypes_and_logical_k(_rng(), "compressed-tensors")


# ---- divisor: the compressed-tensors global scale used as a multiplier ----------------------------------------
def _multiplier_for_every_layout(t):
    return fp8.fp8_e4m3_decode(t.scales) * F32(t.global_scale)  # the bug: s * gs for a CT divisor


@pytest.fixture
def ct_scale_as_multiplier(monkeypatch):
    monkeypatch.setattr(nvfp4, "_block_multiplier", _multiplier_for_every_layout)


def test_dequant_order_catches_ct_multiplier(ct_scale_as_multiplier):
    with pytest.raises(CAUGHT):
        test_nvfp4.test_dequant_follows_each_layouts_own_order(_rng())


def test_error_bound_catches_ct_multiplier(ct_scale_as_multiplier):
    with pytest.raises(CAUGHT):
        test_nvfp4.test_the_amax_block_gets_scale_448(_rng(), "compressed-tensors")
    with pytest.raises(CAUGHT):
        test_nvfp4.test_per_block_quantization_error_bound()


def test_layout_conversion_catches_ct_multiplier(ct_scale_as_multiplier):
    with pytest.raises(CAUGHT):
        test_nvfp4.test_layout_conversion_preserves_dequant()


def test_golden_vectors_catch_ct_multiplier(ct_scale_as_multiplier):
    with pytest.raises(CAUGHT):
        test_golden_vectors.test_regenerated_vectors_equal_the_committed_ones()
