"""Mutants of the sampling ops: repetition penalty, banned tokens, temperature / top-k / top-p / min-p, the draw
and greedy argmax."""
from __future__ import annotations

import numpy as np

from . import copy_of, mutant

F32 = np.float32


@copy_of("repetition_penalty")
def repetition_penalty(logits, token_ids, penalty, *, sign_rule=True, as_set=True):
    x = np.asarray(logits, dtype=F32).copy()
    ids = np.asarray(token_ids, dtype=np.int64).reshape(-1)
    ids = np.unique(ids) if as_set else ids
    p = F32(penalty)
    for t in ids.tolist():  # one id at a time: a repeated id is penalised again when as_set is off
        v = x[..., t]
        x[..., t] = np.where(v < 0, v * p, v / p) if sign_rule else v / p
    return x


mutant("repetition_penalty", "always_divides", "divides every penalised logit by the penalty, negative ones "
       "too (they should be multiplied)", repetition_penalty, sign_rule=False)
mutant("repetition_penalty", "per_occurrence", "penalises an id once per occurrence instead of once", 
       repetition_penalty, as_set=False)


@copy_of("ban_tokens")
def ban_tokens(logits, banned_ids, *, banned_value=-np.inf):
    x = np.asarray(logits, dtype=F32).copy()
    x[..., np.unique(np.asarray(banned_ids, dtype=np.int64))] = F32(banned_value)
    return x


mutant("ban_tokens", "finite_ban", "writes the lowest float32 instead of -inf", ban_tokens,
       banned_value=float(np.finfo(F32).min))


def _stable_order(x, *, higher_id_first=False):
    if higher_id_first:
        return np.argsort(x, axis=-1, kind="stable")[..., ::-1]
    return np.argsort(-x, axis=-1, kind="stable")


@copy_of("filter_logits")
def filter_logits(logits, temperature=1.0, top_k=0, top_p=1.0, min_p=0.0, *, temperature_first=True,
                  temperature_reciprocal=False, top_k_ties_higher=False, top_p_inclusive=False,
                  min_p_absolute=False, order=("top_k", "top_p", "min_p")):
    x = np.asarray(logits, dtype=F32).copy()
    if temperature_first:
        x = x * (F32(1.0) / F32(temperature)) if temperature_reciprocal else x / F32(temperature)
    for step in order:
        if step == "top_k" and 0 < top_k < x.shape[-1]:
            np.put_along_axis(x, _stable_order(x, higher_id_first=top_k_ties_higher)[..., top_k:], -np.inf, axis=-1)
        elif step == "top_p" and top_p < 1.0:
            _cut_top_p(x, top_p, top_p_inclusive)
        elif step == "min_p" and min_p > 0.0:
            p = _softmax64(x)
            x[p < (min_p if min_p_absolute else min_p * p.max(axis=-1, keepdims=True))] = -np.inf
    if not temperature_first:
        x = x / F32(temperature)
    return x


def _cut_top_p(x, top_p, inclusive):
    order = _stable_order(x)
    p = np.take_along_axis(_softmax64(x), order, axis=-1)
    mass = np.cumsum(p, axis=-1) - (0.0 if inclusive else p)
    cut = mass >= top_p
    cut[..., 0] = False
    np.put_along_axis(x, order, np.where(cut, -np.inf, np.take_along_axis(x, order, axis=-1)), axis=-1)


def _softmax64(x):
    e = np.exp(x.astype(np.float64) - np.max(x, axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


mutant("filter_logits", "temperature_last", "filters the untempered logits and divides by the temperature at the "
       "end", filter_logits, temperature_first=False)
mutant("filter_logits", "top_p_before_top_k", "applies top-p to the whole vocabulary, then top-k", filter_logits,
       order=("top_p", "top_k", "min_p"))
mutant("filter_logits", "min_p_before_top_p", "applies min-p before top-p (top-p then sees the min-p survivors)",
       filter_logits, order=("top_k", "min_p", "top_p"))
mutant("filter_logits", "temperature_reciprocal", "multiplies by 1 / temperature (two roundings) instead of "
       "dividing", filter_logits, temperature_reciprocal=True)
mutant("filter_logits", "top_k_ties_to_higher_id", "breaks a tie at the top-k cut toward the higher id",
       filter_logits, top_k_ties_higher=True)
mutant("filter_logits", "top_p_one_too_few", "cuts a token once the mass INCLUDING it reaches top_p (drops the "
       "token that crosses the threshold)", filter_logits, top_p_inclusive=True)
mutant("filter_logits", "min_p_absolute", "compares min_p with each probability instead of min_p * max prob",
       filter_logits, min_p_absolute=True)


@copy_of("sample_token")
def sample_token(logits, u, *, id_order=True, scale_u=True, first_at_or_above=False, cdf_dtype=np.float64):
    x = np.asarray(logits, dtype=F32)
    u = np.asarray(u, dtype=np.float64)
    order = np.broadcast_to(np.arange(x.shape[-1]), x.shape) if id_order else _stable_order(x)
    p = np.take_along_axis(np.exp(x.astype(cdf_dtype) - np.max(x, axis=-1, keepdims=True)), order, axis=-1)
    cdf = np.cumsum(p, axis=-1, dtype=cdf_dtype)
    target = (u * cdf[..., -1] if scale_u else u)[..., None]
    below = (cdf < target) if first_at_or_above else (cdf <= target)
    pick = np.minimum(np.sum(below, axis=-1), x.shape[-1] - 1)
    return np.take_along_axis(order, pick[..., None], axis=-1)[..., 0].astype(np.int64)


mutant("sample_token", "sorted_cdf", "walks the CDF in descending-probability order instead of id order",
       sample_token, id_order=False)
mutant("sample_token", "first_at_or_above", "takes the first id with cdf >= u * total (must be strictly above)",
       sample_token, first_at_or_above=True)
mutant("sample_token", "float32_cdf", "builds the CDF in float32 (the contract is float64)", sample_token,
       cdf_dtype=np.float32)
mutant("sample_token", "unnormalised_u", "compares u with an unnormalised CDF (u not scaled by the total mass)",
       sample_token, scale_u=False)


@copy_of("argmax_token")
def argmax_token(logits, *, last_on_ties=False):
    x = np.asarray(logits)
    if last_on_ties:
        return (x.shape[-1] - 1 - np.argmax(x[..., ::-1], axis=-1)).astype(np.int64)
    return np.argmax(x, axis=-1).astype(np.int64)


mutant("argmax_token", "ties_to_last_id", "returns the highest id among equal maxima", argmax_token,
       last_on_ties=True)
