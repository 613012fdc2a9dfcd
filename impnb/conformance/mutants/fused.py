"""Mutants of the fused ops (the CUDA engine's kernels): normed and gated GEMVs, the post-norm add, QK-norm + RoPE +
KV append, split-K decode attention and its combining o-projection, the gated activation and the normed experts.

Each copy is composed of the switchable copies of the ops it fuses (impnb/conformance/mutants/model.py, moe.py), so
a fused mutant carries the same bug an engine writer makes when inlining that op into the fused kernel."""
from __future__ import annotations

import numpy as np

from ...reference.linear import dense_weight
from . import copy_of, mutant
from .model import geglu_tanh, rms_norm, rope, swiglu, swiglu_oai
from .moe import moe_experts

F32 = np.float32


def _softcap(y, cap):
    return F32(cap) * np.tanh(y / F32(cap))


# ---- linear family -------------------------------------------------------------------------------------------
@copy_of("rms_norm_linear")
def rms_norm_linear(x, norm_weight, weight, bias=None, *, eps, offset=0.0, softcap=None, eps_inside_sqrt=True,
                    use_offset=True, use_softcap=True, use_bias=True):
    xn = rms_norm(x, norm_weight, eps=eps, offset=offset, eps_inside_sqrt=eps_inside_sqrt, use_offset=use_offset)
    y = xn @ dense_weight(weight).T
    if bias is not None and use_bias:
        y = y + np.asarray(bias, F32)
    return _softcap(y, softcap) if (softcap and use_softcap) else y


mutant("rms_norm_linear", "eps_outside_sqrt", "normalises by sqrt(mean x^2) + eps in the fused norm",
       rms_norm_linear, eps_inside_sqrt=False)
mutant("rms_norm_linear", "offset_dropped", "multiplies by w where the norm weight is (1 + w)", rms_norm_linear,
       use_offset=False)
mutant("rms_norm_linear", "softcap_ignored", "never soft-caps the LM-head logits", rms_norm_linear,
       use_softcap=False)
mutant("rms_norm_linear", "bias_ignored", "drops the projection bias", rms_norm_linear, use_bias=False)


@copy_of("gated_activation")
def gated_activation(gate_up, *, activation="silu", alpha=1.702, limit=7.0, up_first=False, default_oai_params=False,
                     erf_gelu=False):
    gate_up = np.asarray(gate_up, F32)
    width = gate_up.shape[-1] // 2
    gate, up = gate_up[..., :width], gate_up[..., width:]
    if up_first:
        gate, up = up, gate
    if activation == "silu":
        return swiglu(gate, up)
    if activation == "gelu_tanh":
        return geglu_tanh(gate, up, erf=erf_gelu)
    if default_oai_params:
        alpha, limit = 1.702, 7.0
    return swiglu_oai(gate, up, alpha=alpha, limit=limit)


mutant("gated_activation", "halves_swapped", "takes the up half as the gate", gated_activation, up_first=True)
mutant("gated_activation", "swiglu_oai_params_ignored", "uses gpt-oss's alpha 1.702 and limit 7 whatever the "
       "arguments say", gated_activation, default_oai_params=True)
mutant("gated_activation", "erf_gelu", "uses the erf GELU where the tanh approximation is specified",
       gated_activation, erf_gelu=True)


@copy_of("gated_linear")
def gated_linear(gate_up, weight, bias=None, *, activation="silu", residual=None, up_first=False, use_bias=True,
                 use_residual=True):
    y = gated_activation(gate_up, activation=activation, up_first=up_first) @ dense_weight(weight).T
    if bias is not None and use_bias:
        y = y + np.asarray(bias, F32)
    return y + np.asarray(residual, F32) if (residual is not None and use_residual) else y


mutant("gated_linear", "halves_swapped", "reads [up | gate] where the fused projection is [gate | up]", gated_linear,
       up_first=True)
mutant("gated_linear", "residual_dropped", "forgets the residual add of the down projection", gated_linear,
       use_residual=False)
mutant("gated_linear", "bias_ignored", "drops the down-projection bias", gated_linear, use_bias=False)


# ---- norms ---------------------------------------------------------------------------------------------------
@copy_of("rms_norm_add")
def rms_norm_add(x, t, weight, *, eps, offset=0.0, add_before_norm=False, use_offset=True, eps_inside_sqrt=True):
    x = np.asarray(x, F32)
    norm = dict(eps=eps, offset=offset, use_offset=use_offset, eps_inside_sqrt=eps_inside_sqrt)
    if add_before_norm:
        return rms_norm(x + np.asarray(t, F32), weight, **norm)
    return x + rms_norm(t, weight, **norm)


mutant("rms_norm_add", "add_before_norm", "adds the branch output to the residual first, then normalises the sum",
       rms_norm_add, add_before_norm=True)
mutant("rms_norm_add", "offset_dropped", "multiplies by w where Gemma's post-norm weight is (1 + w)", rms_norm_add,
       use_offset=False)
mutant("rms_norm_add", "eps_outside_sqrt", "adds eps after the square root in the post-norm", rms_norm_add,
       eps_inside_sqrt=False)


# ---- rope family: QK-norm + RoPE + KV append -----------------------------------------------------------------
def _chunk_norm(x, weight, eps, offset, use_offset):
    if weight is None:
        return x
    t, heads, d = x.shape
    nd = np.shape(weight)[0]
    return rms_norm(x.reshape(t, heads, d // nd, nd), weight, eps=eps, offset=offset,
                    use_offset=use_offset).reshape(t, heads, d)


@copy_of("qkv_rope_append")
def qkv_rope_append(qkv, k_cache, v_cache, slot_pos, positions, inv_freq, *, n_heads, q_norm=None, k_norm=None,
                    v_norm=False, k_eq_v=False, eps=1e-6, offset=0.0, style="neox", attention_scaling=1.0,
                    wrap_slots=True, update_positions=True, v_after_k_rope=False, q_uses_k_norm=False,
                    use_offset=True, use_scaling=True):
    qkv = np.asarray(qkv, F32)
    t = qkv.shape[0]
    c, hkv, d = np.shape(k_cache)
    positions = np.asarray(positions, np.int64)
    q = qkv[:, :n_heads * d].reshape(t, n_heads, d)
    k = qkv[:, n_heads * d:(n_heads + hkv) * d].reshape(t, hkv, d)
    rot = dict(style=style, attention_scaling=attention_scaling if use_scaling else 1.0)
    norm = dict(eps=eps, offset=offset, use_offset=use_offset)
    q = rope(_chunk_norm(q, k_norm if q_uses_k_norm else q_norm, **norm), positions, inv_freq, **rot)
    k_rot = rope(_chunk_norm(k, k_norm, **norm), positions, inv_freq, **rot)
    if k_eq_v:
        v = k_rot if v_after_k_rope else k
    else:
        v = qkv[:, (n_heads + hkv) * d:(n_heads + 2 * hkv) * d].reshape(t, hkv, d)
    if v_norm:
        v = rms_norm(v, None, eps=eps)
    k_out, v_out, pos_out = np.array(k_cache, F32), np.array(v_cache, F32), np.array(slot_pos)
    slots = positions % c if wrap_slots else positions
    inside = slots < c  # a bounds-guarded store drops a write past the last slot
    k_out[slots[inside]], v_out[slots[inside]] = k_rot[inside], v[inside]
    if update_positions:
        pos_out[slots[inside]] = positions[inside]
    return q, k_out, v_out, pos_out


mutant("qkv_rope_append", "ring_slot_not_wrapped", "writes position p to slot p instead of p % C, so a ring "
       "drops every write once it wraps (a bounds-guarded store)", qkv_rope_append, wrap_slots=False)
mutant("qkv_rope_append", "slot_positions_not_updated", "writes k and v but not the slot's position",
       qkv_rope_append, update_positions=False)
mutant("qkv_rope_append", "v_after_k_norm_and_rope", "with k_eq_v, stores the normed and rotated k as v",
       qkv_rope_append, v_after_k_rope=True)
mutant("qkv_rope_append", "q_normed_with_k_norm", "QK-norms q with the k_norm weights", qkv_rope_append,
       q_uses_k_norm=True)
mutant("qkv_rope_append", "offset_dropped", "QK-norms with w where the weights are (1 + w)", qkv_rope_append,
       use_offset=False)


@copy_of("rms_norm_qkv_rope_append")
def rms_norm_qkv_rope_append(x, norm_weight, weight, k_cache, v_cache, slot_pos, positions, inv_freq, *, n_heads,
                             bias=None, eps, offset=0.0, style="neox", attention_scaling=1.0, use_bias=True,
                             use_offset=True, wrap_slots=True, use_scaling=True):
    qkv = rms_norm_linear(x, norm_weight, weight, bias, eps=eps, offset=offset, use_offset=use_offset,
                          use_bias=use_bias)
    return qkv_rope_append(qkv, k_cache, v_cache, slot_pos, positions, inv_freq, n_heads=n_heads, style=style,
                           attention_scaling=attention_scaling, wrap_slots=wrap_slots, use_scaling=use_scaling)


mutant("rms_norm_qkv_rope_append", "bias_ignored", "drops the q|k|v bias", rms_norm_qkv_rope_append,
       use_bias=False)
mutant("rms_norm_qkv_rope_append", "offset_dropped", "multiplies by w where the input norm weight is (1 + w)",
       rms_norm_qkv_rope_append, use_offset=False)
mutant("rms_norm_qkv_rope_append", "ring_slot_not_wrapped", "writes position p to slot p instead of p % C",
       rms_norm_qkv_rope_append, wrap_slots=False)
mutant("rms_norm_qkv_rope_append", "attention_scaling_ignored", "drops YaRN's attention scaling of cos and sin",
       rms_norm_qkv_rope_append, use_scaling=False)


# ---- attention family ----------------------------------------------------------------------------------------
@copy_of("attention_decode")
def attention_decode(q, k_cache, v_cache, slot_pos, position, *, scale, softcap=None, window=None, chunk=64,
                     kv_head_modulo=False, use_window=True, use_softcap=True, ring_slot_coordinates=False,
                     tiles_per_split=1, rescale_running=True):
    q, k, v = (np.asarray(a, F32) for a in (q, k_cache, v_cache))
    c, hkv, d = k.shape
    hq, splits, used = q.shape[0], -(-c // chunk), min(int(position) + 1, c)
    stored = np.asarray(slot_pos, np.int64)[:used]
    if ring_slot_coordinates:  # assumes slot s holds position start + s
        stored = int(stored.max()) - used + 1 + np.arange(used)
    allowed = (stored >= 0) & (stored <= position)
    if window is not None and use_window:
        allowed &= (position - stored) < window
    heads = np.arange(hq) % hkv if kv_head_modulo else np.arange(hq) // (hq // hkv)
    kh, vh = k[:used][:, heads], v[:used][:, heads]  # [used, Hq, D]
    scores = np.einsum("hd,shd->hs", q, kh) * F32(scale)
    if softcap is not None and use_softcap:
        scores = _softcap(scores, softcap)
    scores = np.where(allowed[None], scores, F32(-np.inf)).astype(F32)
    m = np.full((hq, splits), -np.inf, F32)
    l, acc = np.zeros((hq, splits), F32), np.zeros((hq, splits, d), F32)
    tile = -(-chunk // tiles_per_split)
    for j in range(-(-used // chunk)):
        for start in range(j * chunk, min((j + 1) * chunk, used), tile):  # online softmax over the split's tiles
            s = scores[:, start:min(start + tile, (j + 1) * chunk)]
            new_max = np.maximum(m[:, j], s.max(axis=1))
            shift = np.where(np.isfinite(new_max), new_max, F32(0.0))
            keep = np.where(np.isfinite(m[:, j]), np.exp(m[:, j] - shift), F32(0.0)) if rescale_running else F32(1.0)
            e = np.where(np.isfinite(s), np.exp(s - shift[:, None]), F32(0.0)).astype(F32)
            l[:, j] = l[:, j] * keep + e.sum(axis=1, dtype=F32)
            acc[:, j] = acc[:, j] * np.reshape(keep, (-1, 1)) + np.einsum("hs,shd->hd", e, vh[start:start + e.shape[1]])
            m[:, j] = new_max
    return m, l, acc


mutant("attention_decode", "gqa_head_modulo", "query head h reads KV head h % Hkv instead of h // (Hq / Hkv)",
       attention_decode, kv_head_modulo=True)
mutant("attention_decode", "window_ignored", "attends to every stored slot of a sliding-window layer",
       attention_decode, use_window=False)
mutant("attention_decode", "softcap_ignored", "never soft-caps the attention scores", attention_decode,
       use_softcap=False)
mutant("attention_decode", "running_sum_not_rescaled", "runs an online softmax over two tiles per split but does "
       "not rescale the running l and acc by exp(m_old - m_new) when a later tile raises the max", attention_decode,
       tiles_per_split=2, rescale_running=False)
mutant("attention_decode", "ring_slot_coordinates", "decides the window in ring-slot coordinates (slot s taken to "
       "hold position start + s) instead of from the stored positions", attention_decode, ring_slot_coordinates=True)


@copy_of("attention_output")
def attention_output(m, l, acc, weight, bias=None, *, sinks=None, residual=None, rescale=True, use_sinks=True,
                     use_bias=True, use_residual=True):
    m, l, acc = (np.asarray(a, F32) for a in (m, l, acc))
    sink = None if (sinks is None or not use_sinks) else np.asarray(sinks, F32)
    top = m.max(axis=1) if sink is None else np.maximum(m.max(axis=1), sink)
    safe = np.where(np.isfinite(top), top, F32(0.0))
    w = np.where(np.isfinite(m), np.exp(m - safe[:, None]) if rescale else F32(1.0), F32(0.0)).astype(F32)
    total = (w * l).sum(axis=1, dtype=F32) + (np.exp(sink - safe) if sink is not None else F32(0.0))
    inv = np.where(total > 0, F32(1.0) / np.where(total > 0, total, F32(1.0)), F32(0.0)).astype(F32)
    y = np.einsum("hs,hsd->hd", w * inv[:, None], acc).astype(F32).reshape(-1) @ dense_weight(weight).T
    if bias is not None and use_bias:
        y = y + np.asarray(bias, F32)
    return y + np.asarray(residual, F32) if (residual is not None and use_residual) else y


mutant("attention_output", "combine_without_max_rescale", "sums the splits' l and acc without rescaling each by "
       "exp(m_j - max m)", attention_output, rescale=False)
mutant("attention_output", "sinks_dropped", "leaves the sink logits out of the combined denominator",
       attention_output, use_sinks=False)
mutant("attention_output", "residual_dropped", "forgets the residual add of the o-projection", attention_output,
       use_residual=False)
mutant("attention_output", "bias_ignored", "drops the o-projection bias", attention_output, use_bias=False)


# ---- moe family ----------------------------------------------------------------------------------------------
@copy_of("rms_norm_moe_experts")
def rms_norm_moe_experts(x, norm_weight, weights, ids, gate_up, down, *, eps, offset=0.0, activation="silu",
                         residual=None, renormalize_again=False, use_offset=True, use_residual=True,
                         up_rows_first=False):
    xn = rms_norm(x, norm_weight, eps=eps, offset=offset, use_offset=use_offset)
    w = np.asarray(weights, F32)
    if renormalize_again:
        w = w / w.sum(axis=-1, keepdims=True, dtype=F32)
    out = moe_experts(xn, w, ids, gate_up, down, activation=activation, up_rows_first=up_rows_first)
    return out + np.asarray(residual, F32) if (residual is not None and use_residual) else out


mutant("rms_norm_moe_experts", "weights_renormalised_again", "renormalises the routing weights to sum 1 a second "
       "time (the router already applied its rule)", rms_norm_moe_experts, renormalize_again=True)
mutant("rms_norm_moe_experts", "offset_dropped", "multiplies by w where the norm weight is (1 + w)",
       rms_norm_moe_experts, use_offset=False)
mutant("rms_norm_moe_experts", "residual_dropped", "forgets the residual add after the experts",
       rms_norm_moe_experts, use_residual=False)
mutant("rms_norm_moe_experts", "gate_up_halves_swapped", "reads the up rows first, then the gate rows",
       rms_norm_moe_experts, up_rows_first=True)
