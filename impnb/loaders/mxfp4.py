"""MXFP4Tensor: an OCP MX FP4 weight as checkpoints store it (compressed-tensors mxfp4-pack-quantized, gpt-oss).

Dimensions: E = experts (optional leading axes), N = output features, K = logical input features, K % 32 == 0.
    packed uint8 [..., N, K/2]    two E2M1 codes a byte, element 2i in the low nibble (docs/numerics.md 1.2; gpt-oss
                                  `*_blocks` [..., N, K/32, 16] is the same bytes, reshaped for free)
    scales uint8 [..., N, K/32]   E8M0 exponents: scale = 2^(e - 127); e = 0xFF is NaN (docs/numerics.md 4)
There is no per-tensor scale. x = e2m1(code) * 2^(e - 127).

This is NOT NVFP4: the group is 32, not 16, and the scale is a power of two (E8M0), not FP8 E4M3 with a global
scalar. quant.py refuses any checkpoint whose tensors mix the two conventions.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import FormatError
from ..reference.fp4 import e2m1_decode, fp4_unpack

GROUP = 32
E8M0_BIAS = 127
E8M0_NAN = 0xFF


@dataclass(frozen=True)
class MXFP4Tensor:
    packed: np.ndarray  # uint8 [..., N, K/2]
    scales: np.ndarray  # uint8 [..., N, K/32], E8M0
    name: str = ""

    def __post_init__(self):
        where = f" (tensor {self.name})" if self.name else ""
        for label, arr in (("packed", self.packed), ("scales", self.scales)):
            if getattr(arr, "dtype", None) != np.uint8 or getattr(arr, "ndim", 0) < 2:
                raise FormatError(f"MXFP4 {label}{where} must be a uint8 array with >= 2 axes, got "
                                  f"{getattr(arr, 'dtype', type(arr).__name__)} {getattr(arr, 'shape', '?')}")
        k = 2 * self.packed.shape[-1]
        if k % GROUP or self.scales.shape != self.packed.shape[:-1] + (k // GROUP,):
            raise FormatError(f"MXFP4{where}: scales {tuple(self.scales.shape)} do not pair with packed "
                              f"{tuple(self.packed.shape)} (logical K = {k}, group {GROUP})")

    @property
    def shape(self) -> tuple[int, ...]:
        """Logical shape (..., N, K)."""
        return tuple(self.packed.shape[:-1]) + (2 * self.packed.shape[-1],)

    @property
    def nbytes(self) -> int:
        return int(self.packed.nbytes + self.scales.nbytes)

    def dequantize(self, dtype=np.float32) -> np.ndarray:
        """[..., N, K] values in `dtype` (float32 overflows to inf for scales above 2^125; pass np.float64)."""
        values = e2m1_decode(fp4_unpack(np.asarray(self.packed))).astype(dtype)  # [..., N, K]
        values = values.reshape(self.scales.shape + (GROUP,))  # [..., N, K/32, 32]
        return (values * e8m0_decode(self.scales, dtype)[..., None]).reshape(self.shape)


def e8m0_decode(exponents, dtype=np.float32) -> np.ndarray:
    """E8M0 bytes -> 2^(e - 127) in `dtype`; 0xFF -> NaN. Exact in float32 (2^-127 is a float32 subnormal)."""
    e = np.asarray(exponents, dtype=np.uint8)
    out = np.ldexp(np.ones(e.shape, dtype=dtype), e.astype(np.int32) - E8M0_BIAS)
    out[e == E8M0_NAN] = np.nan
    return out
