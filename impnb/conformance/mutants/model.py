"""Mutants of the forward-pass ops: embedding, linear, rms_norm, rope, masks, attention, activations, MoE."""
from __future__ import annotations

import math

import numpy as np

from ...formats import NVFP4Tensor
from ...reference.activations import _sigmoid
from ...reference.nvfp4 import nvfp4_dequantize
from . import copy_of, mutant

F32 = np.float32


# ---- embedding / linear / rms_norm -----------------------------------------------------------------------------
@copy_of("embedding")
def embedding(ids, table, *, scale=1.0, apply_scale=True, scale_in_bf16=False, global_scale_multiplied=False):
    ids = np.asarray(ids)
    if isinstance(table, NVFP4Tensor):  # the rows' codes and block scales, decoded exactly
        gs = table.global_scale
        if global_scale_multiplied and table.layout == "compressed-tensors":
            gs = float(F32(1.0) / F32(gs))
        table = nvfp4_dequantize(NVFP4Tensor(np.asarray(table.packed)[ids], np.asarray(table.scales)[ids], gs,
                                             table.layout))
        ids = np.arange(ids.shape[0])
    rows = np.asarray(table[ids], dtype=F32)
    if scale_in_bf16:
        scale = float(_to_bf16(np.float32(scale)))
    return rows * F32(scale) if (apply_scale and scale != 1.0) else rows


def _to_bf16(a):
    """float32 values rounded to bfloat16 (nearest even), back in float32."""
    import ml_dtypes
    return np.asarray(a, F32).astype(ml_dtypes.bfloat16).astype(F32)


mutant("embedding", "scale_forgotten", "never multiplies by the embedding scale (Gemma's sqrt(hidden))", embedding,
       apply_scale=False)
mutant("embedding", "nvfp4_global_scale_multiplied", "decodes an NVFP4 table multiplying by the "
       "compressed-tensors global scale, which is a divisor", embedding, global_scale_multiplied=True)
mutant("embedding", "scale_rounded_to_bf16", "rounds the embedding scale to bfloat16 before multiplying",
       embedding, scale_in_bf16=True)


@copy_of("linear")
def linear(x, weight, bias=None, *, use_bias=True, bf16_activations=False):
    x = np.asarray(x, dtype=F32)
    if bf16_activations:
        x = _to_bf16(x)
    out = x @ weight.T
    if bias is not None and use_bias:
        out += bias
    return out


mutant("linear", "bias_ignored", "drops the bias", linear, use_bias=False)
mutant("linear", "bf16_activations", "rounds the activations to bfloat16 before the product", linear,
       bf16_activations=True)


@copy_of("rms_norm")
def rms_norm(x, weight, *, eps, offset=0.0, eps_inside_sqrt=True, use_offset=True, per_row_of_last_two=False):
    x = np.asarray(x, dtype=F32)
    axes = (-2, -1) if (per_row_of_last_two and x.ndim > 2) else -1
    ms = np.mean(np.square(x), axis=axes, keepdims=True, dtype=F32)
    denom = np.sqrt(ms + F32(eps)) if eps_inside_sqrt else np.sqrt(ms) + F32(eps)
    out = x * (F32(1.0) / denom)
    if weight is not None:
        w = np.asarray(weight, dtype=F32)
        out *= (w + F32(offset)) if (offset and use_offset) else w
    return out


mutant("rms_norm", "eps_outside_sqrt", "adds eps after the square root: x / (sqrt(mean x^2) + eps)", rms_norm,
       eps_inside_sqrt=False)
mutant("rms_norm", "offset_forgotten", "multiplies by w where Gemma's norms need (1 + w)", rms_norm,
       use_offset=False)
mutant("rms_norm", "norm_over_all_heads", "normalises [T, H, D] over H x D instead of per head", rms_norm,
       per_row_of_last_two=True)


# ---- rope ------------------------------------------------------------------------------------------------------
@copy_of("rope")
def rope(x, positions, inv_freq, *, style="neox", attention_scaling=1.0, swap_styles=False, full_dim_pairs=False,
         use_scaling=True, angle_in_float64=False, rotate_backwards=False, scale_pass_through=False):
    x = np.asarray(x, dtype=F32)
    inv = np.asarray(inv_freq, dtype=F32)
    if full_dim_pairs:  # pads the frequencies with zeros to D / 2, so neox pairs (i, i + D/2)
        inv = np.concatenate([inv, np.zeros(x.shape[-1] // 2 - inv.shape[0], F32)])
    rot = 2 * inv.shape[0]
    pos = np.asarray(positions)
    angle = (pos.astype(np.float64)[:, None] * inv.astype(np.float64) if angle_in_float64
             else pos.astype(F32)[:, None] * inv[None, :])
    scaling = F32(attention_scaling if use_scaling else 1.0)
    cos = (np.cos(angle) * scaling).astype(F32)[:, None, :]
    sin = (np.sin(angle) * scaling).astype(F32)[:, None, :] * (F32(-1.0) if rotate_backwards else F32(1.0))
    if swap_styles:
        style = "interleaved" if style == "neox" else "neox"
    out = x.copy()
    if style == "neox":
        a, b, first, second = x[..., :rot // 2], x[..., rot // 2:rot], np.s_[..., :rot // 2], np.s_[..., rot // 2:rot]
    else:
        a, b, first, second = x[..., 0:rot:2], x[..., 1:rot:2], np.s_[..., 0:rot:2], np.s_[..., 1:rot:2]
    if scale_pass_through:
        out[..., rot:] *= scaling
    out[first] = a * cos - b * sin
    out[second] = b * cos + a * sin
    return out


mutant("rope", "styles_swapped", "pairs (2i, 2i+1) for neox and (i, i + R/2) for interleaved", rope,
       swap_styles=True)
mutant("rope", "partial_rotary_full_dim", "rotates pairs (i, i + D/2) over the whole head when only R < D dims "
       "rotate", rope, full_dim_pairs=True)
mutant("rope", "attention_scaling_ignored", "drops YaRN's attention scaling of cos and sin", rope,
       use_scaling=False)
mutant("rope", "angles_in_float64", "computes pos * inv_freq in float64 (transformers rounds it to float32)",
       rope, angle_in_float64=True)
mutant("rope", "scaling_on_pass_through_dims", "multiplies the unrotated dims of a partial rotary head by the "
       "attention scaling too", rope, scale_pass_through=True)
mutant("rope", "rotates_backwards", "rotates by -angle (sin sign flipped)", rope, rotate_backwards=True)


# ---- attention_mask / attention --------------------------------------------------------------------------------
@copy_of("attention_mask")
def attention_mask(query_pos, slot_pos, *, window=None, slot_frame=False, window_inclusive=False,
                   empty_slots_visible=False, causal=True, slot_index_as_position=False):
    q = np.asarray(query_pos, dtype=np.int64)[:, None]
    k = np.asarray(slot_pos, dtype=np.int64)[None, :]
    if slot_frame:  # assumes slot s holds position start + s, the view laid out in position order
        k = (int(k.max()) - k.shape[1] + 1) + np.arange(k.shape[1], dtype=np.int64)[None, :]
    if slot_index_as_position:  # a mask made over absolute positions, read by view slot index
        k = np.arange(k.shape[1], dtype=np.int64)[None, :]
    allowed = np.ones((q.shape[0], k.shape[1]), bool) if empty_slots_visible else (k >= 0)
    if causal:
        allowed = allowed & (k <= q)
    if window is not None:
        allowed = allowed & (((q - k) <= window) if window_inclusive else ((q - k) < window))
    return allowed


mutant("attention_mask", "ring_slot_coordinates", "builds the mask in ring-slot index coordinates instead of "
       "from each slot's stored position", attention_mask, slot_frame=True)
mutant("attention_mask", "absolute_mask_read_by_slot", "builds the mask over absolute KV positions and reads "
       "column s for view slot s (shifted by the ring's start after wrap-around)", attention_mask,
       slot_index_as_position=True)
mutant("attention_mask", "window_off_by_one", "lets a query see window + 1 keys (q - k <= window)", attention_mask,
       window_inclusive=True)
mutant("attention_mask", "empty_slots_visible", "attends to empty slots (position -1)", attention_mask,
       empty_slots_visible=True)
mutant("attention_mask", "not_causal", "forgets k <= q", attention_mask, causal=False)


@copy_of("attention")
def attention(q, k, v, mask, *, scale, softcap=None, sinks=None, softcap_after_mask=False, use_softcap=True,
              use_sinks=True, kv_head_modulo=False, default_scale=False, guard_empty_rows=True, subtract_max=True,
              masked_value=-np.inf):
    q, k, v = (np.asarray(a, dtype=F32) for a in (q, k, v))
    t, hq, d = q.shape
    hkv = k.shape[1]
    g = hq // hkv
    kv_of = (np.arange(hq) % hkv) if kv_head_modulo else (np.arange(hq) // g)
    scores = np.einsum("thd,shd->hts", q, k[:, kv_of]) * F32(d ** -0.5 if default_scale else scale)
    cap = F32(softcap) if (softcap is not None and use_softcap) else None
    if cap is not None and not softcap_after_mask:
        scores = cap * np.tanh(scores / cap)
    scores = np.where(np.asarray(mask, bool)[None], scores, F32(masked_value))
    if cap is not None and softcap_after_mask:
        scores = cap * np.tanh(scores / cap)
    row_max = scores.max(axis=-1)  # [Hq, T]
    sink = None if (sinks is None or not use_sinks) else np.asarray(sinks, F32)[:, None]
    if sink is not None:
        row_max = np.maximum(row_max, sink)
    if guard_empty_rows:
        row_max = np.where(np.isfinite(row_max), row_max, F32(0.0))
    if not subtract_max:
        row_max = np.zeros_like(row_max)
    with np.errstate(invalid="ignore", over="ignore"):
        p = np.exp(scores - row_max[..., None])
        denom = p.sum(axis=-1, dtype=F32) + (np.exp(sink - row_max) if sink is not None else F32(0.0))
        if guard_empty_rows:
            denom = np.where(denom > 0, denom, F32(1.0))
        out = np.einsum("hts,shd->thd", p, v[:, kv_of]) / denom.T[..., None]
    return out.astype(F32)


mutant("attention", "softcap_after_mask", "soft-caps after masking, so masked -inf scores become -cap and count",
       attention, softcap_after_mask=True)
mutant("attention", "softcap_ignored", "never applies the logit softcap", attention, use_softcap=False)
mutant("attention", "sinks_ignored", "drops the sink logits from the softmax denominator", attention,
       use_sinks=False)
mutant("attention", "gqa_head_modulo", "maps query head h to KV head h % Hkv instead of h // (Hq / Hkv)",
       attention, kv_head_modulo=True)
mutant("attention", "scale_ignored", "always scales by 1 / sqrt(D), ignoring the scale argument", attention,
       default_scale=True)
mutant("attention", "no_max_subtraction", "exponentiates raw scores (no row max subtracted): overflow to inf / "
       "NaN for large scores", attention, subtract_max=False)
mutant("attention", "additive_finite_mask", "masks with a finite -1e9 instead of -inf (a row with no allowed key "
       "then averages every value)", attention, masked_value=-1e9)
mutant("attention", "empty_row_nan", "returns NaN for a row with no allowed key (no guard)", attention,
       guard_empty_rows=False)


# ---- activations -----------------------------------------------------------------------------------------------
def _silu(x, *, stable=True):
    x = np.asarray(x, dtype=F32)
    with np.errstate(over="ignore", invalid="ignore"):
        if stable:
            return x / (F32(1.0) + np.exp(-x))
        e = np.exp(x)
        return x * e / (F32(1.0) + e)


def _gelu(x, *, erf=False):
    x = np.asarray(x, dtype=F32)
    if erf:
        return (0.5 * x * (1.0 + np.vectorize(math.erf)(x.astype(np.float64) / math.sqrt(2.0)))).astype(F32)
    inner = F32(math.sqrt(2.0 / math.pi)) * (x + F32(0.044715) * x * x * x)
    with np.errstate(over="ignore"):
        return x / (F32(1.0) + np.exp(F32(-2.0) * inner))


copy_of("silu")(_silu)
copy_of("gelu_tanh")(_gelu)
mutant("silu", "overflowing_form", "evaluates x e^x / (1 + e^x): NaN once e^x overflows", _silu, stable=False)
mutant("gelu_tanh", "erf_gelu", "uses the exact erf GELU where the tanh approximation is specified", _gelu,
       erf=True)


@copy_of("swiglu")
def swiglu(gate, up, *, swapped=False):
    gate, up = (up, gate) if swapped else (gate, up)
    return _silu(gate) * np.asarray(up, dtype=F32)


@copy_of("geglu_tanh")
def geglu_tanh(gate, up, *, erf=False):
    return _gelu(gate, erf=erf) * np.asarray(up, dtype=F32)


mutant("swiglu", "gate_up_swapped", "applies silu to up and multiplies by gate", swiglu, swapped=True)
mutant("geglu_tanh", "erf_gelu", "uses the erf GELU inside GeGLU", geglu_tanh, erf=True)


@copy_of("swiglu_oai")
def swiglu_oai(gate, up, *, alpha=1.702, limit=7.0, clamp_sides_swapped=False, use_alpha=True, up_plus_one=True):
    gate, up = np.asarray(gate, dtype=F32), np.asarray(up, dtype=F32)
    if clamp_sides_swapped:  # both sides on the gate, only the top on up
        g, u = np.clip(gate, F32(-limit), F32(limit)), np.minimum(up, F32(limit))
    else:
        g, u = np.minimum(gate, F32(limit)), np.clip(up, F32(-limit), F32(limit))
    a = F32(alpha if use_alpha else 1.0)
    return (u + F32(1.0 if up_plus_one else 0.0)) * (g * _sigmoid(a * g))


mutant("swiglu_oai", "clamp_sides_swapped", "clamps the gate on both sides and up only from above", swiglu_oai,
       clamp_sides_swapped=True)
mutant("swiglu_oai", "alpha_ignored", "uses sigmoid(g) instead of sigmoid(alpha g)", swiglu_oai, use_alpha=False)
mutant("swiglu_oai", "up_plus_one_forgotten", "multiplies by u instead of (u + 1)", swiglu_oai, up_plus_one=False)


@copy_of("softcap")
def softcap(x, *, cap, as_clip=False):
    x = np.asarray(x, dtype=F32)
    return np.clip(x, F32(-cap), F32(cap)) if as_clip else F32(cap) * np.tanh(x / F32(cap))


mutant("softcap", "hard_clip", "clips at +-cap instead of cap * tanh(x / cap)", softcap, as_clip=True)
