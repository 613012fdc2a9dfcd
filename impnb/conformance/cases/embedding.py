"""Cross-check cases of embedding (impnb/reference/embedding.py): Gemma's sqrt(hidden) scale, another multiplier
(Granite's 12), the default 1, repeated ids, the first and last rows."""
from __future__ import annotations

import numpy as np

from . import case


@case("embedding", "scaled_repeats")
def _scaled(rng, size):
    v, d, t = (50, 8, 6) if size == "tiny" else (49152, 576, 32)
    table = rng.standard_normal((v, d)).astype(np.float32)
    ids = rng.integers(0, v, size=t)
    ids[-1] = ids[0]
    return (ids, table), {"scale": float(np.float32(np.sqrt(d)))}


@case("embedding", "edges")
def _edges(rng, size):
    v, d = (17, 5) if size == "tiny" else (262144, 640)
    table = rng.standard_normal((v, d)).astype(np.float32)
    return (np.array([0, v - 1, 1]), table), {}


@case("embedding", "other_multiplier")
def _multiplier(rng, size):
    v, d, t = (40, 12, 5) if size == "tiny" else (49152, 2048, 16)
    table = rng.standard_normal((v, d)).astype(np.float32)
    return (rng.integers(0, v, size=t), table), {"scale": 12.0}  # Granite's embedding_multiplier, not sqrt(D)
