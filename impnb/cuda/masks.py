"""Attention masks over KV-cache slots, CUDA path (same signature as impnb/reference/masks.py). Bit-exact.

Dimensions: T query tokens, S slots of the cache view. allowed[t, s] = slot_pos[s] >= 0 and slot_pos[s] <=
query_pos[t] and (window is None or query_pos[t] - slot_pos[s] < window), from the positions the slots RECORD
(never from slot indices). The decode attention kernel (kernels/attention.cu attention_partials) applies the same
predicate inline. GPU only (CuPy).
"""
from __future__ import annotations

from ._outputs import guarded
from ._launch import gpu_only, require_gpu


@gpu_only
def attention_mask(query_pos, slot_pos, *, window=None):
    """bool [T, S]: may query t (absolute position query_pos[t]) attend to the key in view slot s?"""
    require_gpu("attention_mask")
    import cupy as cp
    q = cp.asarray(query_pos, dtype=cp.int64)[:, None]  # [T, 1]
    k = cp.asarray(slot_pos, dtype=cp.int64)[None, :]  # [1, S]
    allowed = (k >= 0) & (k <= q)
    if window is not None:
        if window <= 0:
            raise ValueError(f"attention_mask: window must be positive, got {window}")
        allowed &= (q - k) < window
    return guarded(allowed, "attention_mask")
