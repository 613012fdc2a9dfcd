"""Mutants of the format ops: FP8 E4M3, E2M1 and nibble packing, NVFP4, W4A4 activation quantization."""
from __future__ import annotations

import numpy as np

from ...formats import GROUP, NVFP4Tensor
from ...reference import fp8 as ref8
from ...reference.fp4 import DECODE_TABLE as E2M1_TABLE, TIES, TIE_GOES_UP, fp4_pack, fp4_unpack
from ...reference.fp8 import fp8_e4m3_decode
from ...reference.nvfp4 import _check_weight
from ...reference.nvfp4_act import activation_divisor_scale
from . import copy_of, mutant

F32 = np.float32


# ---- FP8 E4M3 --------------------------------------------------------------------------------------------------
@copy_of("fp8_e4m3_encode")
def fp8_encode(x, *, saturate=True, max_normal=448.0, saturated_code=0x7E, ties_even=True, flush_subnormals=False,
               zero_keeps_sign=True, nan_keeps_sign=True, overflow_after_rounding=True, inf_saturates=True,
               honour_saturate=True):
    xs = np.asarray(x)
    with np.errstate(invalid="ignore"):
        a = np.abs(xs.astype(np.float64))
    negative = np.signbit(xs) if zero_keeps_sign else (xs < 0)
    nan = np.isnan(a)
    a = np.where(nan, 0.0, a)
    finite = np.isfinite(a)
    safe = np.where(finite & (a > 0), a, 1.0)
    e = np.maximum(np.frexp(safe)[1] - 1, -6)
    quantum = np.ldexp(1.0, e - 3)
    steps = np.rint(safe / quantum) if ties_even else np.floor(safe / quantum + 0.5)
    rounded = np.where(finite, np.where(a > 0, steps * quantum, 0.0), np.inf)
    if flush_subnormals:
        rounded = np.where(a < 2.0 ** -6, 0.0, rounded)
    overflow = (rounded if overflow_after_rounding else a) > max_normal
    magnitude = ref8._magnitude_code(np.where(overflow, 0.0, np.minimum(rounded, 448.0)))
    saturating = saturate or not honour_saturate
    magnitude = np.where(overflow, saturated_code if saturating else 0x7F, magnitude)
    if not inf_saturates:
        magnitude = np.where(np.isinf(a), 0x7F, magnitude)
    magnitude = np.where(nan, 0x7F, magnitude)
    sign = np.where(negative & (nan_keeps_sign | ~nan), 0x80, 0)
    return (magnitude.astype(np.uint8) | sign.astype(np.uint8)).astype(np.uint8)


mutant("fp8_e4m3_encode", "clamp_0x77", "treats exponent field 15 as reserved: saturates at 0x77 = 240, not 0x7E "
       "= 448", fp8_encode, max_normal=240.0, saturated_code=0x77)
mutant("fp8_e4m3_encode", "ties_away", "rounds ties away from zero instead of to even", fp8_encode, ties_even=False)
mutant("fp8_e4m3_encode", "flush_subnormals", "flushes |x| < 2^-6 to zero (no subnormals)", fp8_encode,
       flush_subnormals=True)
mutant("fp8_e4m3_encode", "negative_zero_lost", "takes the sign from x < 0, so -0.0 encodes as 0x00", fp8_encode,
       zero_keeps_sign=False)
mutant("fp8_e4m3_encode", "nan_sign_lost", "encodes every NaN as 0x7F, dropping the sign of -NaN", fp8_encode,
       nan_keeps_sign=False)
mutant("fp8_e4m3_encode", "overflow_before_rounding", "decides overflow on |x| > 448 before rounding (448 < |x| "
       "<= 464 must round to 448)", fp8_encode, overflow_after_rounding=False)
mutant("fp8_e4m3_encode", "ignores_saturate_flag", "always saturates, even with saturate=False", fp8_encode,
       honour_saturate=False)
mutant("fp8_e4m3_encode", "inf_to_nan_when_saturating", "encodes +-inf as NaN even in SATFINITE mode", fp8_encode,
       inf_saturates=False)


@copy_of("fp8_e4m3_decode")
def fp8_decode(codes, *, exponent15_is_nan=False, subnormal_implicit_one=False, nan_sign_kept=True):
    c = np.asarray(codes).astype(np.intp)
    e, m = (c >> 3) & 0xF, c & 0x7
    lead = 1.0 if subnormal_implicit_one else 0.0
    value = np.where(e > 0, np.ldexp(1.0 + m / 8.0, e - 7), np.ldexp(lead + m / 8.0, -6))
    nan = ((c & 0x7F) == 0x7F) | ((e == 15) & exponent15_is_nan)
    value = np.where(nan, np.nan, value)
    negative = (c & 0x80) > 0 if nan_sign_kept else ((c & 0x80) > 0) & ~nan
    return np.where(negative, -value, value).astype(F32)


mutant("fp8_e4m3_decode", "exponent15_is_nan", "decodes exponent field 15 (0x78..0x7E = 256..448) as NaN, IEEE "
       "style", fp8_decode, exponent15_is_nan=True)
mutant("fp8_e4m3_decode", "subnormal_implicit_one", "gives subnormal codes an implicit leading 1", fp8_decode,
       subnormal_implicit_one=True)
mutant("fp8_e4m3_decode", "nan_sign_lost", "decodes 0xFF as +NaN", fp8_decode, nan_sign_kept=False)


# ---- E2M1 and packing ------------------------------------------------------------------------------------------
@copy_of("e2m1_encode")
def e2m1_encode(x, *, ties_even=True, negative_zero_code=False, nan_code=0x7, inf_saturates=True,
                sign_of_rounded_zero=True):
    xs = np.asarray(x)
    with np.errstate(invalid="ignore"):
        a = np.abs(xs.astype(np.float64))
    magnitude = np.zeros(a.shape, dtype=np.uint8)
    for tie, up in zip(TIES, TIE_GOES_UP):
        magnitude += (a >= tie) if (up or not ties_even) else (a > tie)
    if not inf_saturates:
        magnitude = np.where(np.isinf(a), 0, magnitude).astype(np.uint8)
    magnitude = np.where(np.isnan(a), nan_code, magnitude)
    negative = np.signbit(xs) & ~np.isnan(a) if negative_zero_code else xs < 0
    if not sign_of_rounded_zero:
        negative = negative & (magnitude > 0)
    return (magnitude | np.where(negative, 0x8, 0)).astype(np.uint8)


mutant("e2m1_encode", "ties_away", "rounds E2M1 ties away from zero (0.25 -> 0.5, 2.5 -> 3)", e2m1_encode,
       ties_even=False)
mutant("e2m1_encode", "negative_zero_code", "encodes -0.0 as 0x8 (sign bit instead of x < 0)", e2m1_encode,
       negative_zero_code=True)
mutant("e2m1_encode", "nan_to_zero", "encodes NaN as 0x0 instead of 0x7", e2m1_encode, nan_code=0)
mutant("e2m1_encode", "inf_to_zero", "flushes +-inf to zero instead of saturating at +-6", e2m1_encode,
       inf_saturates=False)
mutant("e2m1_encode", "rounded_zero_unsigned", "drops the sign of negative values that round to zero (0x0, not "
       "0x8)", e2m1_encode, sign_of_rounded_zero=False)


@copy_of("e2m1_decode")
def e2m1_decode(codes, *, negative_zero=True):
    table = E2M1_TABLE.copy() if negative_zero else np.where(E2M1_TABLE == 0, F32(0.0), E2M1_TABLE).astype(F32)
    return table[np.asarray(codes).astype(np.intp)]


mutant("e2m1_decode", "negative_zero_positive", "decodes 0x8 as +0.0", e2m1_decode, negative_zero=False)


@copy_of("fp4_pack")
def pack(codes, *, low_nibble_first=True):
    c = np.asarray(codes).astype(np.uint8)
    first, second = (c[..., 0::2], c[..., 1::2]) if low_nibble_first else (c[..., 1::2], c[..., 0::2])
    return (first | (second << 4)).astype(np.uint8)


@copy_of("fp4_unpack")
def unpack(packed, *, low_nibble_first=True):
    p = np.asarray(packed)
    out = np.empty(p.shape[:-1] + (2 * p.shape[-1],), dtype=np.uint8)
    lo, hi = p & 0x0F, p >> 4
    out[..., 0::2], out[..., 1::2] = (lo, hi) if low_nibble_first else (hi, lo)
    return out


mutant("fp4_pack", "high_nibble_first", "puts element 2i in the high nibble", pack, low_nibble_first=False)
mutant("fp4_unpack", "high_nibble_first", "reads element 2i from the high nibble", unpack, low_nibble_first=False)


# ---- NVFP4 -----------------------------------------------------------------------------------------------------
@copy_of("nvfp4_quantize")
def nvfp4_quantize(w, *, layout="compressed-tensors", scale_encoder=fp8_encode, ct_true_division=False,
                   ct_zero_scale_replaced=True, modelopt_min_clamp=True, ct_stores_multiplier=False,
                   reciprocal_multiply=False, modelopt_ws2_via_reciprocal=False, scale_product_first=False):
    w = _check_weight(w)
    blocks = w.reshape(w.shape[0], -1, GROUP)
    amax_b = np.max(np.abs(blocks), axis=-1)
    amax = np.max(amax_b) if w.size else F32(0.0)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        if layout == "compressed-tensors":
            amax = np.maximum(F32(amax), np.finfo(F32).tiny)
            gs = F32(2688.0) / amax if ct_true_division else (F32(1.0) / amax) * F32(2688.0)
            gs = gs if np.isfinite(gs) else F32(1.0)
            block_scale = (gs * amax_b) / F32(6.0) if scale_product_first else gs * (amax_b / F32(6.0))
            codes = scale_encoder(np.clip(block_scale, F32(-448.0), F32(448.0)))
            if ct_zero_scale_replaced:
                codes = np.where(fp8_e4m3_decode(codes) == 0, 0x20, codes).astype(np.uint8)
            divisor = fp8_e4m3_decode(codes) / gs
            scaled = np.clip(_divide(blocks, divisor[..., None], reciprocal_multiply), F32(-6.0), F32(6.0))
            scalar = F32(1.0) / gs if ct_stores_multiplier else gs
        else:
            scalar = (F32(1.0) / (F32(2688.0) / F32(amax)) if modelopt_ws2_via_reciprocal
                      else F32(amax) / F32(2688.0))
            s = (amax_b / F32(6.0)) / scalar if scale_product_first else amax_b / (F32(6.0) * scalar)
            s = np.where(s == 0, F32(1.0), s)
            codes = scale_encoder(np.clip(s, F32(2.0 ** -9) if modelopt_min_clamp else F32(0.0), F32(448.0)))
            scaled = _divide(blocks, (fp8_e4m3_decode(codes) * scalar)[..., None], reciprocal_multiply)
        q = e2m1_encode(scaled.reshape(w.shape))
    return NVFP4Tensor(fp4_pack(q), codes.astype(np.uint8), float(scalar), layout)


def _divide(x, d, reciprocal_multiply):
    return x * (F32(1.0) / d) if reciprocal_multiply else x / d


mutant("nvfp4_quantize", "scale_clamp_0x77", "encodes block scales with the 0x77 = 240 FP8 clamp", nvfp4_quantize,
       scale_encoder=lambda x: fp8_encode(x, max_normal=240.0, saturated_code=0x77))
mutant("nvfp4_quantize", "ct_true_division", "computes gs = 2688 / amax in one division (compressed-tensors "
       "takes the reciprocal, then multiplies)", nvfp4_quantize, ct_true_division=True)
mutant("nvfp4_quantize", "ct_zero_scale_kept", "keeps a zero block scale (compressed-tensors writes 0x20)",
       nvfp4_quantize, ct_zero_scale_replaced=False)
mutant("nvfp4_quantize", "modelopt_no_min_clamp", "skips ModelOpt's 2^-9 lower clamp of block scales",
       nvfp4_quantize, modelopt_min_clamp=False)
mutant("nvfp4_quantize", "ct_reciprocal_global_scale", "stores the reciprocal 1 / gs in a compressed-tensors "
       "tensor (a multiplier where a divisor belongs)", nvfp4_quantize, ct_stores_multiplier=True)
mutant("nvfp4_quantize", "block_scale_operation_order", "computes the block scale as (gs * amax) / 6 "
       "(compressed-tensors) or (amax / 6) / ws2 (ModelOpt): one rounding moves scales that sit on FP8 ties",
       nvfp4_quantize, scale_product_first=True)
mutant("nvfp4_quantize", "block_scale_ties_away", "rounds block scales to FP8 with ties away from zero",
       nvfp4_quantize, scale_encoder=lambda x: fp8_encode(x, ties_even=False))
mutant("nvfp4_quantize", "reciprocal_multiply", "scales elements by x * (1 / d) instead of dividing by the block "
       "divisor d (two roundings: codes flip next to E2M1 ties)", nvfp4_quantize, reciprocal_multiply=True)
mutant("nvfp4_quantize", "modelopt_ws2_via_reciprocal", "computes ws2 as 1 / (2688 / amax) instead of amax / 2688",
       nvfp4_quantize, modelopt_ws2_via_reciprocal=True)


def _block_multiplier(t, *, ct_reciprocal_multiply=False, ct_scale_multiplies=False, scales_column_major=False):
    n, g = t.scales.shape
    scales = t.scales.reshape(g, n).T if scales_column_major else t.scales
    s, gs = fp8_e4m3_decode(scales), F32(t.global_scale)
    if t.layout != "compressed-tensors" or ct_scale_multiplies:
        return s * gs
    return s * (F32(1.0) / gs) if ct_reciprocal_multiply else s / gs


@copy_of("nvfp4_dequantize")
def nvfp4_dequantize(t, *, zero_unusable=True, **switches):
    t = t.to_host()
    n, k = t.shape
    if zero_unusable and not t.usable:
        return np.zeros((n, k), F32)
    q = E2M1_TABLE[fp4_unpack(t.packed)].reshape(n, -1, GROUP)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        return (q * _block_multiplier(t, **switches)[..., None]).reshape(n, k)


mutant("nvfp4_dequantize", "ct_reciprocal_multiply", "multiplies by a precomputed 1 / gs (two roundings) "
       "instead of dividing by gs", nvfp4_dequantize, ct_reciprocal_multiply=True)
mutant("nvfp4_dequantize", "ct_global_scale_multiplies", "multiplies by the compressed-tensors global scale (it "
       "is a divisor)", nvfp4_dequantize, ct_scale_multiplies=True)
mutant("nvfp4_dequantize", "unusable_scale_not_zeroed", "uses a 0 / inf global scale as it is (inf and NaN out)",
       nvfp4_dequantize, zero_unusable=False)


def _matmul(t, x, *, packed_k=False, float16_partials=False, **switches):
    """[M, N]: block partials then blocks in order, as the reference (with the mutants' switches)."""
    w = nvfp4_dequantize(t, **switches)
    n, k = w.shape
    blocks = (t.packed.shape[1] if packed_k else k) // GROUP
    acc = np.float16 if float16_partials else F32
    out = np.zeros((x.shape[0], n), F32)
    if not t.usable:
        return out
    for g in range(blocks):
        partial = np.zeros((x.shape[0], n), acc)
        for j in range(g * GROUP, (g + 1) * GROUP):
            partial += (x[:, None, j] * w[None, :, j]).astype(acc)
        out += partial.astype(F32)
    return out


@copy_of("nvfp4_gemv")
def nvfp4_gemv(t, x, **switches):
    return _matmul(t.to_host(), np.asarray(x, F32)[None, :], **switches)[0]


@copy_of("nvfp4_gemm")
def nvfp4_gemm(t, x, *, rows_read_transposed=False, **switches):
    x = np.asarray(x, F32)
    if rows_read_transposed:
        x = np.ascontiguousarray(x).reshape(x.shape[1], x.shape[0]).T  # a column-major read of a row-major X
    return _matmul(t.to_host(), x, **switches)


mutant("nvfp4_gemv", "packed_k", "takes K from the packed width (K / 2): half of every row is never summed",
       nvfp4_gemv, packed_k=True)
mutant("nvfp4_gemv", "float16_partials", "accumulates the 16-element block partials in float16", nvfp4_gemv,
       float16_partials=True)
mutant("nvfp4_gemv", "scales_column_major", "reads the [N, K/16] block scales column-major", nvfp4_gemv,
       scales_column_major=True)
mutant("nvfp4_gemm", "rows_read_transposed", "reads X [M, K] column-major when M > 1", nvfp4_gemm,
       rows_read_transposed=True)
mutant("nvfp4_gemm", "ct_global_scale_multiplies", "multiplies by the compressed-tensors global scale (it is a "
       "divisor)", nvfp4_gemm, ct_scale_multiplies=True)


# ---- W4A4 activations ------------------------------------------------------------------------------------------
@copy_of("fake_quantize_nvfp4_activations")
def fake_quantize(x, input_scale, *, layout="compressed-tensors", modelopt_scale_divides=False,
                  fp8_block_scales=True, amax_of_magnitudes=True, reciprocal_multiply=False,
                  scale_product_first=False):
    x = np.asarray(x)
    igs = activation_divisor_scale(input_scale, "compressed-tensors" if modelopt_scale_divides else layout)
    blocks = x.reshape(-1, x.shape[-1] // GROUP, GROUP)
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        amax = np.max(np.abs(blocks) if amax_of_magnitudes else blocks, axis=-1)
        block_scale = (igs * amax) / F32(6.0) if scale_product_first else igs * (amax / F32(6.0))
        if fp8_block_scales:
            codes = fp8_encode(np.clip(block_scale, F32(-448.0), F32(448.0)))
            codes = np.where(fp8_e4m3_decode(codes) == 0, 0x20, codes).astype(np.uint8)
            block_scale = fp8_e4m3_decode(codes)
        divisor = block_scale / igs
        scaled = _divide(blocks, divisor[..., None], reciprocal_multiply)
        q = E2M1_TABLE[e2m1_encode(np.clip(scaled, F32(-6.0), F32(6.0)))]
    return (q * divisor[..., None]).astype(F32).reshape(x.shape)


mutant("fake_quantize_nvfp4_activations", "modelopt_scale_divides", "uses ModelOpt's input_scale (a multiplier) "
       "as a divisor", fake_quantize, modelopt_scale_divides=True)
mutant("fake_quantize_nvfp4_activations", "block_scale_not_fp8", "keeps the float32 block scale instead of "
       "rounding it to FP8", fake_quantize, fp8_block_scales=False)
mutant("fake_quantize_nvfp4_activations", "signed_block_max", "takes the block's largest value, not its largest "
       "magnitude, as the block amax", fake_quantize, amax_of_magnitudes=False)
mutant("fake_quantize_nvfp4_activations", "reciprocal_multiply", "scales elements by x * (1 / d) instead of "
       "dividing by the block divisor d", fake_quantize, reciprocal_multiply=True)
mutant("fake_quantize_nvfp4_activations", "block_scale_operation_order", "computes the block scale as "
       "(igs * amax) / 6 instead of igs * (amax / 6)", fake_quantize, scale_product_first=True)
