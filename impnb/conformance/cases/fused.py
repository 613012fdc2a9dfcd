"""Cross-check cases of the fused ops: the CUDA engine's kernels, each registered with a reference that is the
composition of the ops it fuses (rms_norm_linear, gated_linear, gated_activation, rms_norm_add, qkv_rope_append,
rms_norm_qkv_rope_append, attention_decode, attention_output, rms_norm_moe_experts; plus NVFP4 embedding tables).
Every optional argument is set to a value that changes the result: rows small enough that a norm's eps decides,
Gemma's (1 + w) QK-norm weights, scores large enough for the softcap to bend them, non-default clamped-SwiGLU
alpha / limit, YaRN attention scaling, rings past their capacity.

"tiny" shapes keep the reference fast in CI (the CUDA paths are CuPy RawKernels: they run on a GPU only); "real"
shapes are those of SmolLM2-135M (H 576, 9 / 3 heads of 64), Gemma-3-270M (H 640, 4 / 1 heads of 256, window 512)
and Qwen3-30B-A3B (H 2048, 32 / 4 heads of 128, 128 experts, top 8), as labelled.
"""
from __future__ import annotations

import numpy as np

from ...reference.nvfp4 import nvfp4_quantize
from . import case

F32 = np.float32


def _x(rng, *shape, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(F32)


def _weight(rng, n, k, nvfp4=False):
    w = _x(rng, n, k, scale=1.0 / np.sqrt(k))
    return nvfp4_quantize(w) if nvfp4 else w


def _norm_w(rng, d, offset=0.0):
    return (F32(1.0 - offset) + 0.1 * rng.standard_normal(d)).astype(F32)


# ---- linear family --------------------------------------------------------------------------------------------
@case("rms_norm_linear", "qkv_dense_bias")
def _norm_linear_dense(rng, size):
    t, k, n = (2, 64, 48) if size == "tiny" else (1, 576, 960)  # real: SmolLM2-135M q|k|v
    return (_x(rng, t, k, scale=3.0), _norm_w(rng, k), _weight(rng, n, k), _x(rng, n)), {"eps": 1e-5}


@case("rms_norm_linear", "lm_head_nvfp4_gemma_softcap")
def _norm_linear_head(rng, size):
    t, k, n = (1, 32, 40) if size == "tiny" else (1, 640, 8192)  # real: a Gemma-3-270M-wide LM head slice
    args = (_x(rng, t, k), _norm_w(rng, k, 1.0), _weight(rng, n, k, nvfp4=True))
    return args, {"eps": 1e-6, "offset": 1.0, "softcap": 2.0}


@case("rms_norm_linear", "eps_dominated_rows")
def _norm_linear_small(rng, size):
    t, k, n = (3, 48, 32) if size == "tiny" else (4, 2048, 512)
    x = _x(rng, t, k, scale=1e-3)  # mean square 1e-6 next to eps 1e-5: eps inside the sqrt decides the scale
    x[-1] = 0.0  # an all-zero row: the bias alone, no NaN
    return (x, _norm_w(rng, k), _weight(rng, n, k), _x(rng, n)), {"eps": 1e-5}


@case("gated_linear", "swiglu_residual")
def _gated_silu(rng, size):
    t, i, n = (1, 32, 24) if size == "tiny" else (1, 1536, 576)  # real: SmolLM2-135M down_proj
    return (_x(rng, t, 2 * i, scale=2.0), _weight(rng, n, i)), {"activation": "silu", "residual": _x(rng, t, n)}


@case("gated_linear", "geglu_nvfp4_bias_negative_gates")
def _gated_gelu(rng, size):
    t, i, n = (1, 48, 16) if size == "tiny" else (1, 2048, 640)  # real: Gemma-3-270M down_proj
    gu = _x(rng, t, 2 * i, scale=2.0)
    gu[:, : i // 4] -= F32(4.0)  # gates below -3: 1 + tanh cancels there
    return (gu, _weight(rng, n, i, nvfp4=True), _x(rng, n)), {"activation": "gelu_tanh"}


# ---- activations / norms --------------------------------------------------------------------------------------
@case("gated_activation", "silu")
def _act_silu(rng, size):
    t, i = (3, 20) if size == "tiny" else (64, 1536)
    return (_x(rng, t, 2 * i, scale=3.0),), {"activation": "silu"}


@case("gated_activation", "gelu_tanh_negative_gates")
def _act_gelu(rng, size):
    t, i = (2, 24) if size == "tiny" else (64, 2048)
    gu = _x(rng, t, 2 * i, scale=2.0)
    gu[:, : i // 3] -= F32(4.0)
    return (gu,), {"activation": "gelu_tanh"}


@case("gated_activation", "swiglu_oai_clamped")
def _act_oai(rng, size):
    t, i = (2, 16) if size == "tiny" else (16, 2880)  # real: gpt-oss-20b expert width
    return (_x(rng, t, 2 * i, scale=6.0),), {"activation": "swiglu_oai", "alpha": 1.702, "limit": 7.0}


@case("gated_activation", "swiglu_oai_other_alpha_limit")
def _act_oai_other(rng, size):
    t, i = (2, 16) if size == "tiny" else (16, 2880)
    return (_x(rng, t, 2 * i, scale=4.0),), {"activation": "swiglu_oai", "alpha": 1.25, "limit": 3.0}


@case("rms_norm_add", "gemma_post_norm")
def _norm_add(rng, size):
    t, d = (3, 40) if size == "tiny" else (1, 640)
    return (_x(rng, t, d, scale=5.0), _x(rng, t, d, scale=30.0), _x(rng, d, scale=0.2)), {"eps": 1e-6, "offset": 1.0}


@case("rms_norm_add", "llama_style_cancelling")
def _norm_add_cancel(rng, size):
    t, d = (2, 24) if size == "tiny" else (4, 2048)
    x = _x(rng, t, d)
    w = _norm_w(rng, d)
    from ...reference.norms import rms_norm
    tail = _x(rng, t, d, scale=0.01)
    return (-rms_norm(x, w, eps=1e-6) + tail, x, w), {"eps": 1e-6}  # x ~ -rms_norm(t): the sum cancels


@case("rms_norm_add", "eps_dominated_branch")
def _norm_add_small(rng, size):
    t, d = (3, 32) if size == "tiny" else (4, 2048)
    branch = _x(rng, t, d, scale=1e-3)  # mean square 1e-6 next to eps 1e-5
    branch[0] = 0.0
    return (_x(rng, t, d), branch, _norm_w(rng, d)), {"eps": 1e-5}


# ---- rope family: QK-norm + RoPE + KV append -----------------------------------------------------------------
def _cache(rng, c, hkv, d, filled):
    k, v = _x(rng, c, hkv, d), _x(rng, c, hkv, d)
    pos = np.full(c, -1, np.int64)
    pos[:filled] = np.arange(filled)
    return k, v, pos


def _inv_freq(d, theta=10000.0, rotary=None):
    rot = rotary or d
    return (F32(1.0) / (F32(theta) ** (np.arange(0, rot, 2, dtype=np.float64) / d))).astype(F32)


@case("qkv_rope_append", "qwen3_qk_norm_full_cache")
def _qkv_qwen3(rng, size):
    t, hq, hkv, d, c = (2, 4, 2, 16, 12) if size == "tiny" else (3, 32, 4, 128, 4096)  # real: Qwen3-30B-A3B
    k, v, pos = _cache(rng, c, hkv, d, 5)
    qkv = _x(rng, t, (hq + 2 * hkv) * d, scale=4.0)
    return (qkv, k, v, pos, np.arange(5, 5 + t), _inv_freq(d, 1e6)), {
        "n_heads": hq, "q_norm": _norm_w(rng, d), "k_norm": _norm_w(rng, d), "eps": 1e-6}


@case("qkv_rope_append", "ring_wrap_interleaved_v_norm_k_eq_v_partial")
def _qkv_ring(rng, size):
    t, hq, hkv, d, c = (2, 2, 1, 16, 8) if size == "tiny" else (1, 16, 8, 256, 1024 + 256)
    k, v, pos = _cache(rng, c, hkv, d, c)
    start = 3 * c - 1  # past the ring's capacity: the newest positions land in low slots
    qkv = _x(rng, t, (hq + hkv) * d)
    return (qkv, k, v, pos, np.arange(start, start + t), _inv_freq(d, rotary=d // 2)), {
        "n_heads": hq, "k_norm": _norm_w(rng, d), "v_norm": True, "k_eq_v": True, "style": "interleaved",
        "attention_scaling": 1.25}


@case("qkv_rope_append", "gemma3_offset_qk_norm_small_heads")
def _qkv_gemma3(rng, size):
    t, hq, hkv, d, c = (2, 2, 1, 16, 6) if size == "tiny" else (2, 4, 1, 256, 512)  # real: Gemma-3-270M local layer
    k, v, pos = _cache(rng, c, hkv, d, 3)
    qkv = _x(rng, t, (hq + 2 * hkv) * d)
    qkv[:, :d] *= F32(1e-3)  # query head 0: mean square 1e-6 next to eps 1e-5
    qkv[-1, hq * d:(hq + 1) * d] *= F32(1e-3)  # and the last token's key
    return (qkv, k, v, pos, np.arange(3, 3 + t), _inv_freq(d)), {
        "n_heads": hq, "q_norm": _norm_w(rng, d, 1.0), "k_norm": _norm_w(rng, d, 1.0), "eps": 1e-5, "offset": 1.0}


@case("rms_norm_qkv_rope_append", "qwen2_bias_neox")
def _norm_qkv_bias(rng, size):
    t, h, hq, hkv, d, c = (1, 32, 2, 1, 16, 10) if size == "tiny" else (1, 576, 9, 3, 64, 1024)  # real: SmolLM2
    k, v, pos = _cache(rng, c, hkv, d, 4)
    w = _weight(rng, (hq + 2 * hkv) * d, h)
    return (_x(rng, t, h), _norm_w(rng, h), w, k, v, pos, np.array([4]), _inv_freq(d)), {
        "n_heads": hq, "bias": _x(rng, (hq + 2 * hkv) * d), "eps": 1e-5}


@case("rms_norm_qkv_rope_append", "nvfp4_interleaved_ring")
def _norm_qkv_nvfp4(rng, size):
    t, h, hq, hkv, d, c = (1, 32, 2, 2, 16, 8) if size == "tiny" else (1, 640, 4, 1, 256, 768)
    k, v, pos = _cache(rng, c, hkv, d, c)
    w = _weight(rng, (hq + 2 * hkv) * d, h, nvfp4=True)
    return (_x(rng, t, h), _norm_w(rng, h, 1.0), w, k, v, pos, np.array([2 * c + 3]), _inv_freq(d)), {
        "n_heads": hq, "eps": 1e-6, "offset": 1.0, "style": "interleaved", "attention_scaling": 1.2}


# ---- attention family: split-K decode attention and the combining o-proj -------------------------------------
def _decode_inputs(rng, hq, hkv, d, c, position, q_scale=0.5):
    k, v, pos = _cache(rng, c, hkv, d, min(position + 1, c))
    if position + 1 > c:  # a wrapped ring: slot s holds the newest position congruent to s
        pos = np.array([position - ((position - s) % c) for s in range(c)], np.int64)
    return _x(rng, hq, d, scale=q_scale), k, v, pos


@case("attention_decode", "gqa_full_cache_partly_filled")
def _decode_full(rng, size):
    hq, hkv, d, c, p, chunk = (4, 2, 16, 40, 20, 8) if size == "tiny" else (32, 4, 128, 4096, 1500, 64)
    return _decode_inputs(rng, hq, hkv, d, c, p) + (p,), {"scale": d ** -0.5, "chunk": chunk}


@case("attention_decode", "ring_window_softcap")
def _decode_ring(rng, size):
    hq, hkv, d, c, p, w, chunk = (2, 1, 8, 24, 57, 16, 8) if size == "tiny" else (4, 1, 256, 768, 2000, 512, 64)
    q_scale = 20.0 if size == "tiny" else 5.0  # scores of a few units: the softcap of 5 bends them
    return _decode_inputs(rng, hq, hkv, d, c, p, q_scale) + (p,), {"scale": 0.0625, "softcap": 5.0, "window": w,
                                                                   "chunk": chunk}


def _partials(rng, hq, hkv, d, c, p, chunk):
    from ...reference.attention import attention_decode
    q, k, v, pos = _decode_inputs(rng, hq, hkv, d, c, p)
    return attention_decode(q, k, v, pos, p, scale=d ** -0.5, chunk=chunk)


@case("attention_output", "residual_dense")
def _output_dense(rng, size):
    hq, hkv, d, c, p, chunk, n = (2, 1, 16, 24, 17, 8, 20) if size == "tiny" else (9, 3, 64, 4096, 900, 64, 576)
    m, l, acc = _partials(rng, hq, hkv, d, c, p, chunk)
    return (m, l, acc, _weight(rng, n, hq * d)), {"residual": _x(rng, n)}


@case("attention_output", "sinks_nvfp4_bias")
def _output_sinks(rng, size):
    hq, hkv, d, c, p, chunk, n = (4, 2, 16, 16, 30, 8, 32) if size == "tiny" else (64, 8, 64, 256, 600, 64, 2880)
    m, l, acc = _partials(rng, hq, hkv, d, c, p, chunk)  # real: gpt-oss-20b (64 heads of 64, sinks)
    return (m, l, acc, _weight(rng, n, hq * d, nvfp4=True), _x(rng, n)), {"sinks": _x(rng, hq)}


# ---- moe family: the grouped expert GEMVs of one token ------------------------------------------------------
def _experts(rng, t, e, k, h, i):
    ids = np.stack([rng.choice(e, size=k, replace=False) for _ in range(t)]).astype(np.int32)
    w = rng.random((t, k)).astype(F32)
    gate_up = _x(rng, e, 2 * i, h, scale=1.0 / np.sqrt(h))
    down = _x(rng, e, h, i, scale=1.0 / np.sqrt(i))
    return w, ids, gate_up, down


@case("rms_norm_moe_experts", "swiglu_residual")
def _moe_silu(rng, size):
    t, e, k, h, i = (1, 6, 2, 32, 16) if size == "tiny" else (1, 32, 8, 2048, 768)  # real: Qwen3-30B-A3B widths, 32 experts
    x = _x(rng, t, h, scale=3.0)
    return (x, _norm_w(rng, h)) + _experts(rng, t, e, k, h, i), {"eps": 1e-6, "residual": _x(rng, t, h)}


@case("rms_norm_moe_experts", "geglu_offset")
def _moe_gelu(rng, size):
    t, e, k, h, i = (2, 4, 1, 16, 16) if size == "tiny" else (1, 128, 8, 704, 256)
    return (_x(rng, t, h), _norm_w(rng, h, 1.0)) + _experts(rng, t, e, k, h, i), {
        "eps": 1e-6, "offset": 1.0, "activation": "gelu_tanh"}


# ---- embedding: NVFP4 tables (the engine's embed_nvfp4_rows) -------------------------------------------------
@case("embedding", "nvfp4_table_scaled")
def _embed_nvfp4(rng, size):
    v, d, t = (20, 32, 5) if size == "tiny" else (49152, 576, 16)
    table = nvfp4_quantize(_x(rng, v, d))
    ids = rng.integers(0, v, size=t)
    return (ids, table), {"scale": float(F32(np.sqrt(d)))}

