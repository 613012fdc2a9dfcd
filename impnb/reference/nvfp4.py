"""NVFP4 (two-level scaled FP4, group 16): quantize, dequantize, GEMV, GEMM. The spec for impnb/cuda/nvfp4.py.

Dimension legend: N = output features (rows of W), K = input features (K % 16 == 0), G = K / 16 blocks per row,
M = rows of the activation matrix X.

An NVFP4Tensor (impnb/formats.py) holds packed uint8 [N, K/2] (E2M1 codes, element 2i in the low nibble), scales
uint8 [N, G] (FP8 E4M3FN bytes, block g covers columns 16g..16g+15) and ONE float32 per-tensor scalar, stored as
    layout "compressed-tensors": weight_global_scale gs, a DIVISOR:     w = q * (s / gs)
    layout "modelopt":           weight_scale_2 ws2,    a MULTIPLIER:  w = q * (s * ws2)
The packed and scale bytes mean the same in both (docs/numerics.md §3.3); ws2 = 1 / gs.

Every step below is one IEEE float32 operation (correctly rounded), in the order the producers use for float32
weights, so a port that keeps the order reproduces the bytes. A tensor whose global scale is 0, inf or NaN is
unusable: NVFP4Tensor warns when it is built and dequantize / gemv / gemm give zeros for it (never inf or NaN).
Sources: compressed-tensors 0.20 (quantization/utils/helpers.py generate_gparam, calculate_qparams;
lifecycle/forward_helpers.py _quantize/_dequantize; compressors/nvfp4/helpers.py); nvidia-modelopt 0.47
(quantization/qtensor/nvfp4_tensor.py NVFP4QTensor). docs/numerics.md §3.1, §3.2, §3.4.
"""
from __future__ import annotations

import numpy as np

from ..errors import FormatError
from ..formats import GROUP, LAYOUTS, NVFP4Tensor
from .fp4 import e2m1_decode, e2m1_encode, fp4_pack, fp4_unpack
from .fp8 import fp8_e4m3_decode, fp8_e4m3_encode

F32 = np.float32
FP8_MAX = F32(448.0)
E2M1_MAX = F32(6.0)
FP8_TIMES_E2M1 = F32(2688.0)  # 448 * 6, exact
CT_ZERO_SCALE_CODE = 0x20  # 0.125: compressed-tensors' replacement for a block scale that is 0 after rounding
MO_MIN_SCALE = F32(2.0 ** -9)  # ModelOpt clamps block scales to [2^-9, 448] before the FP8 cast


def nvfp4_quantize(w, *, layout="compressed-tensors"):
    """float32 W [N, K] -> NVFP4Tensor in ``layout``, byte-identical to that producer for float32 weights.

    compressed-tensors 0.20 (gs is a divisor):
        amax = max|W| clamped below to float32 tiny;  gs = (1 / amax) * 2688;  gs = 1.0 if gs is inf or NaN
               (CT writes 448 * 6 / amax; torch evaluates scalar / tensor as reciprocal-then-multiply)
        s_b  = fp8_rne(clamp(gs * (amax_b / 6), -448, 448));  s_b = 0.125 (0x20) where s_b == 0
        q    = e2m1_rne(clamp(x / (s_b / gs), -6, 6))          (two float32 divisions, in this order)
    nvidia-modelopt 0.47 (ws2 is a multiplier):
        ws2  = max|W| / 2688       (0 for an all-zero W, then 0/0 gives scale bytes 0xFF and codes 0x7, as
                                    ModelOpt writes; the tensor is unusable and contributes zeros)
        s_b  = amax_b / (6 * ws2);  s_b = 1.0 where s_b == 0;  s_b = fp8_rne(clamp(s_b, 2^-9, 448))
        q    = e2m1_rne(x / (s_b * ws2))
    amax_b is the max |x| of block b (16 consecutive elements of a row). Block scales land in the same 0..448
    domain in both layouts; they differ only on all-zero blocks (0x20 vs 0x38) and on blocks whose scale
    underflows FP8 (compressed-tensors flushes them: 0x20 with zero codes; ModelOpt keeps 0x01 = 2^-9).
    """
    if layout not in LAYOUTS:
        raise ValueError(f"nvfp4_quantize: layout {layout!r}; expected one of {LAYOUTS}")
    w = _check_weight(w)
    blocks = w.reshape(w.shape[0], -1, GROUP)  # [N, G, 16]
    amax_blocks = np.max(np.abs(blocks), axis=-1)  # [N, G]
    amax = np.max(amax_blocks) if w.size else F32(0.0)
    if layout == "compressed-tensors":
        scalar, scale_codes, divisor = _ct_scales(amax, amax_blocks)
    else:
        scalar, scale_codes, divisor = _modelopt_scales(amax, amax_blocks)
    with np.errstate(divide="ignore", invalid="ignore"):
        scaled = blocks / divisor[..., None]  # [N, G, 16], float32
    if layout == "compressed-tensors":
        scaled = np.clip(scaled, -E2M1_MAX, E2M1_MAX)
    codes = e2m1_encode(scaled.reshape(w.shape))  # [N, K]
    return NVFP4Tensor(fp4_pack(codes), scale_codes, float(scalar), layout)


def _check_weight(w) -> np.ndarray:
    w = np.asarray(w)
    if w.dtype != np.float32:
        raise TypeError(f"nvfp4_quantize: W must be float32 (the producers' float32 arithmetic is what is "
                        f"reproduced), got {w.dtype}; cast exactly first, e.g. bf16.astype(np.float32)")
    if w.ndim != 2 or w.shape[1] % GROUP:
        raise FormatError(f"nvfp4_quantize: W must be 2-D [N, K] with K a multiple of {GROUP}, got {w.shape}")
    if not np.isfinite(w).all():
        bad = np.argwhere(~np.isfinite(w))[0]
        raise ValueError(f"nvfp4_quantize: W has a non-finite value at {tuple(int(i) for i in bad)}")
    return w


def _ct_scales(amax, amax_blocks):
    """compressed-tensors: (gs, scale bytes [N, G], per-block divisor s / gs [N, G]), all float32 steps."""
    amax = np.maximum(F32(amax), np.finfo(F32).tiny)
    with np.errstate(over="ignore"):
        # `448 * 6 / amax` in torch is scalar / tensor, which torch evaluates as amax.reciprocal() * 2688:
        # two roundings, and 1 ulp away from a true division for about 1 amax in 5.
        gs = (F32(1.0) / amax) * FP8_TIMES_E2M1
    if not np.isfinite(gs):
        gs = F32(1.0)  # torch.nan_to_num(..., posinf=1.0)
    block_scale = gs * (amax_blocks / E2M1_MAX)  # [N, G]: amax/6 first, then times gs
    codes = fp8_e4m3_encode(np.clip(block_scale, -FP8_MAX, FP8_MAX))
    codes = np.where(fp8_e4m3_decode(codes) == 0, CT_ZERO_SCALE_CODE, codes).astype(np.uint8)
    divisor = fp8_e4m3_decode(codes) / gs  # [N, G]
    return gs, codes, divisor


def _modelopt_scales(amax, amax_blocks):
    """ModelOpt: (ws2, scale bytes [N, G], per-block divisor s * ws2 [N, G]), all float32 steps."""
    ws2 = F32(amax) / FP8_TIMES_E2M1
    with np.errstate(divide="ignore", invalid="ignore"):
        block_scale = amax_blocks / (E2M1_MAX * ws2)  # [N, G]; 0/0 = NaN when ws2 == 0 (as ModelOpt)
    block_scale = np.where(block_scale == 0, F32(1.0), block_scale)
    codes = fp8_e4m3_encode(np.clip(block_scale, MO_MIN_SCALE, FP8_MAX))
    divisor = fp8_e4m3_decode(codes) * ws2  # [N, G]
    return ws2, codes, divisor


def nvfp4_dequantize(t):
    """NVFP4Tensor [N, K] -> float32 W [N, K], one rounding per element, in the layout's own order:

        compressed-tensors: w = q * (s / gs)       (s / gs rounded to float32 first)
        modelopt:           w = q * (s * ws2)      (s * ws2 rounded to float32 first)
    q = e2m1_decode(code), s = fp8_e4m3_decode(scale byte) of the element's block. An unusable global scale
    (0, inf, NaN) gives zeros. A NaN block-scale byte (0x7F / 0xFF; no producer writes one with a usable global
    scale) is not hidden: its block decodes to NaN.
    """
    t = _check_tensor(t, "nvfp4_dequantize")
    n, k = t.shape
    if not t.usable:
        return np.zeros((n, k), dtype=F32)
    q = e2m1_decode(fp4_unpack(t.packed)).reshape(n, -1, GROUP)  # [N, G, 16]
    return (q * _block_multiplier(t)[..., None]).reshape(n, k)


def _block_multiplier(t: NVFP4Tensor) -> np.ndarray:
    """[N, G] float32: s / gs (compressed-tensors) or s * ws2 (modelopt)."""
    s = fp8_e4m3_decode(t.scales)
    g = F32(t.global_scale)
    return s / g if t.layout == "compressed-tensors" else s * g


def nvfp4_gemv(t, x):
    """y[n] = sum_k W[n, k] * x[k]: NVFP4Tensor [N, K] times float32 x [K] -> float32 y [N].

    W is nvfp4_dequantize(t) (exact float32). Accumulation is float32 in this fixed order: for each 16-block g,
    p_g = ((w_0 x_0 + w_1 x_1) + w_2 x_2) + ... + w_15 x_15 (each product rounded to float32, then each sum),
    then y = ((p_0 + p_1) + p_2) + ... + p_{G-1}. A fast path may sum in another order; the tolerance table
    bounds the difference by the float32 error of K terms relative to sum_k |W[n,k] x[k]|.
    An unusable global scale gives zeros.
    """
    t = _check_tensor(t, "nvfp4_gemv")
    x = _as_activations(x, t.shape[1], "nvfp4_gemv", ndim=1)
    return _blocked_matmul(t, x[None, :])[0]


def nvfp4_gemm(t, x):
    """Y[m, n] = sum_k X[m, k] * W[n, k]: float32 X [M, K] times NVFP4Tensor [N, K] transposed -> float32 [M, N].

    Each Y[m, n] is summed exactly as nvfp4_gemv sums y[n] for the row X[m] (same float32 order), so
    nvfp4_gemm(t, X)[m] == nvfp4_gemv(t, X[m]) bit for bit. An unusable global scale gives zeros.
    """
    t = _check_tensor(t, "nvfp4_gemm")
    x = _as_activations(x, t.shape[1], "nvfp4_gemm", ndim=2)
    return _blocked_matmul(t, x)


def _blocked_matmul(t: NVFP4Tensor, x: np.ndarray) -> np.ndarray:
    """[M, N] float32 in the documented order: 16-element block partials, then blocks left to right."""
    m, (n, k) = x.shape[0], t.shape
    out = np.zeros((m, n), dtype=F32)
    if not t.usable or k == 0:
        return out
    w = nvfp4_dequantize(t)  # [N, K]
    for g in range(k // GROUP):
        cols = slice(g * GROUP, (g + 1) * GROUP)
        wg, xg = w[:, cols], x[:, cols]  # [N, 16], [M, 16]
        partial = xg[:, None, 0] * wg[None, :, 0]  # [M, N]
        for j in range(1, GROUP):
            partial += xg[:, None, j] * wg[None, :, j]
        out += partial
    return out


def _check_tensor(t, op: str) -> NVFP4Tensor:
    if not isinstance(t, NVFP4Tensor):
        raise TypeError(f"{op}: expected an impnb.NVFP4Tensor, got {type(t).__name__}")
    if isinstance(t.packed, np.ndarray) and isinstance(t.scales, np.ndarray):
        return t  # already on the host (to_host would re-validate and warn a second time)
    return t.to_host()


def _as_activations(x, k: int, op: str, *, ndim: int) -> np.ndarray:
    x = np.asarray(x)
    if x.dtype.kind != "f" and x.dtype.name != "bfloat16":
        raise TypeError(f"{op}: activations must be floating point, got {x.dtype}")
    if x.ndim != ndim or x.shape[-1] != k:
        want = "[K]" if ndim == 1 else "[M, K]"
        raise ValueError(f"{op}: activations must be {want} with K = {k} (the logical K, 2 x packed width), "
                         f"got shape {x.shape}")
    return x.astype(F32)  # exact for float16 / bfloat16 / float32; float64 is rounded to float32
