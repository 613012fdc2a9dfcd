"""Cross-check cases of moe_route and moe_experts (impnb/reference/moe.py): planted ties, all three gatings,
per-expert scales, experts hit by several tokens and experts hit by none."""
from __future__ import annotations

import numpy as np

from . import case


def _logits(rng, t, e):
    x = rng.standard_normal((t, e)).astype(np.float32)
    x[0, 1] = x[0, 3]  # a tie: expert 1 must win over 3 wherever both compete
    return x


@case("moe_route", "softmax_renorm_scaled")
def _softmax(rng, size):
    t, e, k = (4, 8, 2) if size == "tiny" else (16, 128, 8)  # real: Qwen3-30B-A3B routing
    scale = (0.5 + rng.random(e)).astype(np.float32)
    return (_logits(rng, t, e),), {"top_k": k, "gating": "softmax", "renormalize": True, "expert_scale": scale}


@case("moe_route", "topk_softmax")
def _topk_softmax(rng, size):
    t, e, k = (3, 6, 3) if size == "tiny" else (8, 32, 4)  # real: gpt-oss-20b routing
    return (_logits(rng, t, e),), {"top_k": k, "gating": "topk_softmax"}


@case("moe_route", "sigmoid_no_renorm")
def _sigmoid(rng, size):
    t, e, k = (2, 5, 2) if size == "tiny" else (4, 256, 8)
    return (_logits(rng, t, e),), {"top_k": k, "gating": "sigmoid", "renormalize": False, "scale": 2.5}


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
    return args, {"activation": "swiglu_oai", "gate_up_bias": rng.standard_normal((e, 2 * i)).astype(np.float32),
                  "down_bias": rng.standard_normal((e, h)).astype(np.float32)}


@case("moe_experts", "geglu")
def _geglu(rng, size):
    dims = (2, 3, 1, 8, 4) if size == "tiny" else (1, 128, 8, 704, 256)  # real: a Gemma-4 MoE decode row
    return _experts(rng, *dims), {"activation": "gelu_tanh"}
