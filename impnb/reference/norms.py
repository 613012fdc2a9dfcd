"""RMSNorm: the reference for impnb/cuda/norms.py.

Dimensions: ... = any leading dims (tokens, heads), D = normalized width.

    rms_norm(x, w)[..., i] = x[..., i] / sqrt(mean_j x[..., j]^2 + eps) * (offset + w[i])

``offset`` is 0 for Llama/Qwen/gpt-oss/Gemma-4 and 1 for Gemma-1/2/3 as HF stores them (weights initialised to 0,
``Gemma3RMSNorm``: ``x * rsqrt(mean(x^2) + eps) * (1 + w)``). ``weight=None`` is the weightless norm (Gemma-4 v_norm,
router input norm). QK-norm over chunks of norm_dim < head_dim: reshape to [..., head_dim // norm_dim, norm_dim]
first (the model does that). Arithmetic in float32 like transformers (x.float()); the mean uses NumPy's pairwise
summation.
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
