"""Mixture-of-experts routing and expert FFNs, CUDA path (same signatures as impnb/reference/moe.py).

Dimensions: T tokens, E experts, K top-k, H hidden, I expert width. Routing: scores as the reference (float32
softmax; sigmoid in float64), top-k by a stable descending sort (CuPy's argsort is stable: ties go to the lower
expert id, the bit-exact contract on ids). Experts: tokens grouped per expert, one cuBLAS SGEMM per hit expert,
experts visited in increasing index (the reference's summation order). The engine's decode path routes with the
``moe_route`` kernel of engine.cu and runs the top-k experts as grouped GEMVs. GPU only (CuPy).
"""
from __future__ import annotations

import numpy as np

from ._outputs import guarded
from ._launch import gpu_only, require_gpu


def _softmax(x):
    import cupy as cp
    e = cp.exp(x - x.max(axis=-1, keepdims=True))
    return (e / e.sum(axis=-1, keepdims=True, dtype=cp.float32)).astype(cp.float32)


@gpu_only
def moe_route(logits, *, top_k, gating="softmax", renormalize=True, expert_scale=None, scale=1.0):
    """Router: (weights float32 [T, K], ids int32 [T, K]) from logits [T, E]; see the reference docstring."""
    require_gpu("moe_route")
    import cupy as cp
    logits = cp.asarray(logits, dtype=cp.float32)
    if gating == "softmax":
        scores = _softmax(logits)
    elif gating == "sigmoid":
        scores = (1.0 / (1.0 + cp.exp(-logits.astype(cp.float64)))).astype(cp.float32)
    elif gating == "topk_softmax":
        scores = logits
    else:
        raise ValueError(f"moe_route gating {gating!r}; expected softmax, topk_softmax or sigmoid")
    ids = cp.argsort(-scores, axis=-1)[:, :top_k]  # stable: ties -> lower index first
    weights = cp.take_along_axis(scores, ids, axis=-1)
    if gating == "topk_softmax":
        weights = _softmax(weights)
    elif renormalize:
        weights = weights / weights.sum(axis=-1, keepdims=True, dtype=cp.float32)
    if expert_scale is not None:
        weights = weights * cp.asarray(expert_scale, dtype=cp.float32)[ids]
    if scale != 1.0:
        weights = weights * cp.float32(scale)
    return guarded((weights.astype(cp.float32), ids.astype(cp.int32)), "moe_route")


@gpu_only
def moe_experts(x, weights, ids, gate_up, down, *, activation="silu", gate_up_bias=None, down_bias=None,
                swiglu_alpha=1.702, swiglu_limit=7.0):
    """Routed expert FFNs, x [T, H] -> float32 [T, H]; gate rows first, then up rows, in gate_up [E, 2I, H]."""
    require_gpu("moe_experts")
    import cupy as cp
    from .activations import geglu_tanh, swiglu, swiglu_oai
    x = cp.asarray(x, dtype=cp.float32)
    ids_h = np.asarray(cp.asnumpy(cp.asarray(ids)))
    weights = cp.asarray(weights, dtype=cp.float32)
    gate_up, down = cp.asarray(gate_up, dtype=cp.float32), cp.asarray(down, dtype=cp.float32)
    out = cp.zeros_like(x)
    width = gate_up.shape[1] // 2
    flat = ids_h.ravel()
    order = np.argsort(flat, kind="stable")
    experts, starts = np.unique(flat[order], return_index=True)
    bounds = list(starts[1:]) + [flat.size]
    for e, lo, hi in zip(experts.tolist(), starts.tolist(), bounds):
        slots = order[lo:hi]
        rows = cp.asarray(slots // ids_h.shape[1])
        h = x[rows] @ gate_up[e].T  # [n, 2I]
        if gate_up_bias is not None:
            h += cp.asarray(gate_up_bias, dtype=cp.float32)[e]
        if activation == "silu":
            a = swiglu(h[:, :width], h[:, width:])
        elif activation == "gelu_tanh":
            a = geglu_tanh(h[:, :width], h[:, width:])
        elif activation == "swiglu_oai":
            a = swiglu_oai(h[:, :width], h[:, width:], alpha=swiglu_alpha, limit=swiglu_limit)
        else:
            raise ValueError(f"moe_experts activation {activation!r}; expected silu, gelu_tanh or swiglu_oai")
        y = a @ down[e].T  # [n, H]
        if down_bias is not None:
            y += cp.asarray(down_bias, dtype=cp.float32)[e]
        out[rows] += y * weights.ravel()[cp.asarray(slots), None]
    return guarded(out, "moe_experts")
