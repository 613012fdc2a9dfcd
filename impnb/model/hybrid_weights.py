"""Weights of the hybrid linear-attention layers (Qwen3-Next, Qwen3.5, Qwen3.5-MoE): checkpoint tensors (HF names and
orientation; NVFP4 / MXFP4 dequantized once by impnb.model.weights.dense) -> the float32 layout of
impnb/model/linear_attention.py.

Legend: H hidden, Hq / Hkv / D attention heads and head dim, Hk / Hv / Dk / Dv linear-layer heads and head dims,
r = Hv / Hk value heads per key head, C = 2 Hk Dk + Hv Dv conv channels, K conv width.

Linear layers (``linear_attn.``), one fused input projection ``in_proj`` [C + Hv Dv + 2 Hv, H] = [q | k | v | z | b | a]:
  * Qwen3.5: ``in_proj_qkv`` [C, H], ``in_proj_z`` [Hv Dv, H], ``in_proj_b`` / ``in_proj_a`` [Hv, H], stacked;
  * Qwen3-Next: ``in_proj_qkvz`` [Hk (2 Dk + 2 r Dv), H] grouped per key head as [q (Dk) | k (Dk) | v (r Dv) |
    z (r Dv)], and ``in_proj_ba`` [Hk 2 r, H] grouped as [b (r) | a (r)]: regrouped into the Qwen3.5 order (value
    head g r + j belongs to key head g, as transformers' reshape gives); its GGUF files hold qkv and z already split
    (attn_qkv, attn_gate) beside ssm_ba;
  * ``conv1d.weight`` [C, 1, K] (or [C, K], GGUF) -> conv [C, K]; ``A_log`` [Hv] -> A = -exp(A_log);
    ``dt_bias`` [Hv]; ``norm.weight`` [Dv] (plain weight); ``out_proj`` [H, Hv Dv].
Full layers (``self_attn.``): ``q_proj`` [2 Hq D, H] holds per head [query (D) | gate (D)] -> qkv rows
[query (Hq D) | k | v | gate (Hq D)]; a q_proj of Hq D rows is an ungated layer (transformers always gates: 2x
rows); q_norm / k_norm [D]; o_proj. MoE: weights._moe's router and experts, ``mlp.shared_expert`` and
``mlp.shared_expert_gate`` [1, H].
"""
from __future__ import annotations

import warnings

import numpy as np

from ..errors import FormatError
from . import weights as W


def load_layer(store: W.WeightStore, config, lc) -> dict:
    """All float32 weights of hybrid layer ``lc``, keyed by role (see the module docstring)."""
    p, h = f"layers.{lc.index}.", config.hidden_size
    w = {"attn_norm": store.get(p + "input_layernorm.weight", (h,)),
         "ffn_norm": store.get(p + "post_attention_layernorm.weight", (h,))}
    if lc.kind == "linear":
        w.update(_linear(store, p + "linear_attn.", config))
    else:
        w.update(_gated_attention(store, p + "self_attn.", config, lc))
    if lc.moe:
        w["moe"] = _moe(store, p, config)
    else:
        w["mlp"] = W._mlp(store, p + "mlp.", h)
    return w


def _linear(store, p, config) -> dict:
    lin, h = config.linear_attention, config.hidden_size
    hv, dv = lin.n_value_heads, lin.value_head_dim
    if store.has(p + "in_proj_qkvz.weight"):
        qkv, z = _regroup_qkvz(store, p, lin, h)
    else:
        qkv = store.get(p + "in_proj_qkv.weight", (lin.conv_channels, h))
        z = store.get(p + "in_proj_z.weight", (hv * dv, h))
    if store.has(p + "in_proj_ba.weight"):
        b, a = _regroup_ba(store, p, lin, h)
    else:
        b = store.get(p + "in_proj_b.weight", (hv, h))
        a = store.get(p + "in_proj_a.weight", (hv, h))
    conv = store.get(p + "conv1d.weight")
    if conv.size != lin.conv_channels * lin.conv_kernel:
        raise FormatError(f"{p}conv1d.weight: shape {tuple(conv.shape)}, expected [{lin.conv_channels}, 1, "
                          f"{lin.conv_kernel}]")
    a_log = store.get(p + "A_log", (hv,))
    return {"in_proj": np.ascontiguousarray(np.concatenate([qkv, z, b, a], axis=0)),
            "conv": np.ascontiguousarray(conv.reshape(lin.conv_channels, lin.conv_kernel)),
            "A": (-np.exp(a_log)).astype(np.float32), "dt_bias": store.get(p + "dt_bias", (hv,)),
            "norm": store.get(p + "norm.weight", (dv,)), "out": store.get(p + "out_proj.weight", (h, hv * dv))}


def _regroup_qkvz(store, p, lin, h):
    """Qwen3-Next's in_proj_qkvz, per key head [q | k | v | z] -> (qkv, z) in Qwen3.5's order."""
    hk, dk, dv = lin.n_key_heads, lin.key_head_dim, lin.value_head_dim
    r = lin.n_value_heads // hk
    group = 2 * dk + 2 * r * dv
    qkvz = store.get(p + "in_proj_qkvz.weight", (hk * group, h)).reshape(hk, group, h)
    q, k = qkvz[:, :dk], qkvz[:, dk:2 * dk]
    v, z = qkvz[:, 2 * dk:2 * dk + r * dv], qkvz[:, 2 * dk + r * dv:]
    return np.concatenate([q.reshape(-1, h), k.reshape(-1, h), v.reshape(-1, h)], axis=0), z.reshape(-1, h)


def _regroup_ba(store, p, lin, h):
    """Qwen3-Next's in_proj_ba, per key head [b (r) | a (r)] -> (b [Hv, H], a [Hv, H])."""
    r = lin.n_value_heads // lin.n_key_heads
    ba = store.get(p + "in_proj_ba.weight", (lin.n_key_heads * 2 * r, h)).reshape(lin.n_key_heads, 2 * r, h)
    return ba[:, :r].reshape(-1, h), ba[:, r:].reshape(-1, h)


def _gated_attention(store, p, config, lc) -> dict:
    h, d, hq, hkv = config.hidden_size, lc.head_dim, lc.n_heads, lc.n_kv_heads
    q_full = store.get(p + "q_proj.weight")
    gated = q_full.shape == (2 * hq * d, h)
    if not gated and q_full.shape != (hq * d, h):
        raise FormatError(f"{p}q_proj.weight: shape {tuple(q_full.shape)}, expected [{2 * hq * d}, {h}] (query and "
                          f"output gate per head) or [{hq * d}, {h}]")
    if gated != config.linear_attention.attn_output_gate:
        warnings.warn(f"{p}q_proj.weight has {q_full.shape[0]} rows: the attention output gate is "
                      f"{'on' if gated else 'off'}, although the config says attn_output_gate="
                      f"{config.linear_attention.attn_output_gate} (the weights decide, as in transformers)",
                      stacklevel=3)
    q, gate = _split_query_gate(q_full, hq, d, gated)
    k = store.get(p + "k_proj.weight", (hkv * d, h))
    v = store.get(p + "v_proj.weight", (hkv * d, h))
    qb = store.get(p + "q_proj.bias", (q_full.shape[0],), optional=True)
    kb, vb = (store.get(p + n + ".bias", (hkv * d,), optional=True) for n in ("k_proj", "v_proj"))
    biases = None
    if any(bias is not None for bias in (qb, kb, vb)):
        zeros = np.zeros(hkv * d, np.float32)
        q_bias, gate_bias = _split_query_gate(qb if qb is not None else np.zeros(q_full.shape[0], np.float32),
                                              hq, d, gated)
        biases = np.concatenate([q_bias, kb if kb is not None else zeros, vb if vb is not None else zeros]
                                + ([gate_bias] if gated else []))
    return {"qkv": np.ascontiguousarray(np.concatenate([q, k, v] + ([gate] if gated else []), axis=0)),
            "qkv_bias": biases, "gated": gated,
            "o": store.get(p + "o_proj.weight", (h, hq * d)), "o_bias": store.get(p + "o_proj.bias", (h,),
                                                                                   optional=True),
            "q_norm": W._qk_norm_weight(store, p + "q_norm.weight", config, d),
            "k_norm": W._qk_norm_weight(store, p + "k_norm.weight", config, d)}


def _split_query_gate(rows, hq, d, gated):
    """[Hq 2 D, ...] per head [query | gate] -> (query [Hq D, ...], gate [Hq D, ...]); ungated: (rows, None)."""
    if not gated:
        return rows, None
    per_head = rows.reshape(hq, 2, d, *rows.shape[1:])
    return (np.ascontiguousarray(per_head[:, 0]).reshape(hq * d, *rows.shape[1:]),
            np.ascontiguousarray(per_head[:, 1]).reshape(hq * d, *rows.shape[1:]))


def _moe(store, p, config) -> dict:
    """Router and experts (impnb.model.weights), the shared expert and its one-row sigmoid gate [1, H]."""
    moe = W._moe(store, p, config, config.moe)
    moe["shared_expert"] = moe.pop("shared")
    gate = store.get(p + "mlp.shared_expert_gate.weight")
    if gate.size != config.hidden_size:
        raise FormatError(f"{p}mlp.shared_expert_gate.weight: shape {tuple(gate.shape)}, expected "
                          f"[1, {config.hidden_size}]")
    moe["shared_gate"] = gate.reshape(1, config.hidden_size)
    return moe
