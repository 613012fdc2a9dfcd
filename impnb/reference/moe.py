"""Mixture-of-experts routing and expert FFNs: the reference for impnb/cuda/moe.py.

Dimensions: T = tokens, E = experts, K = experts per token (top-k), H = hidden size, I = expert width.

moe_route(logits [T, E]) -> (weights float32 [T, K], ids int32 [T, K]):
    gating "softmax"      p = softmax(logits); ids = top-k of p            (Qwen3-MoE, Gemma-4, Mixtral)
    gating "topk_softmax" ids = top-k of logits; w = softmax(logits[ids])   (gpt-oss)
    gating "sigmoid"      p = sigmoid(logits); ids = top-k of p            (DeepSeek-V3 style, without groups)
    renormalize:          w /= sum_k w                                     (norm_topk_prob; Gemma-4 always)
    expert_scale [E]:     w *= expert_scale[ids]                           (Gemma-4 router.per_expert_scale)
    scale:                w *= scale                                       (routed_scaling_factor)
  Top-k is deterministic: larger score first, ties broken by the LOWER expert index (a stable sort), so the CUDA
  path can reproduce the exact id set (the contract on ids is bit-exact).

moe_experts(x, weights, ids, gate_up [E, 2I, H], down [E, H, I]) -> float32 [T, H]:
    out[t] = sum_k w[t, k] * down[e] @ act(gate_up[e, :I] @ x[t], gate_up[e, I:] @ x[t]),  e = ids[t, k]
    (+ the per-expert biases when given). Experts run only for the tokens routed to them: tokens are grouped per
    expert and each hit expert does one BLAS GEMM; experts are visited in increasing index (the summation order of
    transformers' loop).
"""
from __future__ import annotations

import numpy as np

from .activations import geglu_tanh, swiglu, swiglu_oai


def moe_route(logits, *, top_k, gating="softmax", renormalize=True, expert_scale=None, scale=1.0):
    """Router: (weights float32 [T, K], ids int32 [T, K]) from logits [T, E]; see the module docstring."""
    logits = np.asarray(logits, dtype=np.float32)
    if gating == "softmax":
        scores = _softmax(logits)
    elif gating == "sigmoid":
        scores = (1.0 / (1.0 + np.exp(-logits.astype(np.float64)))).astype(np.float32)
    elif gating == "topk_softmax":
        scores = logits
    else:
        raise ValueError(f"moe_route gating {gating!r}; expected softmax, topk_softmax or sigmoid")
    ids = np.argsort(-scores, axis=-1, kind="stable")[:, :top_k]  # ties: lower index first
    weights = np.take_along_axis(scores, ids, axis=-1)
    if gating == "topk_softmax":
        weights = _softmax(weights)
    elif renormalize:
        weights = weights / weights.sum(axis=-1, keepdims=True, dtype=np.float32)
    if expert_scale is not None:
        weights = weights * np.asarray(expert_scale, dtype=np.float32)[ids]
    if scale != 1.0:
        weights = weights * np.float32(scale)
    return weights.astype(np.float32), ids.astype(np.int32)


def _softmax(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return (e / e.sum(axis=-1, keepdims=True, dtype=np.float32)).astype(np.float32)


def moe_experts(x, weights, ids, gate_up, down, *, activation="silu", gate_up_bias=None, down_bias=None,
                swiglu_alpha=1.702, swiglu_limit=7.0):
    """Routed expert FFNs, x [T, H] -> float32 [T, H]; gate rows first, then up rows, in gate_up [E, 2I, H]."""
    x = np.asarray(x, dtype=np.float32)
    ids = np.asarray(ids)
    weights = np.asarray(weights, dtype=np.float32)
    out = np.zeros_like(x)
    width = gate_up.shape[1] // 2
    flat = ids.ravel()
    order = np.argsort(flat, kind="stable")
    experts, starts = np.unique(flat[order], return_index=True)
    bounds = list(starts[1:]) + [flat.size]
    for e, lo, hi in zip(experts.tolist(), starts.tolist(), bounds):
        slots = order[lo:hi]  # positions in the flattened [T*K] routing table
        rows = slots // ids.shape[1]
        h = x[rows] @ gate_up[e].T  # [n, 2I]
        if gate_up_bias is not None:
            h += gate_up_bias[e]
        y = _gated(h[:, :width], h[:, width:], activation, swiglu_alpha, swiglu_limit) @ down[e].T  # [n, H]
        if down_bias is not None:
            y += down_bias[e]
        out[rows] += y * weights.ravel()[slots, None]
    return out


def _gated(gate, up, activation, alpha, limit):
    if activation == "silu":
        return swiglu(gate, up)
    if activation == "gelu_tanh":
        return geglu_tanh(gate, up)
    if activation == "swiglu_oai":
        return swiglu_oai(gate, up, alpha=alpha, limit=limit)
    raise ValueError(f"moe_experts activation {activation!r}; expected silu, gelu_tanh or swiglu_oai")


def rms_norm_moe_experts(x, norm_weight, weights, ids, gate_up, down, *, eps, offset=0.0, activation="silu",
                         residual=None):
    """Routed experts on a normed input (the engine's grouped expert GEMVs; no expert biases):

        out = moe_experts(rms_norm(x, norm_weight; eps, offset), weights, ids, gate_up, down; activation)
              (+ residual)

    x [T, H]; weights float32 [T, K], ids int [T, K]; gate_up [E, 2I, H], down [E, H, I] (float32); activation
    silu or gelu_tanh. float32 [T, H]."""
    from .norms import rms_norm
    if activation not in ("silu", "gelu_tanh"):
        raise ValueError(f"rms_norm_moe_experts: activation {activation!r}; expected silu or gelu_tanh")
    out = moe_experts(rms_norm(x, norm_weight, eps=eps, offset=offset), weights, ids, gate_up, down,
                      activation=activation)
    return out if residual is None else np.asarray(residual, dtype=np.float32) + out
