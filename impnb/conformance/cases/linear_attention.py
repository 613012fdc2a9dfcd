"""Cross-check cases of the linear-attention ops (impnb/reference/linear_attention.py): fresh and rolling conv
states, kernel widths 1 / 2 / 4, no activation; gates past softplus' threshold and saturated sigmoids; the delta
rule with GQA and equal head counts, strong and weak decay, a carried state, custom scale without L2 norm, keys so
small that the L2 norm's eps decides; chunked prefill with lengths below, at and past the chunk size (not multiples
of it). Real shapes: the linear layers of Qwen3-Next-80B-A3B / Qwen3.5 (16 key heads x 128, 32 value heads x 128,
conv channels 8192, kernel 4)."""
from __future__ import annotations

import numpy as np

from . import case

F32 = np.float32
REAL = dict(hk=16, dk=128, hv=32, dv=128)  # Qwen3-Next-80B-A3B / Qwen3.5 linear_attention geometry
TINY = dict(hk=2, dk=8, hv=4, dv=6)


def _n(rng, *shape, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(F32)


def _conv_args(rng, t, c, k):
    return _n(rng, t, c, scale=2.0), _n(rng, c, k, scale=0.5), _n(rng, k - 1, c, scale=2.0)


@case("causal_conv1d", "rolling_state_silu")
def _conv_rolling(rng, size):
    t, c, k = (5, 10, 4) if size == "tiny" else (37, 8192, 4)
    return _conv_args(rng, t, c, k), {"activation": "silu"}


@case("causal_conv1d", "fresh_state_shorter_than_kernel")
def _conv_fresh(rng, size):
    t, c, k = (2, 7, 4) if size == "tiny" else (3, 8192, 4)
    x, w, _ = _conv_args(rng, t, c, k)
    return (x, w, np.zeros((k - 1, c), F32)), {}


@case("causal_conv1d", "no_activation_kernel2")
def _conv_plain(rng, size):
    t, c, k = (6, 5, 2) if size == "tiny" else (64, 4096, 2)
    return _conv_args(rng, t, c, k), {"activation": None}


@case("causal_conv1d", "kernel1_empty_state")
def _conv_k1(rng, size):
    t, c = (3, 4) if size == "tiny" else (16, 1024)
    return _conv_args(rng, t, c, 1), {}


@case("causal_conv1d_step", "decode_silu")
def _step(rng, size):
    c, k = (9, 4) if size == "tiny" else (8192, 4)
    x, w, s = _conv_args(rng, 1, c, k)
    return (x[0], w, s), {}


@case("causal_conv1d_step", "decode_no_activation")
def _step_plain(rng, size):
    c, k = (6, 3) if size == "tiny" else (8192, 4)
    x, w, s = _conv_args(rng, 1, c, k)
    return (x[0], w, s), {"activation": None}


@case("gdn_gates", "wide_with_thresholds")
def _gates(rng, size):
    t, hv = (4, 5) if size == "tiny" else (64, 32)
    a, b = _n(rng, t, hv, scale=8.0), _n(rng, t, hv, scale=8.0)
    a[0, 0], a[-1, -1], b[0, 1], b[-1, 0] = 25.0, -60.0, 100.0, -100.0  # softplus' x > 20 branch, exp underflow
    neg_a = -np.exp(rng.uniform(np.log(0.01), np.log(16.0), hv)).astype(F32)  # A = -exp(A_log), A_log ~ log U(0.01, 16)
    return (a, b, neg_a, (1.0 + _n(rng, hv, scale=0.5))), {}


def _delta_args(rng, t, hk, dk, hv, dv, *, g_scale=1.0, state=True):
    q, k, v = _n(rng, t, hk, dk), _n(rng, t, hk, dk), _n(rng, t, hv, dv)
    g = (-np.exp(_n(rng, t, hv) - 1.0) * g_scale).astype(F32)  # log-decays: mostly -0.05 .. -3
    beta = (1.0 / (1.0 + np.exp(-_n(rng, t, hv, scale=2.0)))).astype(F32)
    s = _n(rng, hv, dk, dv, scale=0.5) if state else np.zeros((hv, dk, dv), F32)
    return q, k, v, g, beta, s


def _geometry(size, **override):
    return {**(TINY if size == "tiny" else REAL), **override}


@case("gated_delta_rule", "decode_gqa_carried_state")
def _delta_decode(rng, size):
    return _delta_args(rng, 1, **_geometry(size)), {}


@case("gated_delta_rule", "several_tokens_equal_heads")
def _delta_equal(rng, size):
    geo = _geometry(size, hk=3, hv=3) if size == "tiny" else _geometry(size, hk=32)
    return _delta_args(rng, 7 if size == "tiny" else 16, **geo), {}


@case("gated_delta_rule", "strong_decay_fresh_state")
def _delta_strong(rng, size):
    return _delta_args(rng, 5, **_geometry(size), g_scale=20.0, state=False), {}


@case("gated_delta_rule", "custom_scale_no_l2norm")
def _delta_plain(rng, size):
    geo = _geometry(size)
    q, k, v, g, beta, s = _delta_args(rng, 4, **geo)
    k = (k / np.sqrt(geo["dk"])).astype(F32)  # |k| ~ 1 without the L2 norm: the recurrence stays bounded
    return (q, k, v, g, beta, s), {"qk_l2norm": False, "scale": 0.3}


def _small_keys(q, k):
    """q and k with a few (token, head) rows of norm ~3e-3: sum of squares ~1e-5, where the L2 norm's eps decides."""
    q, k = q.copy(), k.copy()
    q[0, 0] *= F32(1e-3)
    k[0, -1] *= F32(1e-3)
    k[-1, 0] *= F32(1e-3)
    return q, k


@case("gated_delta_rule", "small_keys_eps_1e5")
def _delta_small(rng, size):
    q, k, v, g, beta, s = _delta_args(rng, 3, **_geometry(size))
    return _small_keys(q, k) + (v, g, beta, s), {"eps": 1e-5}


@case("gated_delta_rule_chunked", "partial_last_chunk")
def _chunked(rng, size):
    t, chunk = (11, 4) if size == "tiny" else (200, 64)
    return _delta_args(rng, t, **_geometry(size)), {"chunk_size": chunk}


@case("gated_delta_rule_chunked", "shorter_than_one_chunk")
def _chunked_short(rng, size):
    t, chunk = (5, 8) if size == "tiny" else (37, 64)
    return _delta_args(rng, t, **_geometry(size), state=False), {"chunk_size": chunk}


@case("gated_delta_rule_chunked", "exact_chunks_strong_decay")
def _chunked_exact(rng, size):
    t, chunk = (8, 4) if size == "tiny" else (128, 64)
    return _delta_args(rng, t, **_geometry(size), g_scale=10.0), {"chunk_size": chunk}


@case("gated_delta_rule_chunked", "custom_scale_no_l2norm")
def _chunked_plain(rng, size):
    geo = _geometry(size)
    q, k, v, g, beta, s = _delta_args(rng, 9 if size == "tiny" else 100, **geo)
    k = (k / np.sqrt(geo["dk"])).astype(F32)
    return (q, k, v, g, beta, s), {"qk_l2norm": False, "scale": 0.3, "chunk_size": 3 if size == "tiny" else 32}


@case("gated_delta_rule_chunked", "small_keys_eps_1e5")
def _chunked_small(rng, size):
    t, chunk = (6, 4) if size == "tiny" else (80, 64)
    q, k, v, g, beta, s = _delta_args(rng, t, **_geometry(size))
    return _small_keys(q, k) + (v, g, beta, s), {"eps": 1e-5, "chunk_size": chunk}
