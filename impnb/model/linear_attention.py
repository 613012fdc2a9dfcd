"""The decoder layer of the hybrid linear-attention architectures (Qwen3-Next, Qwen3.5, Qwen3.5-MoE), written only
in impnb.ops calls, so it runs unchanged on every backend.

Legend: T = tokens of the chunk, H = hidden, Hq / Hkv = attention heads, D = attention head dim, Hk / Hv = key /
value heads of the linear layers, Dk / Dv their head dims, C = 2 Hk Dk + Hv Dv conv channels, K = conv width.

    x = x + mixer(rmsnorm(x))            mixer: gated DeltaNet ("linear" layers) or gated attention ("full")
    x = x + ffn(rmsnorm(x))              dense SwiGLU MLP, or routed experts + sigmoid-gated shared expert

Gated DeltaNet (weights laid out at load by impnb/model/hybrid_weights.py):
    [qkv | z | b | a] = in_proj x                      qkv [T, C], z [T, Hv Dv], b / a [T, Hv]
    q | k | v = silu(causal_conv1d(qkv, conv state))   T = 1: causal_conv1d_step
    g, beta = gdn_gates(a, b, A = -exp(A_log), dt_bias)
    o, S = gated_delta_rule_chunked(q, k, v, g, beta, S)   (L2-normed q / k, q scaled by Dk^-1/2; T = 1: the
                                                            recurrent gated_delta_rule)
    out = out_proj(gated_rms_norm(o, z, norm))
Gated attention: q_proj gives per head [query | gate]; out = o_proj(attention(...) * sigmoid(gate)).

Taps (impnb.golden), per layer: ``attn_norm``; linear layers ``q``, ``k``, ``v`` (after the convolution and SiLU,
q / k before their L2 norm), ``delta_out`` (the delta rule's output before the gated norm), ``conv_state`` and
``recurrent_state`` (the states after the chunk, with a leading axis of 1: a dump of a chunked prefill holds one
per chunk); full layers ``q``, ``k``, ``v`` as impnb.model.blocks; then ``attn_out``, ``ffn_norm``,
``router_logits`` (MoE layers), ``ffn_out``, ``residual``.
"""
from __future__ import annotations

from . import blocks
from .blocks import _tap


def decoder_layer(ops, x, w, lc, cfg, state, taps):
    """One hybrid decoder layer, x [T, H] -> [T, H]; ``state`` as blocks.decoder_layer's (the layer's cache first:
    a recurrent_cache.LayerState for linear layers, a LayerKV for full ones)."""
    i = lc.index
    h = blocks.norm(ops, x, w["attn_norm"], cfg)
    _tap(taps, "attn_norm", i, h)
    mixer = linear_attention_block if lc.kind == "linear" else gated_attention_block
    x = x + mixer(ops, h, w, lc, cfg, state, taps)
    h = blocks.norm(ops, x, w["ffn_norm"], cfg)
    _tap(taps, "ffn_norm", i, h)
    f = ffn(ops, h, w, lc, cfg, taps)
    _tap(taps, "ffn_out", i, f)
    x = x + f
    _tap(taps, "residual", i, x)
    return x


def linear_attention_block(ops, x, w, lc, cfg, state, taps):
    """Gated DeltaNet token mixer: x [T, H] (normed) -> [T, H]; updates the layer's recurrent state."""
    lin, layer_state = cfg.linear_attention, state[0]
    t, c, kd = x.shape[0], lin.conv_channels, lin.key_dim
    hk, dk, hv, dv = lin.n_key_heads, lin.key_head_dim, lin.n_value_heads, lin.value_head_dim
    proj = ops.linear(x, w["in_proj"])  # [T, C + Hv Dv + 2 Hv]
    mixed, z = proj[:, :c], proj[:, c:c + hv * dv]
    b, a = proj[:, c + hv * dv:c + hv * dv + hv], proj[:, c + hv * dv + hv:]
    if t == 1:
        y, conv_state = ops.causal_conv1d_step(mixed[0], w["conv"], layer_state.conv)
        y = y.reshape(1, c)
    else:
        y, conv_state = ops.causal_conv1d(mixed, w["conv"], layer_state.conv)
    q, k, v = y[:, :kd].reshape(t, hk, dk), y[:, kd:2 * kd].reshape(t, hk, dk), y[:, 2 * kd:].reshape(t, hv, dv)
    for name, value in (("q", q), ("k", k), ("v", v)):
        _tap(taps, name, lc.index, value)
    g, beta = ops.gdn_gates(a, b, w["A"], w["dt_bias"])  # [T, Hv] each
    if t == 1:
        o, delta = ops.gated_delta_rule(q, k, v, g, beta, layer_state.delta)
    else:
        o, delta = ops.gated_delta_rule_chunked(q, k, v, g, beta, layer_state.delta, chunk_size=lin.chunk_size)
    layer_state.update(conv_state, delta)
    _tap(taps, "delta_out", lc.index, o)
    _tap(taps, "conv_state", lc.index, conv_state.reshape(1, *conv_state.shape))
    _tap(taps, "recurrent_state", lc.index, delta.reshape(1, *delta.shape))
    o = ops.gated_rms_norm(o, z.reshape(t, hv, dv), w["norm"], eps=cfg.rms_eps)
    out = ops.linear(o.reshape(t, hv * dv), w["out"])
    _tap(taps, "attn_out", lc.index, out)
    return out


def gated_attention_block(ops, x, w, lc, cfg, state, taps):
    """Softmax attention with QK-norm, partial RoPE and the sigmoid output gate: x [T, H] (normed) -> [T, H]."""
    kv, positions, (inv_freq, rope_scaling), masks = state
    t, d, hq, hkv = x.shape[0], lc.head_dim, lc.n_heads, lc.n_kv_heads
    qkv = ops.linear(x, w["qkv"], w["qkv_bias"])  # [T, Hq D + 2 Hkv D (+ Hq D gate)]
    q = blocks._qk_norm(ops, qkv[:, :hq * d].reshape(t, hq, d), w["q_norm"], cfg)
    q = ops.rope(q, positions, inv_freq, style=lc.rope.style, attention_scaling=rope_scaling)
    _tap(taps, "q", lc.index, q)
    blocks._project_kv(ops, qkv[:, hq * d:(hq + 2 * hkv) * d], w, lc, cfg, state, taps)
    keys, values, slot_pos = kv.view()
    memo = (kv.capacity, kv.filled, lc.window)
    if memo not in masks:
        masks[memo] = ops.attention_mask(positions, slot_pos, window=lc.window)
    out = ops.attention(q, keys, values, masks[memo], scale=lc.scale).reshape(t, hq * d)
    if w["gated"]:
        out = ops.sigmoid_gate(out, qkv[:, (hq + 2 * hkv) * d:])
    out = ops.linear(out, w["o"], w["o_bias"])
    _tap(taps, "attn_out", lc.index, out)
    return out


def ffn(ops, x, w, lc, cfg, taps):
    """Dense SwiGLU MLP, or routed experts plus the shared expert scaled by sigmoid(shared_expert_gate x)."""
    if not lc.moe:
        return blocks.mlp(ops, x, w["mlp"], cfg.activation)
    m = w["moe"]
    routed = blocks.moe_block(ops, x, x, m, cfg.moe, cfg, lc.index, taps)
    shared = blocks.mlp(ops, x, m["shared_expert"], cfg.moe.activation)
    return routed + ops.sigmoid_gate(shared, ops.linear(x, m["shared_gate"]))  # gate [T, 1]
