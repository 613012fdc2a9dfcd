"""Token embedding lookup: the reference for impnb/cuda/embedding.py.

Dimensions: T = tokens, V = vocabulary, D = hidden size.
    embedding(ids, table; scale)[t] = table[ids[t]] * scale
Gemma multiplies by sqrt(D) rounded to the weight dtype (float32 here; HF: ``embed_scale.to(weight.dtype)``).
Ids outside [0, V) raise IndexError naming the bad id (never a silent wrap of negative ids).
"""
from __future__ import annotations

import numpy as np


def embedding(ids, table, *, scale=1.0):
    """Rows of ``table`` [V, D] at ``ids`` [T] (int), times ``scale``: float32 [T, D]. ``table``: a float array, or
    an NVFP4Tensor whose rows are dequantized exactly (impnb.reference.nvfp4.nvfp4_dequantize) before the scale."""
    ids = np.asarray(ids)
    if ids.dtype.kind not in "iu":
        raise TypeError(f"embedding ids must be integers, got {ids.dtype}")
    vocab = table.shape[0]
    bad = (ids < 0) | (ids >= vocab)
    if bad.any():
        raise IndexError(f"token id {int(ids[bad][0])} outside the vocabulary [0, {vocab})")
    rows = _rows(table, ids)
    if scale != 1.0:
        rows = rows * np.float32(scale)
    return rows


def _rows(table, ids) -> np.ndarray:
    from ..formats import NVFP4Tensor
    if isinstance(table, NVFP4Tensor):
        from .nvfp4 import nvfp4_dequantize
        flat = ids.reshape(-1)
        picked = NVFP4Tensor(np.asarray(table.packed)[flat], np.asarray(table.scales)[flat], table.global_scale,
                             table.layout)
        return nvfp4_dequantize(picked).reshape(ids.shape + (-1,))
    return np.asarray(table[ids], dtype=np.float32)
