"""Cross-check cases of attention (impnb/reference/attention.py): GQA groups, masks from a wrapped ring, softcap
(with masked slots, so it must come before the mask), sinks, unequal v head dim, decode rows, a row with no
allowed key (zeros, never NaN), scales other than 1 / sqrt(D)."""
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


@case("attention", "fully_masked_row")
def _fully_masked(rng, size):
    t, s, hq, hkv, d = (3, 6, 4, 2, 8) if size == "tiny" else (4, 256, 8, 2, 64)
    q, k, v = _qkv(rng, t, s, hq, hkv, d)
    pos = np.full(s, -1, np.int64)
    pos[: s // 2] = np.arange(s // 2) + 10  # the first query (position 2) sees no key: its row must be zeros
    mask = attention_mask(np.array([2] + [s + 20] * (t - 1)), pos)
    return (q, k, v, mask), {"scale": 0.3}


@case("attention", "softcap_sinks_gqa")
def _softcap_sinks(rng, size):
    t, s, hq, hkv, d = (2, 6, 6, 3, 8) if size == "tiny" else (8, 512, 64, 8, 64)
    q, k, v = _qkv(rng, t, s, hq, hkv, d)
    q *= np.float32(3.0)
    sinks = (2.0 * rng.standard_normal(hq)).astype(np.float32)
    return (q, k, v, _causal(t, s)), {"scale": 0.5, "softcap": 4.0, "sinks": sinks}


@case("attention", "large_scores")
def _large(rng, size):
    t, s, hq, hkv, d = (2, 5, 2, 2, 8) if size == "tiny" else (4, 300, 8, 8, 128)
    q, k, v = _qkv(rng, t, s, hq, hkv, d)
    q *= np.float32(40.0)  # scores of several hundred: exp overflows float32 unless the row max is subtracted
    return (q, k, v, _causal(t, s)), {"scale": 1.0}
