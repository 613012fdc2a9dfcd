"""RMSNorm, gated RMSNorm and L2 norm: the reference for impnb/cuda/norms.py.

Dimensions: ... = any leading dims (tokens, heads), D = normalized width.

    rms_norm(x, w)[..., i] = x[..., i] / sqrt(mean_j x[..., j]^2 + eps) * (offset + w[i])
    gated_rms_norm(x, z, w)[..., i] = x[..., i] / sqrt(mean_j x[..., j]^2 + eps) * w[i] * silu(z[..., i])
    l2_norm(x)[..., i]     = x[..., i] / sqrt(sum_j x[..., j]^2 + eps)

``offset`` is 0 for Llama/Qwen/gpt-oss/Gemma-4 and 1 for Gemma-1/2/3 as HF stores them (weights initialised to 0,
``Gemma3RMSNorm``: ``x * rsqrt(mean(x^2) + eps) * (1 + w)``). ``weight=None`` is the weightless norm (Gemma-4 v_norm,
router input norm). QK-norm over chunks of norm_dim < head_dim: reshape to [..., head_dim // norm_dim, norm_dim]
first (the model does that). Arithmetic in float32 like transformers (x.float()); the mean uses NumPy's pairwise
summation. ``offset = 1`` is also the zero-centred weight of Qwen3-Next / Qwen3.5 (``Qwen3NextRMSNorm``: weights
initialised to 0, ``(1 + w)``); their gated norm (``Qwen3NextRMSNormGated``, the linear-attention output norm)
keeps a plain weight (initialised to 1). The L2 norm is the q / k normalisation of the gated delta rule
(transformers' ``l2norm``, flash-linear-attention's ``use_qk_l2norm_in_kernel``).
"""
from __future__ import annotations

import numpy as np


def rms_norm(x, weight, *, eps, offset=0.0):
    """RMSNorm over the last axis: x / sqrt(mean(x^2) + eps) * (offset + weight); weight None -> no scale.

    x: float32 [..., D]; weight: float32 [D] or None. Returns float32 [..., D].
    """
    x = np.asarray(x, dtype=np.float32)
    ms = np.mean(np.square(x), axis=-1, keepdims=True, dtype=np.float32)
    out = x * (np.float32(1.0) / np.sqrt(ms + np.float32(eps)))
    if weight is not None:
        w = np.asarray(weight, dtype=np.float32)
        out *= (w + np.float32(offset)) if offset else w
    return out


def rms_norm_add(x, t, weight, *, eps, offset=0.0):
    """Sandwich post-norm added to the residual stream (Gemma's post-attention / post-FFN norms):

        out = x + rms_norm(t, weight; eps, offset)

    x, t float32 [..., D]; weight [D]. Returns float32 [..., D]."""
    return np.asarray(x, dtype=np.float32) + rms_norm(t, weight, eps=eps, offset=offset)


def gated_rms_norm(x, gate, weight, *, eps):
    """Gated RMSNorm: x / sqrt(mean(x^2) + eps) * weight * silu(gate), over the last axis (norm before gate).

    x, gate: float32 [..., D]; weight: float32 [D]. Returns float32 [..., D]. transformers'
    Qwen3NextRMSNormGated in float32: the normalised x times the weight, then times silu(gate).
    """
    from .activations import silu
    x, gate = np.asarray(x, dtype=np.float32), np.asarray(gate, dtype=np.float32)
    if gate.shape != x.shape:
        raise ValueError(f"gated_rms_norm: gate shape {gate.shape} differs from x shape {x.shape}")
    return rms_norm(x, weight, eps=eps) * silu(gate)


def l2_norm(x, *, eps=1e-6):
    """L2 normalisation over the last axis: x * (1 / sqrt(sum(x^2) + eps)), float32.

    x: float32 [..., D]. Returns float32 [..., D]. The eps sits inside the square root (transformers' ``l2norm``).
    """
    x = np.asarray(x, dtype=np.float32)
    ss = np.sum(np.square(x), axis=-1, keepdims=True, dtype=np.float32)
    return x * (np.float32(1.0) / np.sqrt(ss + np.float32(eps)))
