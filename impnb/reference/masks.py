"""Attention masks over KV-cache slots: the reference for impnb/cuda/masks.py. Bit-exact contract.

Dimensions: T = query tokens, S = slots in the cache VIEW the attention kernel reads.

Every cache slot records the absolute position it holds (-1: empty). The mask is built in the VIEW frame, the
same slot order the kernel reads K and V in, from those recorded positions:

    allowed[t, s] = slot_pos[s] >= 0
                    and slot_pos[s] <= query_pos[t]
                    and (window is None or query_pos[t] - slot_pos[s] < window)

Because it never assumes slot s holds position view_start + s, it stays right across ring-buffer wrap-around and
non-monotonic slot order (a mask written in absolute KV coordinates but read by view index is shifted by the
ring's start: whole rows of -inf, then NaN). ``window`` counts the query itself: window W lets a query
see W keys (HF ``sliding_window_overlay``: kv_idx > q_idx - W).
"""
from __future__ import annotations

import numpy as np


def attention_mask(query_pos, slot_pos, *, window=None):
    """bool [T, S]: may query t (absolute position query_pos[t]) attend to the key in view slot s?"""
    q = np.asarray(query_pos, dtype=np.int64)[:, None]  # [T, 1]
    k = np.asarray(slot_pos, dtype=np.int64)[None, :]  # [1, S]
    allowed = (k >= 0) & (k <= q)
    if window is not None:
        if window <= 0:
            raise ValueError(f"attention_mask: window must be positive, got {window}")
        allowed &= (q - k) < window
    return allowed
