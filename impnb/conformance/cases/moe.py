"""Cross-check cases of moe_route and moe_experts (impnb/reference/moe.py): planted ties (for first place and
straddling the top-k cut), all three gatings, renormalisation on and off, per-expert scales, the routed scaling
factor, experts hit by several tokens and experts hit by none, biases, non-default clamped-SwiGLU alpha / limit."""
from __future__ import annotations

import numpy as np

from . import case


def _logits(rng, t, e, k):
    """Router logits [T, E]: row 0 ties experts 3 and 1 for first place; row 1 ties two experts at the k-th
    place, one kept and one cut (the lower id must be kept)."""
    x = rng.standard_normal((t, e)).astype(np.float32)
    x[0, 3] = x[0, 1] = x[0].max() + 1.0
    if t > 1:
        order = np.argsort(-x[1], kind="stable")
        hi, lo = sorted(order[k - 1:k + 1].tolist())
        x[1, hi] = x[1, lo]
    return x


@case("moe_route", "softmax_renorm_scaled")
def _softmax(rng, size):
    t, e, k = (4, 8, 2) if size == "tiny" else (16, 128, 8)  # real: Qwen3-30B-A3B routing
    scale = (0.5 + rng.random(e)).astype(np.float32)
    return (_logits(rng, t, e, k),), {"top_k": k, "gating": "softmax", "renormalize": True, "expert_scale": scale}


@case("moe_route", "topk_softmax")
def _topk_softmax(rng, size):
    t, e, k = (3, 6, 3) if size == "tiny" else (8, 32, 4)  # real: gpt-oss-20b routing
    return (_logits(rng, t, e, k),), {"top_k": k, "gating": "topk_softmax"}


@case("moe_route", "sigmoid_no_renorm")
def _sigmoid(rng, size):
    t, e, k = (2, 5, 2) if size == "tiny" else (4, 256, 8)
    return (_logits(rng, t, e, k),), {"top_k": k, "gating": "sigmoid", "renormalize": False, "scale": 2.5}


def _experts(rng, t, e, k, h, i):
    x = rng.standard_normal((t, h)).astype(np.float32)
    ids = np.stack([rng.choice(e - 1, size=k, replace=False) for _ in range(t)]).astype(np.int32)  # expert e-1 idle
    w = rng.random((t, k)).astype(np.float32)
    gate_up = (rng.standard_normal((e, 2 * i, h)) / np.sqrt(h)).astype(np.float32)
    down = (rng.standard_normal((e, h, i)) / np.sqrt(i)).astype(np.float32)
    return x, w, ids, gate_up, down


@case("moe_experts", "swiglu")
def _swiglu(rng, size):
    dims = (5, 4, 2, 12, 6) if size == "tiny" else (8, 32, 4, 512, 256)
    return _experts(rng, *dims), {"activation": "silu"}


@case("moe_experts", "oai_biases")
def _oai(rng, size):
    t, e, k, h, i = (3, 4, 2, 8, 4) if size == "tiny" else (4, 32, 4, 512, 512)
    args = _experts(rng, t, e, k, h, i)
    return args, {"activation": "swiglu_oai",
                  "gate_up_bias": (3.0 * rng.standard_normal((e, 2 * i))).astype(np.float32),  # past the limit
                  "down_bias": rng.standard_normal((e, h)).astype(np.float32),
                  "swiglu_alpha": 1.25, "swiglu_limit": 2.5}


@case("moe_experts", "geglu")
def _geglu(rng, size):
    dims = (2, 3, 1, 8, 4) if size == "tiny" else (1, 128, 8, 704, 256)  # real: a Gemma-4 MoE decode row
    return _experts(rng, *dims), {"activation": "gelu_tanh"}


@case("moe_route", "softmax_plain")
def _softmax_plain(rng, size):
    t, e, k = (3, 7, 3) if size == "tiny" else (16, 64, 6)
    return (_logits(rng, t, e, k),), {"top_k": k, "gating": "softmax", "renormalize": False}
