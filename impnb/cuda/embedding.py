"""Token embedding lookup, CUDA path (same signature as impnb/reference/embedding.py): a gather on the device.

Dimensions: T tokens, V vocabulary, D hidden. rows = table[ids] * scale (float32 multiply, as the reference). Ids
outside [0, V) raise IndexError naming the id (checked before the gather). GPU only (CuPy).
"""
from __future__ import annotations

from ._outputs import guarded
from ._launch import gpu_only, require_gpu


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
    rows = cp.asarray(table)[ids].astype(cp.float32)
    if scale != 1.0:
        rows = rows * cp.float32(scale)
    return guarded(rows, "embedding")
