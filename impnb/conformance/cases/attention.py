"""Cross-check cases of attention (impnb/reference/attention.py): GQA groups, masks from a wrapped ring, softcap,
sinks, unequal v head dim, decode rows."""
from __future__ import annotations

import numpy as np

from impnb.reference.masks import attention_mask

from . import case


def _qkv(rng, t, s, hq, hkv, d, dv=None):
    q = rng.standard_normal((t, hq, d)).astype(np.float32)
    k = rng.standard_normal((s, hkv, d)).astype(np.float32)
    v = rng.standard_normal((s, hkv, dv or d)).astype(np.float32)
    return q, k, v


def _causal(t, s):
    return attention_mask(np.arange(s - t, s), np.arange(s))


@case("attention", "gqa_causal")
def _gqa(rng, size):
    t, s, hq, hkv, d = (3, 7, 4, 2, 8) if size == "tiny" else (16, 700, 9, 3, 64)  # real: SmolLM2 geometry
    q, k, v = _qkv(rng, t, s, hq, hkv, d)
    return (q, k, v, _causal(t, s)), {"scale": d ** -0.5}


@case("attention", "ring_window_softcap")
def _ring(rng, size):
    ring, window, t = (8, 5, 2) if size == "tiny" else (768, 512, 1)  # real: Gemma-3 sliding layer decode
    pos = np.full(ring, -1, np.int64)
    written = 3 * ring + 1
    for p in range(written - ring, written):
        pos[p % ring] = p
    q, k, v = _qkv(rng, t, ring, 4, 1, 16 if size == "tiny" else 256)
    mask = attention_mask(np.arange(written - t, written), pos, window=window)
    return (q, k, v, mask), {"scale": 0.0625, "softcap": 50.0}


@case("attention", "sinks_decode")
def _sinks(rng, size):
    s, hq, hkv, d = (6, 4, 2, 8) if size == "tiny" else (1000, 64, 8, 64)  # real: gpt-oss geometry
    q, k, v = _qkv(rng, 1, s, hq, hkv, d)
    sinks = rng.standard_normal(hq).astype(np.float32)
    return (q, k, v, _causal(1, s)), {"scale": d ** -0.5, "sinks": sinks}


@case("attention", "dv_differs")
def _dv(rng, size):
    t, s, hq, hkv, d, dv = (2, 5, 2, 1, 8, 4) if size == "tiny" else (4, 300, 8, 2, 192, 128)
    q, k, v = _qkv(rng, t, s, hq, hkv, d, dv)
    return (q, k, v, _causal(t, s)), {"scale": 1.0}
