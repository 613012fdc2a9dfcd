"""NVFP4 activation quantization (W4A4): the run-time quantize-dequantize of a Linear's input.

Dimension legend: M = rows (tokens), K = input features (K % 16 == 0), G = K / 16 blocks per row.

A W4A4 checkpoint stores one static per-tensor activation scalar per Linear (calibrated: static_minmax), and the
per-16 block scales are computed at run time from each block's amax ("dynamic: local" in compressed-tensors'
NVFP4 preset). The block-scale formula is the weights' (docs/numerics.md §3.1 "Activations (W4A4)"):

    igs  = input_global_scale                    (compressed-tensors: a DIVISOR, 448*6 / amax_calibration)
         = 1 / input_scale                       (ModelOpt stores the reciprocal, a MULTIPLIER; vLLM's
                                                  input_scale_inv; docs/numerics.md §3.3)
    s_b  = fp8_rne(clamp(igs * (amax_b / 6), -448, 448));  s_b = 0.125 (0x20) where s_b rounds to 0
    q    = e2m1_rne(clamp(x / (s_b / igs), -6, 6))          (two float32 divisions, in this order)
    x^   = q * (s_b / igs)                                   (what the GEMM then sees)

Every step is one correctly rounded float32 operation, so the op is bit-exact across backends. Activations larger
than the calibration amax saturate at +-6 * s_b / igs with s_b <= 448: the static scale bounds the range.
Sources: compressed-tensors 0.20 quantization/lifecycle/forward.py (_quantize / _dequantize with global_scale),
quantization/utils/helpers.py calculate_qparams; vLLM nvfp4_emulation_utils.ref_nvfp4_quant (the same steps).
"""
from __future__ import annotations

import math

import numpy as np

from ..formats import LAYOUTS
from .fp4 import e2m1_decode, e2m1_encode
from .fp8 import fp8_e4m3_decode, fp8_e4m3_encode

F32 = np.float32
GROUP = 16
CT_ZERO_SCALE_CODE = 0x20


def activation_divisor_scale(input_scalar: float, layout: str) -> np.float32:
    """igs (the divisor) from the scalar as ``layout`` stores it; ValueError for 0, inf, NaN or negative."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout {layout!r}; expected one of {LAYOUTS}")
    v = F32(input_scalar)
    if not (math.isfinite(float(v)) and float(v) > 0):
        raise ValueError(f"NVFP4 activation scale {float(v)!r} ({layout}) is not a positive finite number; "
                         f"the checkpoint's input scale is unusable")
    return v if layout == "compressed-tensors" else F32(1.0) / v


def fake_quantize_nvfp4_activations(x, input_scale, *, layout="compressed-tensors"):
    """float32 X [..., K] -> float32 X^ [..., K]: each 16-block of each row quantized to NVFP4 and dequantized.

    ``input_scale`` is the stored per-tensor scalar: input_global_scale (compressed-tensors, a divisor) or
    input_scale (modelopt, a multiplier). NaN / inf inputs are rejected (a block amax of inf has no scale).
    """
    x = np.asarray(x)
    if x.dtype != F32:
        raise TypeError(f"fake_quantize_nvfp4_activations: X must be float32, got {x.dtype}")
    if x.ndim == 0 or x.shape[-1] % GROUP:
        raise ValueError(f"fake_quantize_nvfp4_activations: last axis of X {x.shape} must be a multiple of {GROUP}")
    if not np.isfinite(x).all():
        raise ValueError("fake_quantize_nvfp4_activations: X has a non-finite value")
    igs = activation_divisor_scale(input_scale, layout)
    blocks = x.reshape(-1, x.shape[-1] // GROUP, GROUP)  # [M, G, 16]
    amax = np.max(np.abs(blocks), axis=-1)  # [M, G]
    with np.errstate(over="ignore"):
        block_scale = igs * (amax / F32(6.0))  # [M, G]: amax/6 first, then times igs
    codes = fp8_e4m3_encode(np.clip(block_scale, F32(-448.0), F32(448.0)))
    codes = np.where(fp8_e4m3_decode(codes) == 0, CT_ZERO_SCALE_CODE, codes).astype(np.uint8)
    divisor = fp8_e4m3_decode(codes) / igs  # [M, G]
    q = e2m1_decode(e2m1_encode(np.clip(blocks / divisor[..., None], F32(-6.0), F32(6.0))))  # [M, G, 16]
    return (q * divisor[..., None]).astype(F32).reshape(x.shape)
