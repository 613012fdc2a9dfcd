"""Token embedding lookup, CUDA path (same signature as impnb/reference/embedding.py): kernels/embedding.cu.

Dimensions: T tokens, V vocabulary, D hidden. rows = table[ids] * scale. ``embed`` launches on a resident table
(a DeviceLinear: dense f32 / f16 / bf16 rows ``embed_rows``, NVFP4 rows decoded ``embed_nvfp4_rows``) with device
ids (the engine: the token slot of its state in decode, the prompt in prefill). Ids outside [0, V) raise
IndexError naming the id (checked before the gather). GPU only (CuPy).
"""
from __future__ import annotations

import numpy as np

from . import _alloc
from ._launch import gpu_only, launch_raw, require_gpu


def embed(table, ids, x, rows: int, scale: float) -> None:
    """x[m, :] = table[ids[m], :] * scale for m < rows; ``table`` a DeviceLinear, ids int32 on the device."""
    from ._kernels import FMT_NVFP4
    if table.fmt == FMT_NVFP4:
        launch_raw("embedding.cu", "embed_nvfp4_rows", (rows,), (256,),
                   (table.data, table.scales, table.rmult, ids, x, table.K, float(scale)))
    else:
        launch_raw("embedding.cu", "embed_rows", (rows,), (256,), (table.data, table.fmt, ids, x, table.K,
                                                                   float(scale)))


@gpu_only
def embedding(ids, table, *, scale=1.0):
    """Rows of ``table`` [V, D] at ``ids`` [T] (int), times ``scale``: float32 [T, D]."""
    require_gpu("embedding")
    import cupy as cp
    ids = cp.asarray(ids)
    if ids.dtype.kind not in "iu":
        raise TypeError(f"embedding ids must be integers, got {ids.dtype}")
    vocab = table.shape[0]
    bad = (ids < 0) | (ids >= vocab)
    if bool(bad.any()):
        raise IndexError(f"token id {int(ids[bad][0])} outside the vocabulary [0, {vocab})")
    lin = _device_table(table)
    flat = cp.ascontiguousarray(ids.reshape(-1).astype(cp.int32))
    out = _alloc.empty(tuple(ids.shape) + (lin.K,), np.float32, label="embedding")
    embed(lin, flat, out, int(flat.size), float(np.float32(scale)))
    return out


def _device_table(table):
    """The table as a DeviceLinear: NVFP4 as stored, bf16 as its bits, f16 as is, anything else as float32."""
    import cupy as cp
    from ..formats import NVFP4Tensor
    from ._device_weights import DeviceLinear, _is_bf16, as_device_linear
    from ._kernels import FMT_BF16, FMT_F16, FMT_F32
    if isinstance(table, NVFP4Tensor):
        return as_device_linear(table, name="embedding table")
    if _is_bf16(table):
        data, fmt = cp.asarray(np.ascontiguousarray(table).view(np.uint16)), FMT_BF16
    elif table.dtype == np.float16:
        data, fmt = cp.ascontiguousarray(cp.asarray(table)), FMT_F16
    else:
        data, fmt = cp.ascontiguousarray(cp.asarray(table, dtype=cp.float32)), FMT_F32
    return DeviceLinear(fmt, int(table.shape[0]), int(table.shape[1]), data)
