"""Mutants of the MoE ops: routing (top-k, gatings, renormalisation, scales) and the routed expert FFNs."""
from __future__ import annotations

import numpy as np

from ...reference.activations import geglu_tanh, swiglu, swiglu_oai
from . import copy_of, mutant

F32 = np.float32


def _softmax(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return (e / e.sum(axis=-1, keepdims=True, dtype=F32)).astype(F32)


@copy_of("moe_route")
def moe_route(logits, *, top_k, gating="softmax", renormalize=True, expert_scale=None, scale=1.0,
              ties_to_higher_id=False, use_renormalize=True, expert_scale_before_renorm=False,
              topk_softmax_over_all=False, use_scale=True):
    logits = np.asarray(logits, dtype=F32)
    if gating == "softmax" or (gating == "topk_softmax" and topk_softmax_over_all):
        scores = _softmax(logits)
    elif gating == "sigmoid":
        scores = (1.0 / (1.0 + np.exp(-logits.astype(np.float64)))).astype(F32)
    else:
        scores = logits
    if ties_to_higher_id:  # a descending sort that reverses equal keys: the higher id comes first
        ids = np.argsort(scores, axis=-1, kind="stable")[:, ::-1][:, :top_k]
    else:
        ids = np.argsort(-scores, axis=-1, kind="stable")[:, :top_k]
    weights = np.take_along_axis(scores, ids, axis=-1)
    es = None if expert_scale is None else np.asarray(expert_scale, dtype=F32)[ids]
    if es is not None and expert_scale_before_renorm:
        weights = weights * es
    if gating == "topk_softmax":
        weights = weights if topk_softmax_over_all else _softmax(weights)
    elif renormalize and use_renormalize:
        weights = weights / weights.sum(axis=-1, keepdims=True, dtype=F32)
    if es is not None and not expert_scale_before_renorm:
        weights = weights * es
    if scale != 1.0 and use_scale:
        weights = weights * F32(scale)
    return weights.astype(F32), ids.astype(np.int32)


mutant("moe_route", "ties_to_higher_id", "breaks equal router scores toward the higher expert id", moe_route,
       ties_to_higher_id=True)
mutant("moe_route", "renormalize_skipped", "does not renormalise the top-k weights to sum 1", moe_route,
       use_renormalize=False)
mutant("moe_route", "expert_scale_before_renorm", "applies the per-expert scale before renormalising (it cancels "
       "out)", moe_route, expert_scale_before_renorm=True)
mutant("moe_route", "topk_softmax_over_all_experts", "gpt-oss gating: softmax over all experts, then top-k, "
       "not renormalised (instead of a softmax of the top-k logits)", moe_route, topk_softmax_over_all=True)
mutant("moe_route", "routed_scale_ignored", "drops the routed scaling factor", moe_route, use_scale=False)


@copy_of("moe_experts")
def moe_experts(x, weights, ids, gate_up, down, *, activation="silu", gate_up_bias=None, down_bias=None,
                swiglu_alpha=1.702, swiglu_limit=7.0, use_down_bias=True, up_rows_first=False,
                use_weights=True, default_swiglu_params=False):
    x = np.asarray(x, dtype=F32)
    ids, weights = np.asarray(ids), np.asarray(weights, dtype=F32)
    width = gate_up.shape[1] // 2
    if default_swiglu_params:
        swiglu_alpha, swiglu_limit = 1.702, 7.0
    out = np.zeros_like(x)
    for t in range(x.shape[0]):
        for j, e in enumerate(ids[t].tolist()):
            h = gate_up[e] @ x[t]
            if gate_up_bias is not None:
                h = h + gate_up_bias[e]
            gate, up = (h[width:], h[:width]) if up_rows_first else (h[:width], h[width:])
            y = down[e] @ _gated(gate, up, activation, swiglu_alpha, swiglu_limit)
            if down_bias is not None and use_down_bias:
                y = y + down_bias[e]
            out[t] += y * (weights[t, j] if use_weights else F32(1.0))
    return out


def _gated(gate, up, activation, alpha, limit):
    if activation == "silu":
        return swiglu(gate, up)
    if activation == "gelu_tanh":
        return geglu_tanh(gate, up)
    return swiglu_oai(gate, up, alpha=alpha, limit=limit)


mutant("moe_experts", "down_bias_ignored", "drops the experts' down-projection bias", moe_experts,
       use_down_bias=False)
mutant("moe_experts", "gate_up_halves_swapped", "reads the up rows first, then the gate rows, of gate_up",
       moe_experts, up_rows_first=True)
mutant("moe_experts", "routing_weights_ignored", "sums the experts' outputs without their routing weights",
       moe_experts, use_weights=False)
mutant("moe_experts", "swiglu_params_ignored", "uses gpt-oss's default alpha 1.702 and limit 7 whatever the "
       "model says", moe_experts, default_swiglu_params=True)
