"""W4A4 at run time, and activation calibration: hooks on the model's Linear inputs.

Legend: T = tokens, K = a Linear's in features, M = a Linear module name (HF naming).

The reference model (impnb.model) runs every projection through ``ops.linear(x, W)`` with dense float32 weights
that it builds once at load: ``qkv`` (q, k, v fused), ``o``, ``gate_up`` (gate, up fused), ``down`` per layer,
and ``lm_head``. Both features here wrap the model's op table so that ``linear`` first sees its input x [T, K]:

  * W4A4 (``enable_w4a4``): x is replaced by ``ops.fake_quantize_nvfp4_activations(x, igs)``: per-16 block NVFP4
    quantize-dequantize with the checkpoint's stored input scale (compressed-tensors ``input_global_scale``, a
    divisor; ModelOpt ``input_scale``, a multiplier). Fused shards use ONE activation scale, as the GEMM quantizes
    its input once: the smallest divisor of the shards (the largest calibrated amax; vLLM takes the same max), with
    a warning when the shards disagree.
  * Calibration (``record_input_amax``): max |x| per Linear input over calibration prompts (static_minmax).

Nothing in the model changes: dense Linears without an input scale (embeddings, ignored layers) run as before.
"""
from __future__ import annotations

import warnings
from contextlib import contextmanager

import numpy as np

from .formats import NVFP4Tensor

INPUT_SCALE_NAMES = {"compressed-tensors": "input_global_scale", "modelopt": "input_scale"}


def linear_modules(model) -> dict[int, tuple[object, tuple[str, ...]]]:
    """id(dense weight) -> (the weight, the HF Linear modules fused in it) for the model's projections."""
    out = {}
    for i, w in enumerate(model.layers):
        p = f"model.layers.{i}."
        out[id(w["qkv"])] = (w["qkv"], tuple(p + "self_attn." + m for m in _qkv_names(model, i)))
        out[id(w["o"])] = (w["o"], (p + "self_attn.o_proj",))
        if "mlp" in w:
            out[id(w["mlp"]["gate_up"])] = (w["mlp"]["gate_up"], (p + "mlp.gate_proj", p + "mlp.up_proj"))
            out[id(w["mlp"]["down"])] = (w["mlp"]["down"], (p + "mlp.down_proj",))
    if model.lm_head is not model.embed:
        out[id(model.lm_head)] = (model.lm_head, ("lm_head",))
    return out


def _qkv_names(model, layer: int) -> tuple[str, ...]:
    return ("q_proj", "k_proj") if model.config.layers[layer].k_eq_v else ("q_proj", "k_proj", "v_proj")


class _HookedOps:
    """An op table whose ``linear`` calls ``hook(x, weight) -> x`` first; every other op is the wrapped table's."""

    def __init__(self, inner, hook):
        self._inner, self._hook = inner, hook

    def __getattr__(self, name):
        return getattr(self._inner, name)

    def linear(self, x, weight, bias=None):
        return self._inner.linear(self._hook(x, weight), weight, bias)


# ---- W4A4 -----------------------------------------------------------------------------------------------------
def input_scales(tensors) -> dict[str, tuple[float, str]]:
    """M -> (stored input scalar, layout) for every NVFP4 Linear M of a checkpoint that carries an input scale."""
    out = {}
    for name, value in tensors.items():
        if not (isinstance(value, NVFP4Tensor) and name.endswith(".weight")):
            continue
        module = name[:-len(".weight")]
        key = f"{module}.{INPUT_SCALE_NAMES[value.layout]}"
        if key in tensors:
            out[module] = (float(np.asarray(tensors[key], np.float32).reshape(-1)[0]), value.layout)
    return out


def _divisor(scalar: float, layout: str) -> np.float32:
    return np.float32(scalar) if layout == "compressed-tensors" else np.float32(1.0) / np.float32(scalar)


def enable_w4a4(model, tensors) -> int:
    """Quantize the inputs of ``model``'s NVFP4 Linears at run time with the input scales in ``tensors``.

    Returns the number of GEMMs (fused families count once) that quantize their input. Raises ValueError when
    the checkpoint has no input scales (a weight-only checkpoint cannot run W4A4).
    """
    scales = input_scales(tensors)
    bad = {m: v for m, (v, _) in scales.items() if not (np.isfinite(v) and v > 0)}
    if bad:  # a zero / non-finite scale must be a clear error at load, not NaNs mid-generation
        raise ValueError(f"W4A4: unusable input scales (0, negative, inf or NaN): {sorted(bad.items())[:4]}")
    if not scales:
        raise ValueError("W4A4 needs input scales (input_global_scale / input_scale); this checkpoint has none "
                         "(weight-only NVFP4A16 / W4A16_NVFP4)")
    per_weight = {}
    for key, (_, modules) in linear_modules(model).items():
        present = [scales[m] for m in modules if m in scales]
        if present:
            per_weight[key] = _fused_scale(modules, present)
    missing = sorted(set(scales) - {m for _, ms in linear_modules(model).values() for m in ms})
    if missing:
        warnings.warn(f"W4A4: input scales of {missing} are not applied (modules the model does not run as one "
                      f"of its dense projections, e.g. MoE experts)", stacklevel=2)
    ops = model.ops

    def quantize_input(x, weight):
        entry = per_weight.get(id(weight))
        if entry is None:
            return x
        scalar, layout = entry
        return ops.fake_quantize_nvfp4_activations(x, scalar, layout=layout)  # NumPy or CuPy x, per backend

    model.ops = _HookedOps(ops, quantize_input)
    model.w4a4 = True
    return len(per_weight)


def _fused_scale(modules, present) -> tuple[float, str]:
    layout = present[0][1]
    divisors = [_divisor(s, layout) for s, _ in present]
    if len(set(float(d) for d in divisors)) > 1:
        warnings.warn(f"W4A4: fused {modules} carry different input scales; the GEMM uses the smallest divisor "
                      f"(largest calibrated amax) for all of them", stacklevel=3)
    best = int(np.argmin(divisors))
    return present[best]


# ---- calibration ------------------------------------------------------------------------------------------------
@contextmanager
def record_input_amax(model):
    """Within the block, every projection records max |x| of its input: yields {M: amax} (fused shards share)."""
    modules = linear_modules(model)
    amax: dict[str, float] = {}

    def observe(x, weight):
        entry = modules.get(id(weight))
        if entry is not None:
            value = float(abs(x).max()) if x.size else 0.0  # NumPy or CuPy x
            for m in entry[1]:
                amax[m] = max(amax.get(m, 0.0), value)
        return x

    inner = model.ops
    model.ops = _HookedOps(inner, observe)
    try:
        yield amax
    finally:
        model.ops = inner
