"""Cross-check cases of NVFP4 quantize / dequantize / GEMV / GEMM (impnb/reference/nvfp4.py).

Weights are fresh random float32 with the awkward blocks of docs/numerics.md §3.4 planted in them: an all-zero
16-block, a block whose scale underflows FP8 (CT flushes it, ModelOpt keeps 2^-9), an outlier that owns the tensor
amax (its block scale is 448 = 0x7E: an encoder that clamps FP8 at 0x77 = 240 halves it) and bf16-representable
values (what real checkpoints are quantized from). Both layouts. Also: blocks whose scaled values sit exactly on
the E2M1 ties (a power-of-two global scale makes the divisions exact), a tensor amax for which compressed-tensors'
reciprocal-then-multiply global scale differs from a true division, unusable global scales (0, inf) and a NaN
block-scale byte for the dequantizer. Shapes: tiny ones for the simulator (K != N, K not a multiple of
64), and on a GPU the real ones: N=704 K=2816 and N=2816 K=704 (SmolLM2-style MLP up/down projections, K != N)
and 4096 x 4096 (a 7B-class attention projection).
"""
from __future__ import annotations

import warnings

import numpy as np

from impnb.formats import NVFP4Tensor

from . import case

F32 = np.float32
LAYOUTS = ("compressed-tensors", "modelopt")
SHAPES = {"tiny": [(3, 32), (5, 48)], "real": [(704, 2816), (2816, 704), (4096, 4096)]}
_M = {"tiny": 3, "real": 8}


def planted_weight(rng, n, k, *, bf16=False, scale=None):
    """float32 W [N, K]: random normals times a random scale, with the docs/numerics.md §3.4 blocks planted."""
    scale = np.exp2(rng.uniform(-10.0, 2.0)) if scale is None else scale
    w = (rng.standard_normal((n, k)) * scale).astype(F32)  # [N, K]
    w[0, :16] = 0.0  # an all-zero block
    if n > 1:
        w[n - 1, k - 16:] = w[n - 1, k - 16:] * F32(1e-7)  # a block whose FP8 scale underflows (<= 2^-10)
    w[n // 2, k // 2] = F32(scale * 40.0)  # the outlier: owns amax, its block scale is 448 (0x7E)
    w[n // 2, 0] = -0.0
    if bf16:
        import ml_dtypes
        w = w.astype(ml_dtypes.bfloat16).astype(F32)
    return w


def random_tensor(rng, n, k, layout):
    """An NVFP4Tensor of arbitrary bytes: random codes, random non-NaN scale bytes, a random usable scalar."""
    packed = rng.integers(0, 256, (n, k // 2), dtype=np.uint8)  # [N, K/2]
    scales = rng.integers(0, 0x7F, (n, k // 16), dtype=np.uint8)  # [N, G]: 0x00..0x7E, no NaN byte
    scales[0, 0], scales[-1, -1] = 0x01, 0x7E  # smallest subnormal scale and the largest scale
    gs = F32(np.exp2(rng.uniform(-8.0, 12.0)))
    return NVFP4Tensor(packed, scales, float(gs), layout)


def _shape(size, i):
    shapes = SHAPES[size]
    return shapes[i % len(shapes)]


def _quantized(rng, size, i, layout):
    from impnb.reference.nvfp4 import nvfp4_quantize
    n, k = _shape(size, i)
    return nvfp4_quantize(planted_weight(rng, n, k), layout=layout)


for _i, _layout in enumerate(LAYOUTS):
    tag = "ct" if _layout == "compressed-tensors" else "modelopt"

    @case("nvfp4_quantize", f"planted_{tag}")
    def _(rng, size, layout=_layout, i=_i):
        n, k = _shape(size, i)
        return (planted_weight(rng, n, k),), {"layout": layout}

    @case("nvfp4_quantize", f"bf16_values_{tag}")
    def _(rng, size, layout=_layout, i=_i):
        n, k = _shape(size, i + 1)
        return (planted_weight(rng, n, k, bf16=True),), {"layout": layout}

    @case("nvfp4_dequantize", f"random_bytes_{tag}")
    def _(rng, size, layout=_layout, i=_i):
        n, k = _shape(size, i)
        return (random_tensor(rng, n, k, layout),), {}

    @case("nvfp4_dequantize", f"quantized_{tag}")
    def _(rng, size, layout=_layout, i=_i):
        return (_quantized(rng, size, i + 1, layout),), {}

    @case("nvfp4_gemv", f"quantized_{tag}")
    def _(rng, size, layout=_layout, i=_i):
        t = _quantized(rng, size, i, layout)
        return (t, rng.standard_normal(t.shape[1]).astype(F32)), {}

    @case("nvfp4_gemm", f"quantized_{tag}")
    def _(rng, size, layout=_layout, i=_i):
        t = _quantized(rng, size, i + 1, layout)
        return (t, rng.standard_normal((_M[size], t.shape[1])).astype(F32)), {}


@case("nvfp4_quantize", "all_zero_tensor_modelopt")
def _(rng, size):
    return (np.zeros((4, 32), dtype=F32),), {"layout": "modelopt"}  # ws2 = 0: scales 0xFF, codes 0x7


@case("nvfp4_quantize", "all_zero_tensor_ct")
def _(rng, size):
    return (np.zeros((4, 32), dtype=F32),), {"layout": "compressed-tensors"}  # gs = 1, scales 0x20, codes 0


@case("nvfp4_gemv", "random_bytes_ct")
def _(rng, size):
    n, k = _shape(size, 2)
    return (random_tensor(rng, n, k, "compressed-tensors"), rng.standard_normal(k).astype(F32)), {}


@case("nvfp4_gemv", "unusable_global_scale")
def _(rng, size):
    t = random_tensor(rng, *_shape(size, 0), "modelopt")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the warning is tested in tests/test_nvfp4.py
        t = NVFP4Tensor(t.packed, t.scales, 0.0, "modelopt")
    return (t, rng.standard_normal(t.shape[1]).astype(F32)), {}  # must give zeros


@case("nvfp4_gemm", "single_row")
def _(rng, size):
    t = _quantized(rng, size, 0, "compressed-tensors")
    return (t, rng.standard_normal((1, t.shape[1])).astype(F32)), {}


@case("nvfp4_gemm", "many_rows_random_bytes")
def _(rng, size):
    n, k = _shape(size, 1)
    m = 5 if size == "tiny" else 33
    return (random_tensor(rng, n, k, "modelopt"), rng.standard_normal((m, k)).astype(F32)), {}


# A per-row GEMV loop has broken the M > 1 NVFP4 product at Gemma-4 expert shapes (N=704 K=2816 and N=2816 K=704)
# while M = 1 worked: M = 11 against the reference.
for _i, _tag in enumerate(("up_704x2816", "down_2816x704")):
    @case("nvfp4_gemm", f"expert_m11_{_tag}")
    def _(rng, size, i=_i):
        n, k = _shape(size, i)
        t = nvfp4_quantize_planted(rng, n, k, "compressed-tensors")
        return (t, rng.standard_normal((11, k)).astype(F32)), {}


def nvfp4_quantize_planted(rng, n, k, layout):
    from impnb.reference.nvfp4 import nvfp4_quantize
    return nvfp4_quantize(planted_weight(rng, n, k, bf16=True), layout=layout)


def tie_weight(rng, n, k, layout):
    """float32 W [N, K] whose amax makes the global scale a power of two (CT gs = 2^10, ModelOpt ws2 = 2^-10), so
    the block divisors are exact and row 0's blocks put every E2M1 tie (0.25 .. 5, both signs) exactly on a
    division result: ties-to-even must decide them. Block scale s of row 0's block g is 1, 1.5, 0.5, ... ."""
    unit = F32(2.0 ** -10)
    w = (rng.standard_normal((n, k)) * 0.2).astype(F32)  # [N, K], all well below the amax
    w[n - 1, k - 1] = F32(2688.0) * unit if layout == "compressed-tensors" else F32(-2688.0) * unit  # amax 2.625
    ties = np.array([0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0, 6.0], dtype=F32)
    for g, s in zip(range(k // 16), (1.0, 1.5, 0.5, 2.0, 0.75)):
        block = np.concatenate([ties, -ties]) * F32(s) * unit  # block amax 6 s unit: block scale s exactly
        w[0, 16 * g:16 * g + 16] = rng.permutation(block)
    return w


def _amax_where_ct_rounding_differs(rng):
    """A float32 amax with (1 / amax) * 2688 != 2688 / amax (compressed-tensors computes the former)."""
    while True:
        amax = F32(rng.uniform(0.5, 8.0))
        if (F32(1.0) / amax) * F32(2688.0) != F32(2688.0) / amax:
            return amax


for _layout, _tag in zip(LAYOUTS, ("ct", "modelopt")):
    @case("nvfp4_quantize", f"e2m1_ties_{_tag}")
    def _(rng, size, layout=_layout):
        return (tie_weight(rng, *_shape(size, 1), layout),), {"layout": layout}

    @case("nvfp4_dequantize", f"unusable_global_scale_{_tag}")
    def _(rng, size, layout=_layout):
        t = random_tensor(rng, *_shape(size, 0), layout)
        bad = 0.0 if layout == "compressed-tensors" else float("inf")  # s / 0 and s * inf: inf / NaN if unguarded
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return (NVFP4Tensor(t.packed, t.scales, bad, layout),), {}  # must give +0.0 everywhere


@case("nvfp4_quantize", "ct_global_scale_rounding")
def _(rng, size):
    n, k = _shape(size, 0)
    w = (rng.standard_normal((n, k)) * 0.1).astype(F32)
    w[n // 2, 3] = _amax_where_ct_rounding_differs(rng)
    return (w,), {"layout": "compressed-tensors"}


@case("nvfp4_dequantize", "nan_scale_byte")
def _(rng, size):
    t = random_tensor(rng, *_shape(size, 1), "compressed-tensors")
    scales = t.scales.copy()
    scales[0, 1], scales[-1, 0] = 0x7F, 0xFF  # NaN bytes: their blocks decode to NaN, nothing else does
    return (NVFP4Tensor(t.packed, scales, t.global_scale, t.layout),), {}


def near_tie_weight(rng, n, k, layout):
    """float32 W [N, K] whose row 0 holds, block by block, values whose scaled quotient x / d is an E2M1 tie or
    one ulp off it (impnb/conformance/cases/_near_ties.py); the global scale is an ordinary float32 here."""
    from ._near_ties import ct_divisors, modelopt_divisors, plant
    w = (rng.standard_normal((n, k)) * 0.3).astype(F32)
    w[n - 1, 5] = F32(3.7)  # the tensor amax
    w[0, 15], w[0, 16] = F32(1.9), F32(-0.77)  # row 0's block amaxes (blocks 0 and 1)
    amax_b = np.max(np.abs(w[0].reshape(-1, 16)), axis=-1)
    if layout == "compressed-tensors":
        d = ct_divisors(amax_b, (F32(1.0) / F32(3.7)) * F32(2688.0))
    else:
        d = modelopt_divisors(amax_b, F32(3.7) / F32(2688.0))
    plant(w[0], d, rng)
    return w


def _amax_where_modelopt_rounding_differs(rng):
    """A float32 amax with amax / 2688 != 1 / (2688 / amax) (ModelOpt computes the former)."""
    while True:
        amax = F32(rng.uniform(0.5, 8.0))
        if amax / F32(2688.0) != F32(1.0) / (F32(2688.0) / amax):
            return amax


for _layout, _tag in zip(LAYOUTS, ("ct", "modelopt")):
    @case("nvfp4_quantize", f"near_e2m1_ties_{_tag}")
    def _(rng, size, layout=_layout):
        return (near_tie_weight(rng, *_shape(size, 0), layout),), {"layout": layout}


@case("nvfp4_quantize", "modelopt_global_scale_rounding")
def _(rng, size):
    n, k = _shape(size, 1)
    w = (rng.standard_normal((n, k)) * 0.1).astype(F32)
    w[1, 7] = -_amax_where_modelopt_rounding_differs(rng)
    return (w,), {"layout": "modelopt"}


def scale_tie_weight(rng, n, k, layout):
    """float32 W [N, K] (tensor amax 3.7: an ordinary global scale) whose blocks have block scales exactly on FP8
    rounding ties or one float32 step off them, before the FP8 rounding (impnb/conformance/cases/_near_ties.py)."""
    from ._near_ties import fill_blocks, scale_tie_amaxes
    w = (rng.standard_normal((n, k)) * 1e-3).astype(F32)
    w[n - 1, k - 1] = F32(3.7)
    if layout == "compressed-tensors":
        gs = (F32(1.0) / F32(3.7)) * F32(2688.0)
        amaxes = scale_tie_amaxes(lambda a: gs * (F32(a) / F32(6.0)))
    else:
        ws2 = F32(3.7) / F32(2688.0)
        amaxes = scale_tie_amaxes(lambda a: F32(a) / (F32(6.0) * ws2))
    flat = w[:-1].reshape(-1)  # every row but the amax's
    fill_blocks(flat, amaxes, rng)
    w[:-1] = flat.reshape(n - 1, k)
    return w


for _layout, _tag in zip(LAYOUTS, ("ct", "modelopt")):
    @case("nvfp4_quantize", f"fp8_scale_ties_{_tag}")
    def _(rng, size, layout=_layout):
        n, k = (6, 48) if size == "tiny" else (64, 256)
        return (scale_tie_weight(rng, n, k, layout),), {"layout": layout}
