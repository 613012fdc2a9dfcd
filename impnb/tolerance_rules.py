"""The rule kinds of impnb's tolerance table (impnb/tolerances.py) and the magnitude ("scale") functions that
ScaledError rules multiply their bound by.

  * Exact            -- bit-identical (NaN matches NaN with the same bits); codecs, packing, masks, top-k ids.
  * AllClose         -- |fast - ref| <= atol + rtol * |ref| elementwise.
  * ScaledError      -- |fast - ref| <= bound * scale, where ``scale`` is an op-supplied magnitude per element
                        (e.g. |W| @ |x| for a GEMV: the accumulated magnitude that fp32 rounding errors scale with).
Every scale function states its formula (``@scale_formula``), in the op's parameter names: golden/ writes it into
the vectors' manifests so that a C or C++ harness knows what the precomputed bound files mean.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np


@dataclass(frozen=True)
class Exact:
    why: str

    def __str__(self):
        return "Exact"


@dataclass(frozen=True)
class AllClose:
    atol: float
    rtol: float
    why: str

    def __str__(self):
        return f"AllClose(atol={self.atol:g}, rtol={self.rtol:g})"


@dataclass(frozen=True)
class ScaledError:
    bound: float
    scale: Callable  # scale(args, kwargs) -> array broadcastable to the output; made by @scale_formula
    why: str

    def __post_init__(self):
        if not str(getattr(self.scale, "formula", "")).strip():
            raise TypeError("ScaledError: its scale function must state its formula (decorate it with "
                            "@scale_formula(...)), so that readers without Python can compute the bound")

    @property
    def formula(self) -> str:
        """What ``bound`` multiplies, stated over the reference's parameter names (golden/'s manifests carry it)."""
        return self.scale.formula

    def __str__(self):
        return f"ScaledError(bound={self.bound:g})"


def scale_formula(text: str):
    """Attach ``text``, the scale's formula in words and the op's parameter names, to a scale function."""
    def attach(fn):
        fn.formula = text
        return fn
    return attach


# ---- scale functions of ScaledError rules ----------------------------------------------------------------------
FP32_UNIT_ROUNDOFF = 2.0 ** -24


def _gamma_fp32(n: int) -> float:
    """Higham's gamma_n = n u / (1 - n u), u = 2^-24: the relative error bound of an n-step float32 computation."""
    return n * FP32_UNIT_ROUNDOFF / (1.0 - n * FP32_UNIT_ROUNDOFF)


def _gamma_fp32_probabilistic(n: int, lam: float = 8.0) -> float:
    """Higham & Mary (SIAM J. Sci. Comput. 41(5), 2019), thm 4.6: an n-term float32 dot product errs by at most
    exp(lam sqrt(n) u + n u^2 / (1 - u)) - 1 times sum |x_i y_i| with probability >= 1 - 2n exp(-lam^2 / 2)
    (rounding errors modelled as independent and mean-zero); lam = 8 gives 1 - 1e-10 per output at n = 4096."""
    u = FP32_UNIT_ROUNDOFF
    return float(np.expm1(lam * np.sqrt(n) * u + n * u * u / (1.0 - u)))


@scale_formula("gamma(K + 2) * sum_k |x[..., k]| |W[n, k]|, W = nvfp4_dequantize(t) [N, K] (K logical), "
               "gamma(n) = expm1(8 sqrt(n) u + n u^2 / (1 - u)), u = 2^-24 (Higham-Mary probabilistic bound of an "
               "n-term float32 dot product)")
def _nvfp4_abs_dot(args, kwargs):
    """gamma~_{K+2}(8) * (|X| @ |W|.T) in float64, shaped like the output ([N] for a GEMV, [M, N] for a GEMM)."""
    from .reference.nvfp4 import nvfp4_dequantize
    t, x = args[0], np.asarray(args[1], dtype=np.float64)
    w = np.abs(nvfp4_dequantize(t).astype(np.float64))  # [N, K]
    return _gamma_fp32_probabilistic(t.shape[1] + 2) * (np.abs(x) @ w.T)


@scale_formula("max_j |reference[..., j]|: the largest reference logit of the row")
def _row_max_abs(args, kwargs):
    """max |logit| of each row [..., 1] of the reference logits args[0] (whole-model logits: the scale their
    float32 errors grow with)."""
    r = np.abs(np.asarray(args[0], dtype=np.float64))
    return np.max(r, axis=-1, keepdims=True) if r.ndim else r


@scale_formula("sum_k |x[..., k]| |weight[n, k]| + |bias[n]| (the bias term where a bias is given)")
def _abs_linear(args, kwargs):
    """Magnitude scale of linear(x, W, b): |x| @ |W|.T (+ |b|), the sum that float32 rounding errors scale with."""
    x, w = np.abs(np.asarray(args[0], np.float64)), np.abs(np.asarray(args[1], np.float64))
    scale = x @ w.T
    bias = args[2] if len(args) > 2 else kwargs.get("bias")
    if bias is not None:
        scale = scale + np.abs(np.asarray(bias, np.float64))
    return scale


@scale_formula("sum_k |xn[..., k]| |W[n, k]| + |bias[n]|, xn = rms_norm(x, norm_weight; eps, offset) (its "
               "float32 value), W = weight (nvfp4_dequantize(weight) for an NVFP4 weight)")
def _abs_norm_linear(args, kwargs):
    """|rms_norm(x)| @ |W|.T (+ |b|) in float64 for rms_norm_linear(x, norm_weight, W, bias; eps, offset)."""
    from .reference.linear import dense_weight
    from .reference.norms import rms_norm
    x, norm_w, w = args[0], args[1], args[2]
    xn = rms_norm(x, norm_w, eps=kwargs["eps"], offset=kwargs.get("offset", 0.0))
    bias = args[3] if len(args) > 3 else kwargs.get("bias")
    return _abs_linear((xn, dense_weight(w), bias), {})


@scale_formula("3e-5 * sum_i |a[..., i]| |W[n, i]| + 1e-6 * sum_i |gate[..., i]| |up[..., i]| |W[n, i]| + 3e-5 "
               "|bias[n]| + 1e-6 |residual[..., n]|, a = gated_activation(gate_up; activation), gate = "
               "gate_up[..., :I], up = gate_up[..., I:], W = weight (dequantized if NVFP4)")
def _gated_linear_scale(args, kwargs):
    from .reference.activations import gated_activation
    from .reference.linear import dense_weight
    gu = np.asarray(args[0], np.float64)
    w = np.abs(dense_weight(args[1]).astype(np.float64))
    width = gu.shape[-1] // 2
    act = np.abs(gated_activation(args[0], activation=kwargs.get("activation", "silu")).astype(np.float64))
    scale = 3e-5 * (act @ w.T) + 1e-6 * ((np.abs(gu[..., :width]) * np.abs(gu[..., width:])) @ w.T)
    bias = args[2] if len(args) > 2 else kwargs.get("bias")
    if bias is not None:
        scale = scale + 3e-5 * np.abs(np.asarray(bias, np.float64))
    if kwargs.get("residual") is not None:
        scale = scale + 1e-6 * np.abs(np.asarray(kwargs["residual"], np.float64))
    return scale


@scale_formula("|x[..., i]| + |rms_norm(t, weight; eps, offset)[..., i]| + 0.1")
def _norm_add_scale(args, kwargs):
    from .reference.norms import rms_norm
    x, t, w = args[0], args[1], args[2]
    n = rms_norm(t, w, eps=kwargs["eps"], offset=kwargs.get("offset", 0.0))
    return np.abs(np.asarray(x, np.float64)) + np.abs(n.astype(np.float64)) + 0.1


@scale_formula("sum_i c[i] |W[n, i]| + |bias[n]| + |residual[n]|, c = attention_combine(m, l, |acc|; sinks) "
               "flattened to [Hq D] (the split weights of the combine applied to |acc|), W = weight "
               "(dequantized if NVFP4)")
def _attention_output_scale(args, kwargs):
    """(sum_j w_j |acc_j| / L) @ |W|.T + |b| + |residual| for attention_output(m, l, acc, W, b; sinks, residual)."""
    from .reference.attention import attention_combine
    from .reference.linear import dense_weight
    m, l, acc, w = args[0], args[1], args[2], args[3]
    magnitude = attention_combine(m, l, np.abs(np.asarray(acc, np.float32)), kwargs.get("sinks")).reshape(-1)
    scale = magnitude.astype(np.float64) @ np.abs(dense_weight(w).astype(np.float64)).T
    bias = args[4] if len(args) > 4 else kwargs.get("bias")
    for extra in (bias, kwargs.get("residual")):
        if extra is not None:
            scale = scale + np.abs(np.asarray(extra, np.float64))
    return scale


@scale_formula("2e-5 + vmax[h, e] * (1e-4 + 2 u smax[t, h]), vmax[h, e] = max_s |v[s, h // G, e]|, smax[t, h] = "
               "max over the unmasked s of |scale * sum_d q[t, h, d] k[s, h // G, d]| (0 where none), G = Hq / Hkv, "
               "u = 2^-24")
def _attention_scale(args, kwargs):
    """Magnitude scale of attention(q, k, v, mask; scale): the output is a weighted mean of v rows, so its error
    scales with max |v|; each score s reaches exp(s - max) with an absolute rounding error of about u |s| (its
    dot product's last rounding and the max subtraction), a relative error of every softmax weight, so rows with
    scores of several hundred carry errors of u |s| |v| that a fixed tolerance does not cover."""
    q, k, v, mask = (np.asarray(a) for a in args[:4])
    groups = q.shape[1] // k.shape[1]
    qh = q.astype(np.float64).transpose(1, 0, 2)                                     # [Hq, T, D]
    kh = np.repeat(k.astype(np.float64), groups, axis=1).transpose(1, 2, 0)         # [Hq, D, S]
    scores = np.abs(qh @ kh) * abs(float(kwargs["scale"]))                           # [Hq, T, S]
    smax = np.where(mask.astype(bool)[None], scores, 0.0).max(axis=-1, initial=0.0).T  # [T, Hq]
    vmax = np.repeat(np.abs(v.astype(np.float64)).max(axis=0, initial=0.0), groups, axis=0)  # [Hq, Dv]
    return 2e-5 + vmax[None] * (1e-4 + 2 * FP32_UNIT_ROUNDOFF * smax[..., None])
