"""Cross-check cases of linear (impnb/reference/linear.py): awkward widths, bias, decode rows, real projections."""
from __future__ import annotations

import numpy as np

from . import case


def _xw(rng, t, n, k):
    x = rng.standard_normal((t, k)).astype(np.float32)
    w = (rng.standard_normal((n, k)) / np.sqrt(k)).astype(np.float32)
    return x, w


@case("linear", "awkward_bias")
def _awkward(rng, size):
    t, n, k = (3, 13, 11) if size == "tiny" else (5, 1536, 576)  # real: SmolLM2 ffn_up
    x, w = _xw(rng, t, n, k)
    return (x, w, rng.standard_normal(n).astype(np.float32)), {}


@case("linear", "decode_row")
def _decode(rng, size):
    n, k = (7, 16) if size == "tiny" else (640, 2048)  # real: Gemma-3-270M ffn_down
    return _xw(rng, 1, n, k), {}
