"""Weights on the GPU in the form the CUDA C kernels read: DeviceLinear (NVFP4 or dense f32 / f16 / bf16), fusion,
conversion. The engine keeps its weights resident in this form; the fused ops' CUDA paths convert their operands
with ``as_device_linear``.

Dimension legend: N output rows, K input width, E experts (stacked linears keep N rows per expert).

A DeviceLinear holds, on the device:
    data    NVFP4: packed uint8 [E*N, K/2] (E2M1, element 2i in the low nibble); dense: f32 / f16 [E*N, K],
            bf16 as uint16 [E*N, K] (CuPy has no bfloat16 dtype)
    scales  NVFP4 only: FP8 E4M3 bytes [E*N, K/16]
    rmult   NVFP4 only: float32 [E*N], the GEMV's per-row multiplier 2^14 * (1 / gs) (compressed-tensors) or
            2^14 * ws2 (ModelOpt); 2^14 undoes the kernel's exact "E2M1 code as fp16" decode (impnb.cuh); 0 for a
            tensor whose global scale is 0 / inf / NaN (it contributes zeros, as the reference does)
    gscale  NVFP4 only: float32 [E*N], the stored global scale per row, and ``ct`` (divide, compressed-tensors)
            or not (multiply, ModelOpt): prefill dequantizes exactly as impnb.reference.nvfp4_dequantize does
    bias    float32 [N] or None
Fusing linears that read the same input (q|k|v, gate|up) concatenates rows; per-row multipliers make that exact
for NVFP4 tensors with different global scales.

Weight policy (``weights=``): "auto" keeps NVFP4 tensors NVFP4, bf16 / f16 sources as they are, and stores float32
sources as f16 when |w| < 60000 (else bf16); "nvfp4" quantizes every float linear with impnb.ops.nvfp4_quantize;
"bf16" / "fp16" / "fp32" store every float linear in that type (NVFP4 tensors stay NVFP4).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..errors import Unsupported
from ..formats import NVFP4Tensor
from ._kernels import FMT_BF16, FMT_F16, FMT_F32, FMT_NVFP4

POLICIES = ("auto", "nvfp4", "bf16", "fp16", "fp32")
_TWO14 = np.float32(16384.0)


@dataclass
class DeviceLinear:
    fmt: int
    N: int  # rows (per expert when stacked)
    K: int
    data: object
    scales: object = None
    rmult: object = None
    gscale: object = None
    ct: bool = True
    bias: object = None
    experts: int = 0  # 0: a plain linear; E: stacked experts [E, N, K]

    @property
    def nbytes(self) -> int:
        return sum(int(a.nbytes) for a in (self.data, self.scales, self.rmult, self.bias) if a is not None)


def _cp():
    import cupy
    return cupy


def _is_bf16(a) -> bool:
    return getattr(a, "dtype", None) is not None and str(a.dtype) == "bfloat16"


def bf16_bits(a) -> object:
    """float32 (NumPy or CuPy) -> bf16 bit patterns uint16, round to nearest even (NaN kept NaN)."""
    xp = _cp().get_array_module(a) if hasattr(a, "__cuda_array_interface__") else np
    u = xp.ascontiguousarray(a, dtype=xp.float32).view(xp.uint32)
    rounded = ((u + xp.uint32(0x7FFF) + ((u >> 16) & xp.uint32(1))) >> 16).astype(xp.uint16)
    nan = (u & xp.uint32(0x7FFFFFFF)) > xp.uint32(0x7F800000)
    return xp.where(nan, xp.uint16(0x7FC0), rounded)


def _float32(a):
    """A host or device float32 view/copy of a weight array (bf16 via ml_dtypes upcasts exactly)."""
    if hasattr(a, "__cuda_array_interface__"):
        return _cp().ascontiguousarray(a, dtype=np.float32)
    return np.ascontiguousarray(np.asarray(a, dtype=np.float32))


def dense_format(a, policy: str) -> int:
    if policy == "fp32":
        return FMT_F32
    if policy == "bf16":
        return FMT_BF16
    if policy == "fp16":
        return FMT_F16
    if _is_bf16(a):
        return FMT_BF16
    if getattr(a, "dtype", None) == np.float16:
        return FMT_F16
    amax = float(abs(a).max()) if a.size else 0.0
    return FMT_F16 if amax < 60000.0 else FMT_BF16


def upload_dense(a, fmt: int, name: str = "") -> DeviceLinear:
    cp = _cp()
    if a.ndim != 2:
        raise Unsupported(f"engine: weight {name} has shape {tuple(a.shape)}; expected [N, K]")
    n, k = (int(d) for d in a.shape)
    need = {FMT_F32: 4, FMT_F16: 8, FMT_BF16: 8}[fmt]
    if k % need:
        raise Unsupported(f"engine: weight {name} has K = {k}, not a multiple of {need} (vectorised GEMV)")
    if fmt == FMT_BF16 and _is_bf16(a) and not hasattr(a, "__cuda_array_interface__"):
        data = cp.asarray(np.ascontiguousarray(a).view(np.uint16))
    elif fmt == FMT_BF16:
        data = cp.asarray(bf16_bits(_float32(a)))
    elif fmt == FMT_F16:
        data = cp.asarray(_float32(a)).astype(cp.float16)
    else:
        data = cp.asarray(_float32(a))
    return DeviceLinear(fmt, n, k, data)


def upload_nvfp4(t: NVFP4Tensor) -> DeviceLinear:
    cp = _cp()
    n, k = t.shape
    g = np.float32(t.global_scale)
    ct = t.layout == "compressed-tensors"
    usable = math.isfinite(float(g)) and float(g) != 0.0
    if usable:
        mult = _TWO14 * (np.float32(1.0) / g if ct else g)
    else:
        mult, g, ct = np.float32(0.0), np.float32(0.0), False  # contributes zeros: s * 0
    return DeviceLinear(FMT_NVFP4, n, k, cp.ascontiguousarray(cp.asarray(t.packed)),
                        cp.ascontiguousarray(cp.asarray(t.scales)),
                        cp.full(n, mult, dtype=cp.float32), cp.full(n, g, dtype=cp.float32), ct)


def quantize(a, name: str = "") -> NVFP4Tensor:
    """float [N, K] -> NVFP4Tensor through the registry (its CUDA path when there is one, else the reference)."""
    from .. import ops
    if a.ndim != 2 or a.shape[1] % 16:
        raise Unsupported(f"engine: cannot quantize {name} of shape {tuple(a.shape)} to NVFP4 (K % 16 != 0)")
    t = ops.nvfp4_quantize(a if hasattr(a, "__cuda_array_interface__") else _float32(a))
    return NVFP4Tensor(t.packed, t.scales, t.global_scale, t.layout, name)


def upload(w, policy: str, name: str = "", bias=None) -> DeviceLinear:
    """One linear's weight (NVFP4Tensor or a float array [N, K]) on the device under ``policy``."""
    if isinstance(w, NVFP4Tensor):
        lin = upload_nvfp4(w)
    elif policy == "nvfp4":
        lin = upload_nvfp4(quantize(w, name))
    else:
        lin = upload_dense(w, dense_format(w, policy), name)
    if bias is not None:
        lin.bias = _cp().asarray(_float32(bias)).reshape(-1)
    return lin


def fuse(parts: list[DeviceLinear], name: str = "") -> DeviceLinear:
    """Concatenate the rows of linears that read the same input (same K, same format)."""
    cp = _cp()
    if len(parts) == 1:
        return parts[0]
    first = parts[0]
    if any(p.fmt != first.fmt or p.K != first.K for p in parts):
        raise Unsupported(f"engine: cannot fuse {name}: formats/widths differ "
                          f"({[(p.fmt, p.K) for p in parts]}); give them one weight format")
    if first.fmt == FMT_NVFP4 and len({p.ct for p in parts if float(p.gscale[0].get()) != 0.0}) > 1:
        raise Unsupported(f"engine: cannot fuse {name}: NVFP4 parts mix compressed-tensors and ModelOpt layouts")

    def cat(attr):
        arrays = [getattr(p, attr) for p in parts]
        return None if all(a is None for a in arrays) else cp.concatenate(
            [a if a is not None else cp.zeros(p.N, cp.float32) for a, p in zip(arrays, parts)])

    ct = next((p.ct for p in parts if p.gscale is not None and float(p.gscale[0].get()) != 0.0), True)
    return DeviceLinear(first.fmt, sum(p.N for p in parts), first.K, cat("data"), cat("scales"), cat("rmult"),
                        cat("gscale"), ct, cat("bias"))


def vector(a, n: int | None = None, name: str = ""):
    """A float32 device vector (norm weights, sinks, biases)."""
    cp = _cp()
    v = cp.asarray(_float32(a)).reshape(-1)
    if n is not None and v.shape[0] != n:
        raise Unsupported(f"engine: {name} has {v.shape[0]} entries, expected {n}")
    return v


def as_device_linear(weight, bias=None, *, name: str = "weight") -> DeviceLinear:
    """A fused op's weight operand (NVFP4Tensor: native; float32 / float16 / bf16 array: that format, exact) on
    the device, with its bias; stacked experts [E, N, K] become one DeviceLinear of E * N rows (N rows each)."""
    if isinstance(weight, NVFP4Tensor):
        return upload(NVFP4Tensor(_cp().asarray(weight.packed), _cp().asarray(weight.scales), weight.global_scale,
                                  weight.layout), "auto", name, bias=bias)
    a = weight if hasattr(weight, "__cuda_array_interface__") else np.asarray(weight)
    fmt = FMT_BF16 if _is_bf16(a) else FMT_F16 if a.dtype == np.float16 else FMT_F32
    if a.ndim == 3:
        e, n, k = (int(d) for d in a.shape)
        lin = upload_dense(a.reshape(e * n, k), fmt, name)
        lin.N, lin.experts = n, e
    else:
        lin = upload_dense(a, fmt, name)
    if bias is not None:
        lin.bias = _cp().asarray(_float32(bias)).reshape(-1)
    return lin
