"""The two NVFP4 checkpoint conventions as a writer sees them: tensor names, dtypes, shapes and config JSON.

Per quantized Linear ``<m>`` (docs/numerics.md 3.1 / 3.2; N = out features, K = in features):

    compressed-tensors (llm-compressor NVFP4A16 / NVFP4 presets)  |  ModelOpt (unified HF export)
    <m>.weight_packed        U8       [N, K/2]                     |  <m>.weight          U8       [N, K/2]
    <m>.weight_scale         F8_E4M3  [N, K/16]                    |  <m>.weight_scale    F8_E4M3  [N, K/16]
    <m>.weight_global_scale  F32      [1]     divisor 2688/amax    |  <m>.weight_scale_2  F32      []  amax/2688
    <m>.input_global_scale   F32      [1]     (W4A4 only)          |  <m>.input_scale     F32      []  (W4A4 only)

Config: compressed-tensors writes ``config.json`` -> ``quantization_config`` exactly as compressed-tensors 0.20's
``ModelCompressor.update_config`` serialises ``QuantizationConfig`` for the preset (the JSON below was produced by
compressed-tensors 0.20.0 itself for ``preset_name_to_scheme("NVFP4A16" | "NVFP4", ["Linear"])``). ModelOpt
writes ``hf_quant_config.json`` ({"producer", "quantization": {quant_algo, kv_cache_quant_algo, group_size,
exclude_modules}}) and the same facts into ``config.json`` -> ``quantization_config`` with ``quant_method:
"modelopt"`` (ModelOpt ``export/convert_hf_config.py``). ModelOpt names weight-only NVFP4 ``W4A16_NVFP4`` and
W4A4 ``NVFP4`` (``export/quant_utils.py``).
"""
from __future__ import annotations

import copy

import numpy as np

from ..formats import NVFP4Tensor

CT_VERSION = "0.20.0"  # the compressed-tensors release whose serialisation is reproduced
MODELOPT_VERSION = "0.47.0"  # the ModelOpt release whose export layout is reproduced
GROUP = 16

_CT_ARGS = {"dynamic": False, "group_size": GROUP, "num_bits": 4, "scale_dtype": "torch.float8_e4m3fn",
            "strategy": "tensor_group", "symmetric": True, "type": "float"}
# NVFP4 preset's input_activations: dynamic "local" = per-16 block scales at run time from a static global scale
_CT_INPUT_ARGS = {**_CT_ARGS, "dynamic": "local", "observer": "static_minmax"}
_MO_ARGS = {"dynamic": False, "num_bits": 4, "type": "float", "group_size": GROUP}


def tensor_names(layout: str) -> dict[str, str]:
    """Suffixes of the four tensors of a quantized Linear in ``layout``."""
    if layout == "compressed-tensors":
        return {"packed": "weight_packed", "scale": "weight_scale", "global": "weight_global_scale",
                "input": "input_global_scale"}
    if layout == "modelopt":
        return {"packed": "weight", "scale": "weight_scale", "global": "weight_scale_2", "input": "input_scale"}
    raise ValueError(f"layout {layout!r}; expected 'compressed-tensors' or 'modelopt'")


def linear_tensors(module: str, t: NVFP4Tensor, input_scalar: float | None) -> tuple[dict, dict]:
    """(name -> array, name -> safetensors dtype override) for quantized Linear ``module``.

    ``t`` is in the target layout already; ``input_scalar`` is the activation scalar as that layout stores it
    (compressed-tensors input_global_scale = 2688/amax, ModelOpt input_scale = amax/2688), or None (weight-only).
    """
    names = tensor_names(t.layout)
    scalar_shape = (1,) if t.layout == "compressed-tensors" else ()
    arrays = {
        f"{module}.{names['packed']}": np.asarray(t.packed, np.uint8),
        f"{module}.{names['scale']}": np.asarray(t.scales, np.uint8),
        f"{module}.{names['global']}": np.full(scalar_shape, t.global_scale, np.float32),
    }
    if input_scalar is not None:
        arrays[f"{module}.{names['input']}"] = np.full(scalar_shape, input_scalar, np.float32)
    return arrays, {f"{module}.{names['scale']}": "F8_E4M3"}


def quantization_config(layout: str, *, ignore: list[str], w4a4: bool) -> dict:
    """The ``quantization_config`` block of config.json."""
    if layout == "compressed-tensors":
        return _ct_config(ignore, w4a4)
    if layout == "modelopt":
        return _modelopt_config(ignore, w4a4)
    raise ValueError(f"layout {layout!r}; expected 'compressed-tensors' or 'modelopt'")


def extra_files(layout: str, *, ignore: list[str], w4a4: bool) -> dict[str, dict]:
    """Files besides config.json the layout writes: ModelOpt's hf_quant_config.json."""
    if layout != "modelopt":
        return {}
    return {"hf_quant_config.json": {"producer": _producer(), "quantization": {
        "quant_algo": _modelopt_algo(w4a4), "kv_cache_quant_algo": None, "group_size": GROUP,
        "exclude_modules": list(ignore)}}}


def _ct_config(ignore: list[str], w4a4: bool) -> dict:
    group = {"format": "nvfp4-pack-quantized", "input_activations": copy.deepcopy(_CT_INPUT_ARGS) if w4a4 else None,
             "output_activations": None, "targets": ["Linear"], "weights": copy.deepcopy(_CT_ARGS)}
    return {
        "config_groups": {"group_0": group},
        "format": "nvfp4-pack-quantized",
        "global_compression_ratio": None,
        "ignore": list(ignore),
        "kv_cache_scheme": None,
        "moe_sparsity_config": None,
        "quant_method": "compressed-tensors",
        "quantization_status": "compressed",
        "sparsity_config": {},
        "transform_config": {},
        "version": CT_VERSION,
    }


def _modelopt_config(ignore: list[str], w4a4: bool) -> dict:
    group = {"weights": dict(_MO_ARGS), "targets": ["Linear"]}
    if w4a4:
        group["input_activations"] = dict(_MO_ARGS)
    return {"config_groups": {"group_0": group}, "ignore": list(ignore), "producer": _producer(),
            "quant_algo": _modelopt_algo(w4a4), "quant_library": "modelopt", "quant_method": "modelopt"}


def _modelopt_algo(w4a4: bool) -> str:
    return "NVFP4" if w4a4 else "W4A16_NVFP4"


def _producer() -> dict:
    return {"name": "modelopt", "version": MODELOPT_VERSION}
