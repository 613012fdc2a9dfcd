"""Sampling ops: logits processing and a deterministic token choice that both backends can reproduce exactly.

Dimension legend:
  V = vocabulary size; "..." = any leading rows (one row per position being sampled; one row in generation)
  N = number of ids in a token set (penalised ids, banned ids)

The chain used by ``impnb.sampling`` (the order of HF transformers' processors and warpers):
  repetition_penalty -> ban_tokens -> (greedy: argmax_token)
                                   -> (sampling: filter_logits [temperature, top-k, top-p, min-p] -> sample_token)

Determinism contract (why these ops exist as registry ops and not as ``np.random`` calls):
  * "stable order" = descending logit, ties broken by the LOWER token id. top-k keeps exactly k tokens in that order.
  * The random draw is NOT made here: the caller passes a uniform ``u`` in [0, 1) (impnb.sampling draws it from a
    seeded numpy Generator), and ``sample_token`` inverts the CDF of the filtered distribution in token-id order.
    The same logits and the same u give the same id on every backend.
  * Keep/cut decisions and the CDF use float64 (GPUs have it; V is ~1e5), so backends can only disagree when a
    cumulative sum lands within ~1e-15 of a threshold.
"""
from __future__ import annotations

import numpy as np


def _as_rows(logits) -> np.ndarray:
    x = np.asarray(logits)
    if x.ndim == 0:
        raise ValueError("logits must have a vocabulary axis, got a scalar")
    if x.dtype.kind != "f":
        raise ValueError(f"logits must be floating point, got {x.dtype}")
    return x.astype(np.float32, copy=True)


def _token_set(ids, vocab: int, what: str) -> np.ndarray:
    ids = np.unique(np.asarray(ids if ids is not None else [], dtype=np.int64).reshape(-1))  # [N], a set
    if ids.size and (ids[0] < 0 or ids[-1] >= vocab):
        bad = ids[(ids < 0) | (ids >= vocab)]
        raise ValueError(f"{what}: token id(s) {bad[:8].tolist()} outside the vocabulary [0, {vocab})")
    return ids


def repetition_penalty(logits, token_ids, penalty: float):
    """CTRL-style repetition penalty (Keskar et al. 2019; HF ``RepetitionPenaltyLogitsProcessor``).

    For every id t in the SET ``token_ids`` (duplicates count once), in every row:
        x[t] <- x[t] * penalty   if x[t] < 0
        x[t] <- x[t] / penalty   otherwise
    Shapes: logits [..., V] float -> float32 [..., V]; token_ids [N] int. penalty > 0; 1.0 is the identity.
    One correctly rounded float32 multiply or divide per touched element.
    """
    x = _as_rows(logits)
    if not penalty > 0:
        raise ValueError(f"repetition penalty must be > 0, got {penalty}")
    ids = _token_set(token_ids, x.shape[-1], "repetition_penalty")
    if ids.size == 0 or penalty == 1.0:
        return x
    p = np.float32(penalty)
    picked = x[..., ids]  # [..., N]
    x[..., ids] = np.where(picked < 0, picked * p, picked / p)
    return x


def ban_tokens(logits, banned_ids):
    """Banned tokens can never be chosen: x[..., t] <- -inf for every t in ``banned_ids``.

    Shapes: logits [..., V] -> float32 [..., V]; banned_ids [N] int (a set). Applied before greedy AND sampling
    (an engine once skipped it on its greedy fast path and emitted a banned marker as the first token).
    """
    x = _as_rows(logits)
    ids = _token_set(banned_ids, x.shape[-1], "ban_tokens")
    x[..., ids] = -np.inf
    return x


def stable_order(x: np.ndarray) -> np.ndarray:
    """Token ids sorted by descending value, ties by ascending id: [..., V] -> int64 [..., V]."""
    return np.argsort(-x, axis=-1, kind="stable")


def _check_row_values(x: np.ndarray, op: str) -> None:
    if np.isnan(x).any() or np.isposinf(x).any():
        raise ValueError(f"{op}: logits contain NaN or +inf")
    if not np.isfinite(x).any(axis=-1).all():
        raise ValueError(f"{op}: a row has no finite logit (every token banned or filtered)")


def _softmax64(x: np.ndarray) -> np.ndarray:
    """float64 softmax over the last axis; -inf entries get probability 0. Rows must have a finite entry."""
    m = np.max(x, axis=-1, keepdims=True).astype(np.float64)
    e = np.exp(x.astype(np.float64) - m)
    return e / np.sum(e, axis=-1, keepdims=True)


def _cut_top_k(x: np.ndarray, order: np.ndarray, top_k: int) -> None:
    if 0 < top_k < x.shape[-1]:
        np.put_along_axis(x, order[..., top_k:], -np.inf, axis=-1)


def _cut_top_p(x: np.ndarray, order: np.ndarray, top_p: float) -> None:
    if top_p >= 1.0:
        return
    p_sorted = np.take_along_axis(_softmax64(x), order, axis=-1)  # [..., V], descending
    mass_before = np.cumsum(p_sorted, axis=-1) - p_sorted            # exclusive prefix sum
    cut = mass_before >= top_p
    cut[..., 0] = False                                              # the most likely token always survives
    np.put_along_axis(x, order, np.where(cut, -np.inf, np.take_along_axis(x, order, axis=-1)), axis=-1)


def _cut_min_p(x: np.ndarray, min_p: float) -> None:
    if min_p <= 0.0:
        return
    m = np.max(x, axis=-1, keepdims=True).astype(np.float64)
    ratio = np.exp(x.astype(np.float64) - m)                         # p / p_max
    x[ratio < min_p] = -np.inf


def filter_logits(logits, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0, min_p: float = 0.0):
    """Temperature, then top-k, top-p and min-p filtering, in that order (HF's warper order).

        x  = logits / temperature                    (float32, one correctly rounded division)
        top-k (k > 0):     keep the first k ids of the stable order (descending, ties -> lower id); k = 0 is off
        top-p (p < 1):     p_i = softmax(x) in float64; walking the stable order, keep id j while the mass of the
                           ids BEFORE it is < top_p (the smallest prefix with mass >= top_p); the first id is kept
        min-p (m > 0):     keep ids with p_i >= m * max_j p_j, i.e. exp(x_i - max x) >= m (float64)
    Each filter sees the survivors of the previous one (renormalised). Filtered entries become -inf.
    Shapes: logits [..., V] -> float32 [..., V]. A row with no finite logit is an error.
    """
    x = _as_rows(logits)
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0 for filter_logits (greedy uses argmax_token), got {temperature}")
    if top_k < 0 or not 0.0 < top_p <= 1.0 or not 0.0 <= min_p <= 1.0:
        raise ValueError(f"need top_k >= 0, 0 < top_p <= 1, 0 <= min_p <= 1; got {top_k}, {top_p}, {min_p}")
    _check_row_values(x, "filter_logits")
    x = x / np.float32(temperature)
    order = stable_order(x)
    _cut_top_k(x, order, int(top_k))
    _cut_top_p(x, order, float(top_p))
    _cut_min_p(x, float(min_p))
    return x


def sample_token(logits, u):
    """Inverse-CDF draw from softmax(logits), in token-id order, with a caller-supplied uniform u in [0, 1).

        p_i   = exp(x_i - max x)  (float64; -inf -> 0)          cdf_i = p_0 + ... + p_i  (in id order)
        token = the smallest i with cdf_i > u * cdf_{V-1}
    Tokens with probability 0 are never chosen. Shapes: logits [..., V], u [...] (or a scalar for one row)
    -> int64 [...]. Deterministic: same logits and u give the same id on every backend.
    """
    x = np.asarray(logits, dtype=np.float32)
    u = np.asarray(u, dtype=np.float64)
    if u.shape != x.shape[:-1]:
        raise ValueError(f"u has shape {u.shape}; expected one draw per row {x.shape[:-1]}")
    if ((u < 0) | (u >= 1) | np.isnan(u)).any():
        raise ValueError(f"u must lie in [0, 1), got {u}")
    _check_row_values(x, "sample_token")
    m = np.max(x, axis=-1, keepdims=True).astype(np.float64)
    cdf = np.cumsum(np.exp(x.astype(np.float64) - m), axis=-1)       # [..., V]
    target = (u * cdf[..., -1])[..., None]                            # [..., 1]
    ids = np.sum(cdf <= target, axis=-1)                              # first i with cdf_i > target
    return np.minimum(ids, x.shape[-1] - 1).astype(np.int64)


def argmax_token(logits):
    """Greedy choice: the id of the largest logit, the LOWEST id on ties. [..., V] -> int64 [...].

    NaN logits are a bug upstream: they raise ValueError here instead of silently picking a token.
    """
    x = np.asarray(logits)
    if x.ndim == 0:
        raise ValueError("logits must have a vocabulary axis, got a scalar")
    if np.isnan(x).any():
        raise ValueError("argmax_token: logits contain NaN")
    return np.argmax(x, axis=-1).astype(np.int64)
