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
