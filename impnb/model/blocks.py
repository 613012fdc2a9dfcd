"""Transformer blocks written only in impnb.ops calls: attention, dense MLP, MoE, and one decoder layer.

Legend: T = tokens of the chunk, H = hidden, Hq / Hkv = query / KV heads, D = head dim, S = KV slots in the view,
I = FFN width, E = experts, K = experts per token.

``ops`` is an op table bound to one backend (impnb.model.OpTable); ``w`` a layer's weights (impnb.model.weights);
``lc`` its LayerConfig; ``cfg`` the ModelConfig; ``taps`` the golden tap hook (or None).
"""
from __future__ import annotations

import numpy as np


def _tap(taps, name, layer, x):
    if taps is not None:
        taps.tap(name, layer, x)


def norm(ops, x, weight, cfg, *, offset=None):
    return ops.rms_norm(x, weight, eps=cfg.rms_eps, offset=cfg.norm_offset if offset is None else offset)


def _qk_norm(ops, x, weight, cfg):
    """RMSNorm per head, or per chunk of qk_norm_dim < head_dim (Gemma-4 GGUF geometry)."""
    t, heads, d = x.shape
    nd = weight.shape[0]  # head_dim, or a divisor of it (validated at load)
    y = norm(ops, x.reshape(t, heads, d // nd, nd), weight, cfg)  # [T, heads, D/nd, nd]
    return y.reshape(t, heads, d)


def attention_block(ops, x, w, lc, cfg, state, taps):
    """x [T, H] (normed) -> [T, H]. ``state``: the layer's LayerKV, positions [T], the rope table, masks memo."""
    kv, positions, (inv_freq, rope_scaling), masks = state
    t, d, hq, hkv = x.shape[0], lc.head_dim, lc.n_heads, lc.n_kv_heads
    qkv = ops.linear(x, w["qkv"], w["qkv_bias"])  # [T, (Hq + 2 Hkv) D]; KV-sharing layers: [T, Hq D]
    q = qkv[:, :hq * d].reshape(t, hq, d)
    if cfg.qk_norm:
        q = _qk_norm(ops, q, w["q_norm"], cfg)
    q = ops.rope(q, positions, inv_freq, style=lc.rope.style, attention_scaling=rope_scaling)
    _tap(taps, "q", lc.index, q)
    if lc.kv_source is None:  # else: the producer layer already wrote this chunk's K/V into the shared slots
        _project_kv(ops, qkv[:, hq * d:], w, lc, cfg, state, taps)
    keys, values, slot_pos = kv.view()
    memo = (kv.capacity, kv.filled, lc.window)  # same geometry + window -> same mask for every such layer
    if memo not in masks:
        masks[memo] = ops.attention_mask(positions, slot_pos, window=lc.window)  # [T, S], view frame
    out = ops.attention(q, keys, values, masks[memo], scale=lc.scale, softcap=cfg.attn_softcap,
                        sinks=w.get("sinks"))  # [T, Hq, D]
    out = ops.linear(out.reshape(t, hq * d), w["o"], w["o_bias"])
    _tap(taps, "attn_out", lc.index, out)
    return out


def _project_kv(ops, kv_part, w, lc, cfg, state, taps):
    """k / v of this chunk (QK-norm, v_norm, RoPE) written into the layer's cache slots."""
    kv, positions, (inv_freq, rope_scaling), _ = state
    t, d, hkv = kv_part.shape[0], lc.head_dim, lc.n_kv_heads
    k = kv_part[:, :hkv * d].reshape(t, hkv, d)
    v = k if lc.k_eq_v else kv_part[:, hkv * d:].reshape(t, hkv, d)  # k_eq_v: raw k, before k_norm and RoPE
    if cfg.qk_norm:
        k = _qk_norm(ops, k, w["k_norm"], cfg)
    if cfg.v_norm:
        v = norm(ops, v, None, cfg, offset=0.0)
    k = ops.rope(k, positions, inv_freq, style=lc.rope.style, attention_scaling=rope_scaling)
    _tap(taps, "k", lc.index, k)
    _tap(taps, "v", lc.index, v)
    kv.write(positions, k, v)


def gated_act(ops, h, activation, moe=None):
    """h [T, 2I] = [gate | up] -> [T, I]."""
    width = h.shape[-1] // 2
    gate, up = h[:, :width], h[:, width:]
    if activation == "silu":
        return ops.swiglu(gate, up)
    if activation == "gelu_tanh":
        return ops.geglu_tanh(gate, up)
    return ops.swiglu_oai(gate, up, alpha=moe.swiglu_alpha, limit=moe.swiglu_limit)


def mlp(ops, x, w, activation):
    """Dense gated MLP: down(act(gate x) * up x); x [T, H] -> [T, H]."""
    return ops.linear(gated_act(ops, ops.linear(x, w["gate_up"], w["gate_up_bias"]), activation), w["down"],
                      w["down_bias"])


def moe_block(ops, x, router_in, w, moe, cfg, layer, taps):
    """Routed experts on x [T, H]; the router reads ``router_in`` [T, H] -> [T, H]."""
    if moe.router_input_norm:  # Gemma-4: rmsnorm without weight, times router.scale / sqrt(H)
        router_in = norm(ops, router_in, w["router_in_scale"], cfg, offset=0.0)
    logits = ops.linear(router_in, w["router"], w["router_bias"])  # [T, E]
    _tap(taps, "router_logits", layer, logits)
    weights, ids = ops.moe_route(logits, top_k=moe.top_k, gating=moe.gating, renormalize=moe.renormalize,
                                 expert_scale=w["expert_scale"], scale=moe.routed_scaling_factor)  # [T, K] x2
    out = ops.moe_experts(x, weights, ids, w["gate_up"], w["down"], activation=moe.activation,
                          gate_up_bias=w["gate_up_bias"], down_bias=w["down_bias"],
                          swiglu_alpha=moe.swiglu_alpha, swiglu_limit=moe.swiglu_limit)
    if "shared" in w:
        out = out + mlp(ops, x, w["shared"], moe.activation)
    return out


def ffn_block(ops, x, residual, w, lc, cfg, taps):
    """The layer's FFN on the normed x [T, H]; ``residual`` [T, H] is the pre-norm stream (Gemma-4 router input)."""
    moe = cfg.moe if lc.moe else None
    if moe is None:
        return mlp(ops, x, w["mlp"], cfg.activation)
    if not moe.parallel_dense_mlp:
        return moe_block(ops, x, x, w["moe"], moe, cfg, lc.index, taps)
    # Gemma-4: dense MLP on pre_feedforward_layernorm(x) and experts on pre_feedforward_layernorm_2(x), each with
    # its own post norm, summed (then post_feedforward_layernorm outside)
    m = w["moe"]
    dense_out = norm(ops, mlp(ops, x, w["mlp"], cfg.activation), m["post_dense_norm"], cfg)
    experts_in = norm(ops, residual, m["pre_experts_norm"], cfg)
    experts_out = norm(ops, moe_block(ops, experts_in, residual, m, moe, cfg, lc.index, taps),
                       m["post_experts_norm"], cfg)
    return dense_out + experts_out


def per_layer_inputs(ops, ids, x, ple, cfg):
    """Gemma-4 PLE, [T, L, P]: (rmsnorm(proj(x) / sqrt(H)) + table[ids] * sqrt(P)) / sqrt(2)."""
    t, n, p = ids.size, cfg.n_layers, cfg.ple_dim
    token_part = ops.embedding(ids, ple["table"], scale=float(np.float32(np.sqrt(p)))).reshape(t, n, p)
    context = ops.linear(x, ple["proj"]) * np.float32(cfg.hidden_size ** -0.5)  # [T, L*P]
    context = norm(ops, context.reshape(t, n, p), ple["norm"], cfg)
    return (context + token_part) * np.float32(2.0 ** -0.5)


def _per_layer_input(ops, x, w, ple_input, cfg):
    """x + post_norm(proj(gelu_tanh(gate(x)) * ple_input)) for one layer's ple_input [T, P]."""
    g = ops.gelu_tanh(ops.linear(x, w["ple_gate"])) * ple_input
    return x + norm(ops, ops.linear(g, w["ple_proj"]), w["ple_norm"], cfg)


def decoder_layer(ops, x, w, lc, cfg, state, taps, ple_input=None):
    """One pre-norm decoder layer (with Gemma's sandwich norms, Gemma-4's per-layer input and layer scalar);
    x [T, H] -> [T, H]."""
    if cfg.linear_attention is not None:  # Qwen3-Next / Qwen3.5: gated DeltaNet and gated-attention layers
        from .linear_attention import decoder_layer as hybrid_decoder_layer
        return hybrid_decoder_layer(ops, x, w, lc, cfg, state, taps)
    i = lc.index
    h = norm(ops, x, w["attn_norm"], cfg)
    _tap(taps, "attn_norm", i, h)
    a = attention_block(ops, h, w, lc, cfg, state, taps)
    if cfg.sandwich_norms:
        a = norm(ops, a, w["post_attn_norm"], cfg)
    x = x + a
    h = norm(ops, x, w["ffn_norm"], cfg)
    _tap(taps, "ffn_norm", i, h)
    f = ffn_block(ops, h, x, w, lc, cfg, taps)
    if cfg.sandwich_norms:
        f = norm(ops, f, w["post_ffn_norm"], cfg)
    _tap(taps, "ffn_out", i, f)
    x = x + f
    if ple_input is not None:
        x = _per_layer_input(ops, x, w, ple_input, cfg)
    if w.get("layer_scalar") is not None:
        x = x * w["layer_scalar"]
    _tap(taps, "residual", i, x)
    return x
