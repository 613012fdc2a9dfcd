"""Activations, CUDA path (same signatures as impnb/reference/activations.py): CuPy elementwise kernels in float32,
and gated_activation on kernels/activations.cu (the engine's prefill MLP activation, ``gated_act_rows``).

Elementwise, any shape. CUDA's expf / tanhf are within 1-2 ulp of NumPy's float32 exp / tanh (tolerance table).
GPU only (CuPy), except sigmoid_gate: a Numba kernel (one thread per element, the gate broadcast into a buffer of
x's shape first) that also runs in the CUDA simulator.
"""
from __future__ import annotations

import math

import numpy as np
from numba import cuda

from . import _alloc
from ._outputs import guarded
from ._common import kernel_float32
from ._launch import gpu_only, launch_numba, require_gpu, xp

_GELU_C = 0.7978845608028654  # sqrt(2 / pi)


def _f32(x):
    import cupy as cp
    return cp.asarray(x, dtype=cp.float32)


def _sigmoid(x):
    import cupy as cp
    e = cp.exp(-cp.abs(x))
    return cp.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e)).astype(cp.float32)


@gpu_only
def silu(x):
    """silu(x) = x * sigmoid(x), elementwise, float32."""
    require_gpu("silu")
    x = _f32(x)
    return guarded(x * _sigmoid(x), "silu")


@gpu_only
def gelu_tanh(x):
    """gelu_tanh(x) = 0.5 * x * (1 + tanh(sqrt(2/pi) * (x + 0.044715 * x^3))), elementwise, float32."""
    require_gpu("gelu_tanh")
    import cupy as cp
    x = _f32(x)
    inner = cp.float32(_GELU_C) * (x + cp.float32(0.044715) * x * x * x)
    # tanh rounded from float64: CUDA's tanhf (2 ulp) saturates to -1 earlier than NumPy's float32 tanh, and
    # 1 + tanh cancels there (x < -3), so its ulps become absolute errors of ~1e-6 in gelu
    t = cp.tanh(inner.astype(cp.float64)).astype(cp.float32)
    return guarded(cp.float32(0.5) * x * (cp.float32(1.0) + t), "gelu_tanh")


@gpu_only
def swiglu(gate, up):
    """SwiGLU: silu(gate) * up, elementwise over equal shapes, float32."""
    return guarded(silu(gate) * _f32(up), "swiglu")


@gpu_only
def geglu_tanh(gate, up):
    """GeGLU with the tanh GELU: gelu_tanh(gate) * up, elementwise over equal shapes, float32."""
    return guarded(gelu_tanh(gate) * _f32(up), "geglu_tanh")


@gpu_only
def swiglu_oai(gate, up, *, alpha=1.702, limit=7.0):
    """gpt-oss clamped SwiGLU: g = min(gate, limit); u = clip(up, -limit, limit); (u + 1) * g * sigmoid(alpha * g)."""
    require_gpu("swiglu_oai")
    import cupy as cp
    g = cp.minimum(_f32(gate), cp.float32(limit))
    u = cp.clip(_f32(up), cp.float32(-limit), cp.float32(limit))
    return guarded((u + cp.float32(1.0)) * (g * _sigmoid(cp.float32(alpha) * g)), "swiglu_oai")


@gpu_only
def softcap(x, *, cap):
    """Logit soft-capping: cap * tanh(x / cap), elementwise, float32."""
    require_gpu("softcap")
    import cupy as cp
    x = _f32(x)
    return guarded(cp.float32(cap) * cp.tanh(x / cp.float32(cap)), "softcap")


# ---- the engine's prefill activation (kernels/activations.cu) --------------------------------------------------
def gated_act_rows(gate_up, rows: int, width: int, activation: str, out) -> None:
    """out [rows, I] = act(gate) * up for gate_up [rows, 2I] (act: silu or gelu_tanh, tanhf form)."""
    from ._kernels import ACTS
    from ._launch import launch_raw, sm_count
    total = rows * width
    if total:
        launch_raw("activations.cu", "gated_act_rows", (min(-(-total // 256), 16 * sm_count()),), (256,),
                   (gate_up, rows, width, 0 if ACTS[activation] == ACTS["silu"] else 1, out))


@gpu_only
def gated_activation(gate_up, *, activation="silu", alpha=1.702, limit=7.0):
    """act(gate) * up of gate_up [..., 2I] -> float32 [..., I]: silu / gelu_tanh on the engine's kernel,
    swiglu_oai as CuPy expressions (the clamped form has no kernel)."""
    require_gpu("gated_activation")
    import cupy as cp
    import numpy as np
    from . import _alloc
    gu = cp.ascontiguousarray(_f32(gate_up))
    width = gu.shape[-1] // 2
    if activation == "swiglu_oai":
        return swiglu_oai(gu[..., :width], gu[..., width:], alpha=alpha, limit=limit)
    if activation not in ("silu", "gelu_tanh"):
        raise ValueError(f"gated_activation: activation {activation!r}; expected silu, gelu_tanh or swiglu_oai")
    out = _alloc.empty(gu.shape[:-1] + (width,), np.float32, label="gated_activation")
    gated_act_rows(gu, int(np.prod(gu.shape[:-1], dtype=np.int64)), width, activation, out)
    return out


@cuda.jit
def _sigmoid_gate_kernel(x, gate, out, n):
    i = cuda.grid(1)
    if i < n:
        out[i] = x[i] * (np.float32(1.0) / (np.float32(1.0) + math.exp(-gate[i])))


def sigmoid_gate(x, gate):
    """Output gate: x * sigmoid(gate), float32; ``gate`` broadcasts to x's shape."""
    x = kernel_float32(x)
    gate = xp().asarray(gate, dtype=np.float32)
    if np.broadcast_shapes(x.shape, gate.shape) != x.shape:
        raise ValueError(f"sigmoid_gate: gate shape {gate.shape} does not broadcast to x shape {x.shape}")
    full = _alloc.empty(x.shape, np.float32, label="sigmoid_gate gate")
    full[...] = gate
    out = _alloc.empty(x.shape, np.float32, label="sigmoid_gate")
    launch_numba(_sigmoid_gate_kernel, x.size, x.reshape(-1), full.reshape(-1), out.reshape(-1), x.size)
    return out
