"""Conformance of NVFP4 quantize / dequantize / GEMV / GEMM (impnb/reference/nvfp4.py) to docs/numerics.md §3.

The formulas are checked from the outside: through the decoded codes and scales (an independent float64
re-derivation), the per-block error bound, the two layouts against each other, and the products against float64.
Byte identity with compressed-tensors and ModelOpt themselves is tests/test_oracle_quant.py (needs those libraries).
The reference is looked up through its module at call time, so tests/test_known_engine_bugs.py can inject a bug.
"""
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from impnb import FormatError, NVFP4Tensor
from impnb.reference import nvfp4 as ref
from impnb.reference.fp4 import e2m1_decode, fp4_unpack
from impnb.reference.fp8 import fp8_e4m3_decode
from impnb import tolerances
from impnb.errors import CrossCheckError
from impnb.tolerances import _gamma_fp32, _gamma_fp32_probabilistic
from impnb.conformance.cases.nvfp4 import planted_weight, random_tensor

F32 = np.float32
LAYOUTS = ("compressed-tensors", "modelopt")


def parts(t):
    """(q [N, K], s [N, G], scalar) of an NVFP4Tensor as float64: decoded codes and scales."""
    q = e2m1_decode(fp4_unpack(t.packed)).astype(np.float64)
    return q, fp8_e4m3_decode(t.scales).astype(np.float64), float(t.global_scale)


def block_unit(t):
    """[N, G] float64: the value of one E2M1 unit in each block, s / gs or s * ws2."""
    _, s, g = parts(t)
    return s / g if t.layout == "compressed-tensors" else s * g


def assert_gemv_within_bound(y, t, x):
    """|y - W x| <= gamma~_{K+2}(8) * |W| |x| (the probabilistic bound the tolerance table builds on, which is also
    inside the deterministic gamma_{K+2}) against the float64 product of the exact dequantized W."""
    __tracebackhide__ = True
    w = ref.nvfp4_dequantize(t).astype(np.float64)
    exact = w @ x.astype(np.float64)
    k = t.shape[1] + 2
    limit = min(_gamma_fp32_probabilistic(k), _gamma_fp32(k)) * (np.abs(w) @ np.abs(x.astype(np.float64)))
    err = np.abs(y.astype(np.float64) - exact)
    worst = int(np.argmax(err - limit))
    assert np.all(err <= limit), f"row {worst}: |y - Wx| = {err[worst]:.3g} > bound {limit[worst]:.3g}"


# ---- quantize: formulas, layout by layout ---------------------------------------------------------------------------
@pytest.mark.parametrize("layout", LAYOUTS)
def test_shapes_dtypes_and_logical_k(rng, layout):
    t = ref.nvfp4_quantize(planted_weight(rng, 5, 48), layout=layout)
    assert t.layout == layout and t.shape == (5, 48)
    assert t.packed.shape == (5, 24) and t.packed.dtype == np.uint8
    assert t.scales.shape == (5, 3) and t.scales.dtype == np.uint8


def test_ct_global_scale_is_2688_over_amax(rng):
    w = planted_weight(rng, 4, 64)
    t = ref.nvfp4_quantize(w, layout="compressed-tensors")
    amax = float(np.max(np.abs(w)))
    assert abs(t.global_scale - 2688.0 / amax) <= 2 * np.spacing(F32(t.global_scale))


def test_modelopt_scale_2_is_amax_over_2688(rng):
    w = planted_weight(rng, 4, 64)
    t = ref.nvfp4_quantize(w, layout="modelopt")
    assert t.global_scale == float(F32(np.max(np.abs(w))) / F32(2688.0))


@pytest.mark.parametrize("layout", LAYOUTS)
def test_block_scale_is_fp8_of_block_amax_over_6_in_the_tensor_domain(rng, layout):
    """s_b = fp8_rne(amax_b / 6 * gs) (= amax_b / (6 ws2)) on ordinary blocks: within FP8's half-ulp (2^-4)."""
    w = planted_weight(rng, 6, 64)
    t = ref.nvfp4_quantize(w, layout=layout)
    _, s, g = parts(t)
    target = np.max(np.abs(w.reshape(6, 4, 16)), axis=-1) / 6.0 * (g if layout == "compressed-tensors" else 1 / g)
    normal = target >= 2.0 ** -6
    assert np.all(np.abs(s[normal] - target[normal]) <= target[normal] * 2.0 ** -4 * 1.0001)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_the_amax_block_gets_scale_448(rng, layout):
    """The block holding the tensor amax maps it to 6 * 448: scale byte 0x7E (0x77 halves this block)."""
    w = planted_weight(rng, 5, 48)
    n, k = np.unravel_index(np.argmax(np.abs(w)), w.shape)
    t = ref.nvfp4_quantize(w, layout=layout)
    assert t.scales[n, k // 16] == 0x7E
    assert abs(ref.nvfp4_dequantize(t)[n, k]) == pytest.approx(abs(w[n, k]), rel=1e-6)


def test_ct_zero_and_underflow_blocks_get_0x20_and_zero_codes(rng):
    w = planted_weight(rng, 4, 32)  # row 0 block 0 all zero; row 3 last block underflows FP8
    t = ref.nvfp4_quantize(w, layout="compressed-tensors")
    assert t.scales[0, 0] == 0x20 and t.scales[3, 1] == 0x20
    codes = fp4_unpack(t.packed)
    assert np.all(codes[0, :16] == 0) and np.all(codes[3, 16:] & 0x7 == 0)
    assert np.all(ref.nvfp4_dequantize(t)[3, 16:] == 0)  # the flushed block dequantizes to zero


def test_modelopt_zero_block_gets_1_and_underflow_block_keeps_2_pow_minus_9(rng):
    w = planted_weight(rng, 4, 32)
    t = ref.nvfp4_quantize(w, layout="modelopt")
    assert t.scales[0, 0] == 0x38 and t.scales[3, 1] == 0x01
    assert np.all(ref.nvfp4_dequantize(t)[0, :16] == 0)


def test_all_zero_tensor_ct_gives_global_scale_1():
    t = ref.nvfp4_quantize(np.zeros((2, 32), F32), layout="compressed-tensors")
    assert t.global_scale == 1.0 and np.all(t.scales == 0x20) and np.all(t.packed == 0)
    assert np.all(ref.nvfp4_dequantize(t) == 0)


def test_all_zero_tensor_modelopt_is_unusable_and_contributes_zeros():
    with pytest.warns(RuntimeWarning, match="contribute zeros"):
        t = ref.nvfp4_quantize(np.zeros((2, 32), F32), layout="modelopt")
    assert t.global_scale == 0.0 and np.all(t.scales & 0x7F == 0x7F) and np.all(t.packed == 0x77)  # as ModelOpt
    assert not t.usable
    assert np.all(ref.nvfp4_dequantize(t) == 0)
    assert np.all(ref.nvfp4_gemv(t, np.ones(32, F32)) == 0)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_negative_zero_and_negative_underflow_codes(layout):
    w = np.zeros((1, 16), F32)
    w[0, :4] = [-0.0, -1e-4, 6.0, -6.0]  # -1e-4 rounds to zero in a block of amax 6
    codes = fp4_unpack(ref.nvfp4_quantize(w, layout=layout).packed)[0]
    assert codes[:4].tolist() == [0x0, 0x8, 0x7, 0xF]


# ---- quantize: properties ----------------------------------------------------------------------------------------
def _hypothesis_weight(seed, n, g, spread):
    rng = np.random.default_rng(seed)
    rows = rng.standard_normal((n, g, 16)) * np.exp2(rng.uniform(-spread, 0, (n, g, 1)))
    return (rows * np.exp2(rng.uniform(-20, 20))).reshape(n, g * 16).astype(F32)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2 ** 32 - 1), st.integers(1, 4), st.integers(1, 4), st.sampled_from(LAYOUTS))
def test_per_block_quantization_error_bound(seed, n, g, layout):
    """|x - x_hat| <= u_b (one E2M1 unit of the block) when the block scale is an FP8 normal (blocks within 2^6 of
    the tensor amax): the E2M1 half-gap is <= 1 unit and saturation costs < 0.4 unit (scale error <= 2^-4)."""
    w = _hypothesis_weight(seed, n, g, spread=5.0)
    t = ref.nvfp4_quantize(w, layout=layout)
    err = np.abs(ref.nvfp4_dequantize(t).astype(np.float64) - w).reshape(n, g, 16)
    unit = block_unit(t)[..., None]  # [N, G, 1]
    assert np.all(err <= unit * (1 + 2.0 ** -20))


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2 ** 32 - 1), st.integers(1, 4), st.integers(1, 4), st.sampled_from(LAYOUTS))
def test_layout_conversion_preserves_dequant(seed, n, g, layout):
    """ws2 = 1/gs: the same bytes dequantize alike in the other convention, to <= 2 float32 ulp (docs/numerics.md)."""
    t = ref.nvfp4_quantize(_hypothesis_weight(seed, n, g, spread=12.0), layout=layout)
    other = "modelopt" if layout == "compressed-tensors" else "compressed-tensors"
    a, b = ref.nvfp4_dequantize(t), ref.nvfp4_dequantize(t.to_layout(other))
    assert np.all(np.abs(a.astype(np.float64) - b) <= 2 * np.spacing(np.abs(a)))
    np.testing.assert_array_equal(t.to_layout(other).to_layout(layout).packed, t.packed)


def test_the_two_producers_agree_on_scale_bytes_of_ordinary_blocks(rng):
    w = planted_weight(rng, 16, 128, scale=0.02)
    ct, mo = (ref.nvfp4_quantize(w, layout=lay) for lay in LAYOUTS)
    ordinary = (ct.scales != 0x20) & (mo.scales > 0x08)  # not zero/flushed blocks, scales FP8 normal
    np.testing.assert_array_equal(ct.scales[ordinary], mo.scales[ordinary])
    codes_ct, codes_mo = fp4_unpack(ct.packed), fp4_unpack(mo.packed)
    assert np.mean(codes_ct != codes_mo) < 0.01  # only a few elements next to E2M1 boundaries differ


# ---- dequantize ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("layout", LAYOUTS)
def test_dequant_is_q_times_block_unit_within_one_rounding(rng, layout):
    t = random_tensor(rng, 6, 64, layout)
    q, s, g = parts(t)
    exact = q.reshape(6, 4, 16) * (s / g if layout == "compressed-tensors" else s * g)[..., None]
    got = ref.nvfp4_dequantize(t)
    assert got.dtype == np.float32 and got.shape == (6, 64)
    assert np.all(np.abs(got.reshape(6, 4, 16) - exact) <= 2 * np.spacing(np.abs(exact).astype(F32)))


def test_dequant_follows_each_layouts_own_order(rng):
    """CT: q * fl32(s / gs); ModelOpt: q * fl32(s * ws2) - bit for bit."""
    for layout in LAYOUTS:
        t = random_tensor(rng, 4, 32, layout)
        s, g = fp8_e4m3_decode(t.scales), F32(t.global_scale)
        unit = s / g if layout == "compressed-tensors" else s * g  # one float32 rounding
        q = e2m1_decode(fp4_unpack(t.packed)).reshape(4, 2, 16)
        np.testing.assert_array_equal(ref.nvfp4_dequantize(t), (q * unit[..., None]).reshape(4, 32))


# ---- GEMV / GEMM ----------------------------------------------------------------------------------------------------
@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2 ** 32 - 1), st.integers(1, 6), st.integers(1, 24), st.sampled_from(LAYOUTS))
def test_gemv_equals_float64_dequant_then_matmul_within_bound(seed, n, g, layout):
    rng = np.random.default_rng(seed)
    t = ref.nvfp4_quantize(_hypothesis_weight(seed, n, g, spread=8.0), layout=layout)
    x = (rng.standard_normal(16 * g) * np.exp2(rng.uniform(-10, 10))).astype(F32)
    y = ref.nvfp4_gemv(t, x)
    assert y.dtype == np.float32 and y.shape == (n,)
    assert_gemv_within_bound(y, t, x)


def test_gemv_on_a_real_shape_is_within_bound(rng):
    t = ref.nvfp4_quantize(planted_weight(rng, 64, 2816), layout="compressed-tensors")
    x = rng.standard_normal(2816).astype(F32)
    assert_gemv_within_bound(ref.nvfp4_gemv(t, x), t, x)


def test_gemm_rows_equal_gemv_bit_for_bit(rng):
    t = ref.nvfp4_quantize(planted_weight(rng, 7, 80), layout="modelopt")
    x = rng.standard_normal((3, 80)).astype(F32)
    y = ref.nvfp4_gemm(t, x)
    assert y.shape == (3, 7) and y.dtype == np.float32
    for m in range(3):
        np.testing.assert_array_equal(y[m], ref.nvfp4_gemv(t, x[m]))


@pytest.mark.parametrize("n,k", [(704, 2816), (2816, 704)], ids=["up_704x2816", "down_2816x704"])
def test_gemm_m11_at_gemma4_expert_shapes_is_within_bound(rng, n, k):
    """M > 1 at these expert shapes went wrong in a per-row loop while M = 1 worked."""
    t = ref.nvfp4_quantize(planted_weight(rng, n, k, bf16=True), layout="compressed-tensors")
    x = rng.standard_normal((11, k)).astype(F32)
    y = ref.nvfp4_gemm(t, x)
    assert y.shape == (11, n)
    for m in range(11):
        assert_gemv_within_bound(y[m], t, x[m])


def test_gemv_follows_the_documented_blocked_order(rng):
    t = random_tensor(rng, 3, 48, "compressed-tensors")
    x = rng.standard_normal(48).astype(F32)
    w = ref.nvfp4_dequantize(t)
    y = np.zeros(3, F32)
    for b in range(3):
        p = w[:, 16 * b] * x[16 * b]
        for j in range(1, 16):
            p = p + w[:, 16 * b + j] * x[16 * b + j]
        y = y + p
    np.testing.assert_array_equal(ref.nvfp4_gemv(t, x), y)


def _real_gemv_case(rng):
    t = random_tensor(rng, 256, 2816, "modelopt")
    return t, rng.standard_normal(2816).astype(F32)


@pytest.mark.parametrize("order", ["blas", "sequential", "float64_rounded"])
def test_tolerance_accepts_other_float32_summation_orders(rng, order):
    t, x = _real_gemv_case(rng)
    w = ref.nvfp4_dequantize(t)
    if order == "blas":
        fast = w @ x
    elif order == "sequential":
        fast = np.zeros(t.shape[0], F32)
        for k in range(t.shape[1]):
            fast += w[:, k] * x[k]
    else:
        fast = (w.astype(np.float64) @ x.astype(np.float64)).astype(F32)
    tolerances.assert_close("nvfp4_gemv", ref.nvfp4_gemv(t, x), fast, args=(t, x))


@pytest.mark.parametrize("bug", ["bf16_activations", "last_block_dropped", "one_block_scale_off_by_one_code"])
def test_tolerance_rejects_precision_and_indexing_bugs(rng, bug):
    import ml_dtypes
    t, x = _real_gemv_case(rng)
    w = ref.nvfp4_dequantize(t)
    if bug == "bf16_activations":
        fast = w @ x.astype(ml_dtypes.bfloat16).astype(F32)
    elif bug == "last_block_dropped":
        fast = w[:, :-16] @ x[:-16]
    else:
        scales = t.scales.copy()
        scales[7, np.argmax(scales[7])] -= 1  # the row's dominant block: one FP8 code (1/16 .. 1/8) lower
        fast = ref.nvfp4_dequantize(NVFP4Tensor(t.packed, scales, t.global_scale, t.layout)) @ x
    with pytest.raises(CrossCheckError, match="nvfp4_gemv"):
        tolerances.assert_close("nvfp4_gemv", ref.nvfp4_gemv(t, x), fast, args=(t, x))


# ---- guards -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("bad", [0.0, np.inf, -np.inf, np.nan])
def test_unusable_global_scale_warns_and_contributes_zeros(rng, bad):
    t = random_tensor(rng, 3, 32, "compressed-tensors")
    with pytest.warns(RuntimeWarning, match="contribute zeros"):
        bad_t = NVFP4Tensor(t.packed, t.scales, bad, "compressed-tensors")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the reference must not divide by it (no overflow / invalid warnings)
        assert np.all(ref.nvfp4_dequantize(bad_t) == 0)
        assert np.all(ref.nvfp4_gemv(bad_t, np.ones(32, F32)) == 0)
        assert np.all(ref.nvfp4_gemm(bad_t, np.ones((2, 32), F32)) == 0)


def test_k_not_multiple_of_16_is_a_format_error():
    with pytest.raises(FormatError, match="multiple of 16"):
        NVFP4Tensor(np.zeros((2, 7), np.uint8), np.zeros((2, 1), np.uint8), 1.0)
    with pytest.raises(FormatError, match="multiple of 16"):
        ref.nvfp4_quantize(np.zeros((2, 24), F32))


def test_scale_shape_mismatch_is_a_format_error():
    with pytest.raises(FormatError, match="does not pair"):
        NVFP4Tensor(np.zeros((2, 16), np.uint8), np.zeros((2, 4), np.uint8), 1.0)  # K = 32 needs 2 scales


def test_activation_length_is_the_logical_k_not_the_packed_width(rng):
    """K is 2 x the packed width. A vector of packed-width length is an error, never a silent result."""
    t = random_tensor(rng, 3, 32, "modelopt")
    assert t.shape == (3, 32)
    with pytest.raises(ValueError, match="K = 32"):
        ref.nvfp4_gemv(t, np.ones(16, F32))
    with pytest.raises(ValueError, match="K = 32"):
        ref.nvfp4_gemm(t, np.ones((2, 16), F32))


@pytest.mark.parametrize("w,err", [(np.ones((2, 16), np.float64), TypeError), (np.ones(16, F32), FormatError),
                                   (np.full((1, 16), np.nan, F32), ValueError)], ids=["float64", "1d", "nan"])
def test_quantize_rejects_bad_weights(w, err):
    with pytest.raises(err, match="nvfp4_quantize"):
        ref.nvfp4_quantize(w)


def test_quantize_rejects_an_unknown_layout():
    with pytest.raises(ValueError, match="layout"):
        ref.nvfp4_quantize(np.ones((1, 16), F32), layout="gguf")
