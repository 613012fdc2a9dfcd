"""Cross-check cases of attention_mask (impnb/reference/masks.py): ring buffers after wrap-around (non-monotonic
slot order), empty slots, windows, full attention."""
from __future__ import annotations

import numpy as np

from . import case


def _ring(ring, written):
    """Slot positions of a ring of ``ring`` slots after ``written`` tokens (position p lives in slot p % ring)."""
    pos = np.full(ring, -1, np.int64)
    for p in range(max(0, written - ring), written):
        pos[p % ring] = p
    return pos


@case("attention_mask", "ring_wrapped")
def _wrapped(rng, size):
    window, chunk = (5, 3) if size == "tiny" else (512, 256)
    ring = window + chunk
    written = int(rng.integers(2 * ring, 4 * ring))
    q = np.arange(written - chunk, written, dtype=np.int64)
    return (q, _ring(ring, written)), {"window": window}


@case("attention_mask", "ring_partly_empty")
def _empty(rng, size):
    ring = 9 if size == "tiny" else 768
    written = ring // 2
    return (np.arange(written - 2, written, dtype=np.int64), _ring(ring, written)), {"window": ring // 3}


@case("attention_mask", "full_causal_shuffled")
def _full(rng, size):
    s = 11 if size == "tiny" else 4096
    pos = rng.permutation(s).astype(np.int64)
    pos[rng.integers(0, s, size=2)] = -1
    return (np.array([s // 2, s - 1], dtype=np.int64), pos), {}
