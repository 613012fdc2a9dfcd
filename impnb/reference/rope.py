"""Rotary position embedding: the reference for impnb/cuda/rope.py, plus the inv_freq formulas (a helper, not an op).

Dimensions: T = tokens, H = heads, D = head_dim, R = rotary_dim (<= D), F = R / 2 frequencies.

    angle[t, f] = float32(pos[t]) * inv_freq[f]                      (float32 product, as transformers)
    neox style (HF rotate_half; pairs (i, i + R/2)), for i < R/2:
        y[i]       = x[i] cos(angle_i) - x[i + R/2] sin(angle_i)
        y[i + R/2] = x[i + R/2] cos(angle_i) + x[i] sin(angle_i)
    interleaved style (GPT-J / llama.cpp "norm"; pairs (2i, 2i + 1)):
        y[2i] = x[2i] cos - x[2i+1] sin,  y[2i+1] = x[2i+1] cos + x[2i] sin
    dimensions R..D-1 pass through unchanged (partial rotary); cos and sin are multiplied by attention_scaling
    (YaRN's mscale; 1 otherwise).

inv_freq (``rope_inv_freq``; transformers modeling_rope_utils.py): with d = R,
    default:      inv_freq[f] = theta ** (-2f / d)
    linear:       default / factor
    llama3:       per wavelength 2 pi / inv_freq: > orig/low_freq_factor -> / factor; < orig/high_freq_factor ->
                  kept; between -> (1 - s) inv / factor + s inv, s = (orig / wavelen - low) / (high - low)
    yarn:         blend of inv and inv / factor with a linear ramp over [low, high] correction dims;
                  attention_scaling = 0.1 ln(factor) + 1 (or the mscale ratio, or attention_factor)
    proportional: (Gemma-4 full layers) the first int(p * D // 2) frequencies are theta ** (-2f / D) (note: / D,
                  the whole head), the rest are 0 (cos 1, sin 0), then / factor; the rotation spans all of D.
    freq_factors: (llama.cpp rope_freqs) inv_freq /= freq_factors afterwards.
Computed in float64 and rounded once to float32 (transformers computes them in float32; <= 1 ulp apart).
"""
from __future__ import annotations

import math

import numpy as np


def rope(x, positions, inv_freq, *, style="neox", attention_scaling=1.0):
    """Rotate x [T, H, D] at integer positions [T] with inv_freq [F] (rotary_dim R = 2F <= D): float32 [T, H, D]."""
    x = np.asarray(x, dtype=np.float32)
    inv_freq = np.asarray(inv_freq, dtype=np.float32)
    rot = 2 * inv_freq.shape[0]
    if rot > x.shape[-1]:
        raise ValueError(f"rope: {inv_freq.shape[0]} frequencies need rotary_dim {rot} > head_dim {x.shape[-1]}")
    angle = np.asarray(positions).astype(np.float32)[:, None] * inv_freq[None, :]  # [T, F]
    cos = (np.cos(angle) * np.float32(attention_scaling)).astype(np.float32)[:, None, :]  # [T, 1, F]
    sin = (np.sin(angle) * np.float32(attention_scaling)).astype(np.float32)[:, None, :]
    out = x.copy()
    if style == "neox":
        half = rot // 2
        a, b = x[..., :half], x[..., half:rot]
        out[..., :half] = a * cos - b * sin
        out[..., half:rot] = b * cos + a * sin
    elif style == "interleaved":
        a, b = x[..., 0:rot:2], x[..., 1:rot:2]
        out[..., 0:rot:2] = a * cos - b * sin
        out[..., 1:rot:2] = b * cos + a * sin
    else:
        raise ValueError(f"rope style {style!r}; expected 'neox' or 'interleaved'")
    return out


def rope_inv_freq(rope_cfg, head_dim: int, max_position_embeddings: int | None = None):
    """(inv_freq float32 [F], attention_scaling float) for an impnb.config.RopeConfig at this head_dim.
    Parameters outside their range (a base or factor that is not finite and > 0, a partial factor outside
    (0, 1], a non-positive original context) raise ValueError: each would make the frequencies inf or NaN."""
    _check_range(rope_cfg, head_dim, max_position_embeddings)
    kind = rope_cfg.kind
    if kind == "proportional":
        inv = _proportional(rope_cfg, head_dim)
        scaling = 1.0
    else:
        dim = int(head_dim * rope_cfg.partial_rotary_factor)
        inv = 1.0 / rope_cfg.theta ** (np.arange(0, dim, 2, dtype=np.float64) / dim)
        scaling = 1.0
        if kind == "linear":
            inv = inv / rope_cfg.factor
        elif kind == "llama3":
            inv = _llama3(rope_cfg, inv, max_position_embeddings)
        elif kind == "yarn":
            inv, scaling = _yarn(rope_cfg, dim, max_position_embeddings)
    if rope_cfg.freq_factors is not None:
        factors = np.asarray(rope_cfg.freq_factors, dtype=np.float64)
        if factors.shape != inv.shape:
            raise ValueError(f"rope freq_factors has {factors.shape[0]} entries for {inv.shape[0]} frequencies")
        inv = inv / factors
    return inv.astype(np.float32), float(scaling)


def _check_range(cfg, head_dim, max_pos) -> None:
    if isinstance(head_dim, bool) or not isinstance(head_dim, (int, np.integer)) or head_dim < 2:
        raise ValueError(f"rope: head_dim must be an integer >= 2, got {head_dim!r}")
    for name in ("theta", "factor"):
        value = getattr(cfg, name)
        if not (isinstance(value, (int, float, np.number)) and math.isfinite(value) and value > 0):
            raise ValueError(f"rope: {name} must be a finite number > 0, got {value!r}")
    if not 0 < cfg.partial_rotary_factor <= 1:
        raise ValueError(f"rope: partial_rotary_factor must lie in (0, 1], got {cfg.partial_rotary_factor!r}")
    orig = cfg.original_max_position_embeddings or max_pos
    if cfg.kind in ("llama3", "yarn") and not (orig and orig > 0):
        raise ValueError(f"rope {cfg.kind}: the original context must be > 0, got {orig!r}")


def _proportional(cfg, head_dim):
    angles = int(cfg.partial_rotary_factor * head_dim // 2)
    rotated = 1.0 / cfg.theta ** (np.arange(0, 2 * angles, 2, dtype=np.float64) / head_dim)
    inv = np.concatenate([rotated, np.zeros(head_dim // 2 - angles)])
    return inv / cfg.factor


def _llama3(cfg, inv, max_pos):
    orig = cfg.original_max_position_embeddings or max_pos
    low_wavelen = orig / cfg.low_freq_factor
    high_wavelen = orig / cfg.high_freq_factor
    wavelen = 2 * math.pi / inv
    scaled = np.where(wavelen > low_wavelen, inv / cfg.factor, inv)
    smooth = (orig / wavelen - cfg.low_freq_factor) / (cfg.high_freq_factor - cfg.low_freq_factor)
    smoothed = (1 - smooth) * scaled / cfg.factor + smooth * scaled
    medium = ~(wavelen < high_wavelen) & ~(wavelen > low_wavelen)
    return np.where(medium, smoothed, scaled)


def _yarn(cfg, dim, max_pos):
    base, factor = cfg.theta, cfg.factor
    orig = cfg.original_max_position_embeddings or max_pos

    def mscale(scale, m=1.0):
        return 1.0 if scale <= 1 else 0.1 * m * math.log(scale) + 1.0

    if cfg.attention_factor is not None:
        scaling = cfg.attention_factor
    elif cfg.mscale and cfg.mscale_all_dim:
        scaling = mscale(factor, cfg.mscale) / mscale(factor, cfg.mscale_all_dim)
    else:
        scaling = mscale(factor)

    def correction_dim(rotations):
        return dim * math.log(orig / (rotations * 2 * math.pi)) / (2 * math.log(base))

    low, high = correction_dim(cfg.beta_fast), correction_dim(cfg.beta_slow)
    if cfg.truncate:
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, dim - 1)
    if low == high:
        high += 0.001
    ramp = np.clip((np.arange(dim // 2, dtype=np.float64) - low) / (high - low), 0, 1)
    pos_freqs = base ** (np.arange(0, dim, 2, dtype=np.float64) / dim)
    extrapolation_weight = 1 - ramp
    inv = (1.0 / (factor * pos_freqs)) * (1 - extrapolation_weight) + (1.0 / pos_freqs) * extrapolation_weight
    return inv, scaling


def qkv_rope_append(qkv, k_cache, v_cache, slot_pos, positions, inv_freq, *, n_heads, q_norm=None, k_norm=None,
                    v_norm=False, k_eq_v=False, eps=1e-6, offset=0.0, style="neox", attention_scaling=1.0):
    """Split a fused q|k|v projection, QK-norm it, rotate q and k, and append k, v to a layer's KV cache slots.

    qkv [T, (Hq + 2 Hkv) D] (k_eq_v: [T, (Hq + Hkv) D], v is the raw k); caches [C, Hkv, D], slot_pos int [C]
    (the absolute position each slot holds, -1 empty); positions int [T]. With slot = position mod C:
        q = rope(rms_norm(q, q_norm) if q_norm else q)
        k_cache[slot] = rope(rms_norm(k, k_norm) if k_norm else k)
        v_cache[slot] = rms_norm(v, None; offset 0) if v_norm else v       (v taken before k's norm and RoPE)
        slot_pos[slot] = position
    Norm weights of length nd < D normalise each chunk of nd (QK-norm over chunks). rope: impnb.reference.rope
    with inv_freq [F], ``style`` and ``attention_scaling``. Returns new arrays (q float32 [T, Hq, D], k_cache,
    v_cache, slot_pos); the inputs are not modified."""
    from .norms import rms_norm
    qkv = np.asarray(qkv, dtype=np.float32)
    t = qkv.shape[0]
    c, hkv, d = np.shape(k_cache)
    positions = np.asarray(positions, dtype=np.int64)
    q = qkv[:, :n_heads * d].reshape(t, n_heads, d)
    k = qkv[:, n_heads * d:(n_heads + hkv) * d].reshape(t, hkv, d)
    v = k if k_eq_v else qkv[:, (n_heads + hkv) * d:(n_heads + 2 * hkv) * d].reshape(t, hkv, d)
    if v_norm:
        v = rms_norm(v, None, eps=eps, offset=0.0)
    rot = dict(style=style, attention_scaling=attention_scaling)
    q = rope(_chunk_norm(q, q_norm, eps, offset), positions, inv_freq, **rot)
    k = rope(_chunk_norm(k, k_norm, eps, offset), positions, inv_freq, **rot)
    k_out, v_out = np.array(k_cache, dtype=np.float32), np.array(v_cache, dtype=np.float32)
    pos_out = np.array(slot_pos)
    slots = positions % c
    k_out[slots], v_out[slots], pos_out[slots] = k, v, positions
    return q, k_out, v_out, pos_out


def _chunk_norm(x, weight, eps, offset):
    """rms_norm over each chunk of len(weight) of the head dim (the whole head when len(weight) == D)."""
    if weight is None:
        return x
    from .norms import rms_norm
    t, heads, d = x.shape
    nd = np.shape(weight)[0]
    return rms_norm(x.reshape(t, heads, d // nd, nd), weight, eps=eps, offset=offset).reshape(t, heads, d)


def rms_norm_qkv_rope_append(x, norm_weight, weight, k_cache, v_cache, slot_pos, positions, inv_freq, *, n_heads,
                             bias=None, eps, offset=0.0, style="neox", attention_scaling=1.0):
    """The q|k|v projection of a normed input with RoPE and the KV append fused (layers without QK-norm):

        qkv_rope_append(rms_norm_linear(x, norm_weight, W, bias; eps, offset), k_cache, v_cache, slot_pos,
                        positions, inv_freq; n_heads, style, attention_scaling)

    x [T, H]; W [(Hq + 2 Hkv) D, H] float32 or NVFP4Tensor. Returns (q [T, Hq, D], k_cache, v_cache, slot_pos)."""
    from .linear import rms_norm_linear
    qkv = rms_norm_linear(x, norm_weight, weight, bias, eps=eps, offset=offset)
    return qkv_rope_append(qkv, k_cache, v_cache, slot_pos, positions, inv_freq, n_heads=n_heads, style=style,
                           attention_scaling=attention_scaling)
