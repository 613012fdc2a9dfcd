"""Input checks and conversions shared by the CUDA-path ops (the same errors the reference raises)."""
from __future__ import annotations

import numpy as np

from ._launch import xp


def real_input(x, op: str):
    """``x`` on the device; TypeError for non-real dtypes (as the reference)."""
    a = xp().asarray(x)
    if a.dtype.kind not in "fiub":
        raise TypeError(f"{op}: input must be real numbers, got dtype {a.dtype}")
    return a


F32_SUBNORMAL_STEP = 2.0 ** -149  # the float32 subnormal spacing: value = mantissa field * 2^-149


def as_float64_flat(a):
    """Contiguous float64 copy, flattened: exact for every float16/float32 (and small integer) input.

    CuPy compiles its elementwise kernels with flush-to-zero, so its float32 -> float64 cast turns a float32
    subnormal into +-0.0 (a negative one would then lose the sign that the encoders keep). Zeros and subnormals
    are rebuilt from their bits instead: mantissa * 2^-149 with the sign, in float64, which is never flushed."""
    mod = xp()
    flat = mod.ascontiguousarray(a).reshape(-1)
    wide = flat.astype(np.float64)
    if flat.dtype != np.float32:
        return wide
    bits = flat.view(np.uint32)
    tiny = (bits & np.uint32(0x7F800000)) == 0
    rebuilt = (bits & np.uint32(0x007FFFFF)).astype(np.float64) * F32_SUBNORMAL_STEP
    return mod.where(tiny, mod.where(bits >> np.uint32(31) != 0, -rebuilt, rebuilt), wide)


def codes_input(codes, top: int, op: str):
    """Integer codes in 0..top on the device as contiguous uint8 (errors as the reference's _as_codes)."""
    c = xp().asarray(codes)
    if c.dtype.kind not in "iu":
        raise TypeError(f"{op}: codes must be integers (uint8), got dtype {c.dtype}")
    if c.size:
        lo, hi = int(c.min()), int(c.max())
        if lo < 0 or hi > top:
            raise ValueError(f"{op}: codes must lie in 0..{top}, got min {lo} max {hi}")
    return xp().ascontiguousarray(c.astype(np.uint8))


def kernel_float32(a):
    """``a`` as a contiguous float32 array of the CUDA path for a Numba kernel argument. A read-only NumPy array
    (an mmap'ed checkpoint weight) is copied: the simulator writes every array argument back after a launch."""
    out = xp().ascontiguousarray(xp().asarray(a), dtype=np.float32)
    if isinstance(out, np.ndarray) and not out.flags.writeable:
        out = out.copy()
    return out
