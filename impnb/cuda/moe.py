"""Mixture-of-experts routing and expert FFNs, CUDA path (same signatures as impnb/reference/moe.py).

Dimensions: T tokens, E experts, K top-k, H hidden, I expert width.
  * moe_route: the engine's router kernel (kernels/moe.cu moe_route_topk, one block per token: softmax / sigmoid,
    k rounds of a block argmax with the lower id winning ties, the bit-exact contract on ids), then the per-expert
    scale and the routed scaling factor as CuPy expressions. Up to 1024 experts and top-64.
  * moe_experts: tokens grouped per expert, one cuBLAS SGEMM per hit expert, experts visited in increasing index
    (the reference's summation order); any activation and biases (the op-by-op path of gpt-oss / Gemma-4).
  * rms_norm_moe_experts: the engine's grouped expert GEMVs of one token (moe_up_gemv: the top-k experts' gate|up
    rows of rms_norm(x); moe_down_gemv: act(gate) * up through their down rows, summed in top-k order).
``route_topk`` / ``experts_up`` / ``experts_down`` launch on resident buffers. GPU only (CuPy).
"""
from __future__ import annotations

import numpy as np

from . import _alloc
from ._launch import gpu_only, launch_raw, require_gpu, sm_count
from ._outputs import guarded


GATINGS = {"softmax": 0, "topk_softmax": 1, "sigmoid": 2}


def route_topk(logits, n_experts: int, top_k: int, gating: str, renormalize: bool, ids, weights) -> None:
    """ids int32 [K], weights float32 [K] of one token's router logits [E] (one block, on the device)."""
    launch_raw("moe.cu", "moe_route_topk", (1,), (256,), (logits, n_experts, top_k, GATINGS[gating],
                                                          bool(renormalize), ids, weights))


def experts_up(w, ids, x, y, *, norm, eps: float, offset: float, top_k: int) -> None:
    """y[j, :] = W[ids[j]] @ rms_norm(x) for j < top_k; ``w`` stacked experts (DeviceLinear, N rows each)."""
    from ._kernels import THREADS, WARPS, gemv_name
    blocks = min(-(-w.N // WARPS), 4 * sm_count())
    launch_raw("moe.cu", gemv_name("moe_up_gemv", w.fmt), (blocks, top_k), (THREADS,),
               (w.data, w.scales, w.rmult, ids, x, norm, float(eps), float(offset), y, w.N, w.K), shared_mem=4 * w.K)


def experts_down(w, ids, weights, gate_up, x, *, activation: str, top_k: int) -> None:
    """x[n] += sum_j weights[j] (W[ids[j]] @ act(gate_up[j]))[n], experts summed in j order; ``w`` stacked."""
    from ._kernels import ACTS, THREADS, WARPS, gemv_name
    blocks = min(-(-w.N // WARPS), 8 * sm_count())
    launch_raw("moe.cu", gemv_name("moe_down_gemv", w.fmt, ACTS[activation]), (blocks,), (THREADS,),
               (w.data, w.scales, w.rmult, ids, weights, gate_up, x, w.N, w.K, top_k), shared_mem=4 * w.K * top_k)


@gpu_only
def moe_route(logits, *, top_k, gating="softmax", renormalize=True, expert_scale=None, scale=1.0):
    """Router: (weights float32 [T, K], ids int32 [T, K]) from logits [T, E]; see the reference docstring."""
    require_gpu("moe_route")
    import cupy as cp
    from ..errors import Unsupported
    if gating not in GATINGS:
        raise ValueError(f"moe_route gating {gating!r}; expected softmax, topk_softmax or sigmoid")
    logits = cp.ascontiguousarray(cp.asarray(logits, dtype=cp.float32))
    t, e = logits.shape
    if e > 1024 or top_k > 64 or top_k > e:
        raise Unsupported(f"moe_route: the router kernel takes <= 1024 experts and top-k <= 64 (got {e}, {top_k})")
    weights = _alloc.empty((t, top_k), np.float32, label="moe_route weights")
    ids = _alloc.empty((t, top_k), np.int32, label="moe_route ids")
    for row in range(t):
        route_topk(logits[row], e, top_k, gating, renormalize, ids[row], weights[row])
    if expert_scale is not None:
        weights *= cp.asarray(expert_scale, dtype=cp.float32)[ids]
    if scale != 1.0:
        weights *= cp.float32(scale)
    return weights, ids


@gpu_only
def rms_norm_moe_experts(x, norm_weight, weights, ids, gate_up, down, *, eps, offset=0.0, activation="silu",
                         residual=None):
    """moe_experts(rms_norm(x), ...) (+ residual) on the grouped expert GEMVs, one token at a time."""
    require_gpu("rms_norm_moe_experts")
    import cupy as cp
    from ._device_weights import as_device_linear
    if activation not in ("silu", "gelu_tanh"):
        raise ValueError(f"rms_norm_moe_experts: activation {activation!r}; expected silu or gelu_tanh")
    x = cp.ascontiguousarray(cp.asarray(x, dtype=cp.float32))
    up, dn = as_device_linear(gate_up, name="gate_up"), as_device_linear(down, name="down")
    ids = cp.ascontiguousarray(cp.asarray(ids).astype(cp.int32))
    weights = cp.ascontiguousarray(cp.asarray(weights, dtype=cp.float32))
    norm = cp.ascontiguousarray(cp.asarray(norm_weight, dtype=cp.float32))
    t, k = ids.shape
    out = _alloc.empty(x.shape, np.float32, label="rms_norm_moe_experts")
    out[...] = 0 if residual is None else cp.asarray(residual, dtype=cp.float32).reshape(x.shape)
    hidden = cp.empty((k, up.N), cp.float32)  # [K, 2I]
    for row in range(t):
        experts_up(up, ids[row], x[row], hidden, norm=norm, eps=eps, offset=offset, top_k=k)
        experts_down(dn, ids[row], weights[row], hidden, out[row], activation=activation, top_k=k)
    return out


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
