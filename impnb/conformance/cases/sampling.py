"""Cross-check cases of the sampling ops (impnb/reference/sampling.py).

Logits are random normals times a spread typical of LM heads, on awkward vocab sizes (tiny) and the vocabularies
of the two real models (real). Ties are planted on purpose (for first place, and straddling the top-k cut): the
contract breaks them toward the lower id. Penalised ids repeat (a set: each id is penalised once). Each filter
also runs alone, so a wrong temperature, top-k, top-p or min-p rule cannot hide behind another.
"""
from __future__ import annotations

import numpy as np

from . import case

# rows, vocab: tiny for the simulator, real = one decode row of the real models
_SHAPES = {"tiny": [(3, 37), (1, 5)], "real": [(1, 49152), (4, 262144)]}  # SmolLM2-135M, Gemma-3-270M


def _logits(rng, rows, vocab, *, ties=True):
    x = (rng.standard_normal((rows, vocab)) * 4.0).astype(np.float32)  # [rows, V]
    if ties and vocab > 4:
        top = int(np.argmax(x[0]))
        other = (top + vocab // 2) % vocab
        x[0, other] = x[0, top]  # an exact tie for first place
    return x


def _shape(size, i):
    shapes = _SHAPES[size]
    return shapes[i % len(shapes)]


def _ids(rng, vocab, n):
    ids = rng.integers(0, vocab, size=n).astype(np.int64)  # [N]
    return np.concatenate([ids, ids[:2]])  # duplicates on purpose: each id is penalised once


@case("repetition_penalty", "mixed_signs")
def _(rng, size):
    rows, vocab = _shape(size, 0)
    return (_logits(rng, rows, vocab), _ids(rng, vocab, max(3, vocab // 10)), 1.3), {}


@case("repetition_penalty", "below_one")
def _(rng, size):
    rows, vocab = _shape(size, 1)
    return (_logits(rng, rows, vocab), _ids(rng, vocab, 4), 0.7), {}


@case("ban_tokens", "some")
def _(rng, size):
    rows, vocab = _shape(size, 0)
    return (_logits(rng, rows, vocab), _ids(rng, vocab, 3)), {}


@case("ban_tokens", "the_argmax")
def _(rng, size):
    rows, vocab = _shape(size, 1)
    x = _logits(rng, rows, vocab)
    return (x, np.argmax(x, axis=-1)), {}


@case("filter_logits", "top_k")
def _(rng, size):
    rows, vocab = _shape(size, 0)
    return (_logits(rng, rows, vocab),), {"temperature": 0.8, "top_k": 3}


@case("filter_logits", "top_p_min_p")
def _(rng, size):
    rows, vocab = _shape(size, 0)
    return (_logits(rng, rows, vocab),), {"temperature": 1.3, "top_p": 0.9, "min_p": 0.05}


@case("filter_logits", "all_filters")
def _(rng, size):
    rows, vocab = _shape(size, 1)
    return (_logits(rng, rows, vocab),), {"temperature": 0.6, "top_k": 40, "top_p": 0.95, "min_p": 0.02}


@case("sample_token", "filtered")
def _(rng, size):
    rows, vocab = _shape(size, 0)
    from impnb.reference.sampling import filter_logits
    x = filter_logits(_logits(rng, rows, vocab), temperature=0.9, top_p=0.8)
    return (x, rng.random(rows)), {}


@case("sample_token", "flat")
def _(rng, size):
    rows, vocab = _shape(size, 1)
    return (_logits(rng, rows, vocab) * np.float32(0.05), rng.random(rows)), {}


@case("argmax_token", "ties")
def _(rng, size):
    rows, vocab = _shape(size, 0)
    return (_logits(rng, rows, vocab),), {}


@case("argmax_token", "with_banned")
def _(rng, size):
    rows, vocab = _shape(size, 1)
    x = _logits(rng, rows, vocab)
    x[:, : vocab // 2] = -np.inf
    return (x,), {}


def _tie_at_cut(rng, rows, vocab, k):
    """Logits whose k-th and (k+1)-th largest values of every row are equal, the pair in reverse id order."""
    x = _logits(rng, rows, vocab, ties=False)
    order = np.argsort(-x, axis=-1, kind="stable")
    for r in range(rows):
        hi, lo = sorted(order[r, k - 1:k + 1].tolist())
        x[r, hi] = x[r, lo]  # the higher id copies the lower id's value: a tie exactly at the cut
    return x


@case("filter_logits", "top_k_tie_at_cut")
def _(rng, size):
    rows, vocab = _shape(size, 0)
    return (_tie_at_cut(rng, rows, vocab, 4),), {"top_k": 4}


@case("filter_logits", "temperature_only")
def _(rng, size):
    rows, vocab = _shape(size, 0)
    return (_logits(rng, rows, vocab),), {"temperature": 0.37}


@case("filter_logits", "top_p_only")
def _(rng, size):
    rows, vocab = _shape(size, 0)
    return (_logits(rng, rows, vocab) * np.float32(0.5),), {"top_p": 0.6}


@case("filter_logits", "min_p_only")
def _(rng, size):
    rows, vocab = _shape(size, 0)
    return (_logits(rng, rows, vocab) * np.float32(0.3),), {"min_p": 0.3}  # flat rows: p_max well below 1


@case("sample_token", "peaked_u_edges")
def _(rng, size):
    rows, vocab = _shape(size, 0)
    u = np.linspace(0.0, 0.999, rows)  # u = 0 picks the first id with mass
    return (_logits(rng, rows, vocab), u), {}


def _u_on_bin_edges(x, rng):
    """u [rows] with u * cdf[V-1] == cdf[i] exactly (float64, the reference's CDF) for a random i with mass:
    the draw must take i + 1 (the first cdf strictly above the target), so an off-by-one or a float32 CDF shows."""
    m = np.max(x, axis=-1, keepdims=True).astype(np.float64)
    cdf = np.cumsum(np.exp(x.astype(np.float64) - m), axis=-1)
    u = np.empty(x.shape[0])
    for r in range(x.shape[0]):
        i = int(rng.integers(0, x.shape[1] - 1))
        u[r] = cdf[r, i] / cdf[r, -1]
        for _ in range(64):  # walk to a u whose product with the total is exactly cdf[i]
            if u[r] * cdf[r, -1] == cdf[r, i]:
                break
            u[r] = np.nextafter(u[r], 1.0 if u[r] * cdf[r, -1] < cdf[r, i] else 0.0)
    return u


@case("sample_token", "u_on_bin_edges")
def _(rng, size):
    rows, vocab = _shape(size, 0)
    x = _logits(rng, 4 * rows, vocab) * np.float32(0.2)  # flat rows: every id has mass
    return (x, _u_on_bin_edges(x, rng)), {}


@case("filter_logits", "top_k_and_top_p")
def _(rng, size):
    rows, vocab = _shape(size, 0)
    return (_logits(rng, rows, vocab) * np.float32(0.4),), {"top_k": 6, "top_p": 0.7}  # both cut: order matters
