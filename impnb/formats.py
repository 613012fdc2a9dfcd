"""NVFP4Tensor: a weight in NVFP4 (two-level scaled FP4), in either checkpoint convention.

Shapes (N = output features, K = logical input features, K % 16 == 0):
    packed       uint8 [N, K/2]    two E2M1 codes per byte, element 2i in the low nibble (docs/numerics.md §1.2)
    scales       uint8 [N, K/16]   FP8 E4M3FN bytes, one per 16 consecutive elements along K, linear row-major
    global_scale float32 scalar    the per-tensor scalar *as the layout stores it*:
        layout "compressed-tensors": weight_global_scale, a DIVISOR   x = q * (s / gs)
        layout "modelopt":           weight_scale_2,      a MULTIPLIER x = q * s * ws2
    The two are reciprocal (ws2 = 1 / gs); the packed and scale bytes mean the same in both (docs/numerics.md §3.3).

The logical K is 2 x packed.shape[1], never packed.shape[1] (reading the packed width as K is a known bug).
Arrays may be NumPy or CuPy; ``to_host()`` gives a NumPy copy.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np

from .errors import FormatError

LAYOUTS = ("compressed-tensors", "modelopt")
GROUP = 16


@dataclass(frozen=True)
class NVFP4Tensor:
    packed: object  # uint8 [N, K/2]
    scales: object  # uint8 [N, K/16], FP8 E4M3FN bytes
    global_scale: float  # float32, as stored by ``layout``
    layout: str = "compressed-tensors"
    name: str = ""  # for error messages (the checkpoint tensor name), optional

    def __post_init__(self):
        _validate(self)
        object.__setattr__(self, "global_scale", float(np.float32(self.global_scale)))

    @property
    def shape(self) -> tuple[int, int]:
        """Logical (N, K): K counts elements, twice the packed width."""
        return int(self.packed.shape[0]), 2 * int(self.packed.shape[1])

    @property
    def usable(self) -> bool:
        """False when the global scale is 0, inf or NaN: the tensor then contributes zeros (with a warning)."""
        g = self.global_scale
        return math.isfinite(g) and g != 0.0

    def to_layout(self, layout: str) -> "NVFP4Tensor":
        """The same tensor in the other convention: only the scalar changes, ws2 = 1 / gs (float32)."""
        if layout not in LAYOUTS:
            raise ValueError(f"layout {layout!r}; expected one of {LAYOUTS}")
        if layout == self.layout:
            return self
        scalar = np.float32(1.0) / np.float32(self.global_scale) if self.usable else np.float32(self.global_scale)
        return NVFP4Tensor(self.packed, self.scales, float(scalar), layout, self.name)

    def to_host(self) -> "NVFP4Tensor":
        from .cuda._runtime import to_host
        return NVFP4Tensor(np.asarray(to_host(self.packed)), np.asarray(to_host(self.scales)),
                           self.global_scale, self.layout, self.name)

    @property
    def nbytes(self) -> int:
        return int(self.packed.nbytes + self.scales.nbytes + 4)


def _validate(t: NVFP4Tensor) -> None:
    where = f" (tensor {t.name})" if t.name else ""
    if t.layout not in LAYOUTS:
        raise FormatError(f"NVFP4 layout {t.layout!r}{where}; expected one of {LAYOUTS}")
    p, s = t.packed, t.scales
    for label, arr in (("packed", p), ("scales", s)):
        if getattr(arr, "dtype", None) != np.uint8 or getattr(arr, "ndim", 0) != 2:
            raise FormatError(f"NVFP4 {label}{where} must be a 2-D uint8 array, got "
                              f"{getattr(arr, 'dtype', type(arr).__name__)} with shape {getattr(arr, 'shape', '?')}")
    n, half_k = p.shape
    k = 2 * half_k
    if k % GROUP:
        raise FormatError(f"NVFP4{where}: logical K = 2 x {half_k} = {k} is not a multiple of {GROUP}")
    if s.shape != (n, k // GROUP):
        raise FormatError(f"NVFP4{where}: scales shape {tuple(s.shape)} does not pair with packed shape "
                          f"{tuple(p.shape)} (logical K = {k}); expected ({n}, {k // GROUP})")
    g = float(np.float32(t.global_scale))
    if not (math.isfinite(g) and g != 0.0):
        warnings.warn(f"NVFP4{where}: global scale is {g!r} ({t.layout}); this tensor will contribute zeros",
                      RuntimeWarning, stacklevel=3)
