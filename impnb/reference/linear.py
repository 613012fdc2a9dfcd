"""Dense linear layer on float32 weights: the reference for impnb/cuda/linear.py.

Dimensions: T = tokens, K = input features, N = output features.
    linear(x, W, b)[t, n] = sum_k x[t, k] * W[n, k] + b[n]
W is stored [N, K] (PyTorch nn.Linear orientation). float32 in and out; the product is one BLAS sgemm
(x @ W.T reads W transposed without a copy). NVFP4 weights go through nvfp4_gemm instead.
"""
from __future__ import annotations

import numpy as np


def linear(x, weight, bias=None):
    """x [..., K] @ weight[N, K].T (+ bias [N]) -> float32 [..., N]."""
    x = np.asarray(x, dtype=np.float32)
    if x.shape[-1] != weight.shape[1]:
        raise ValueError(f"linear: x has {x.shape[-1]} features, weight expects {weight.shape[1]} (shape {weight.shape})")
    out = x @ weight.T
    if bias is not None:
        out += bias
    return out


def dense_weight(weight) -> np.ndarray:
    """A weight as float32 [N, K]: an NVFP4Tensor dequantized exactly (nvfp4_dequantize), an array widened."""
    from ..formats import NVFP4Tensor
    if isinstance(weight, NVFP4Tensor):
        from .nvfp4 import nvfp4_dequantize
        return nvfp4_dequantize(weight)
    return np.asarray(weight, dtype=np.float32)


def rms_norm_linear(x, norm_weight, weight, bias=None, *, eps, offset=0.0, softcap=None):
    """The linear of a normed input (the engine's q|k|v, gate|up, router and LM-head GEMVs):

        y = linear(rms_norm(x, norm_weight; eps, offset), W, b);  y = softcap(y; cap) when ``softcap``

    x [..., K] float32; W [N, K] float32 or NVFP4Tensor (dequantized exactly first). Returns float32 [..., N]."""
    from .activations import softcap as cap
    from .norms import rms_norm
    y = linear(rms_norm(x, norm_weight, eps=eps, offset=offset), dense_weight(weight), bias)
    return cap(y, cap=softcap) if softcap else y


def gated_linear(gate_up, weight, bias=None, *, activation="silu", residual=None):
    """The down projection of a gated MLP with the activation in its input stage (the engine's down GEMV):

        y = linear(gated_activation(gate_up; activation), W, b)  (+ residual)

    gate_up [..., 2I] = [gate | up]; W [N, I] float32 or NVFP4Tensor; residual [..., N] or None. float32 [..., N]."""
    from .activations import gated_activation
    y = linear(gated_activation(gate_up, activation=activation), dense_weight(weight), bias)
    return y if residual is None else np.asarray(residual, dtype=np.float32) + y
