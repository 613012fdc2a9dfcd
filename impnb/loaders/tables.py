"""A checkpoint's tensor table checked as a whole, after each reader has validated its own entries.

    check_dense_dtypes(dtypes, source)   every tensor the model may read as a dense weight has a float dtype
    check_unique_sources(names, source)  one logical weight has one source: no name under two prefix aliases
                                         (``model.norm.weight`` and ``model.language_model.norm.weight``), no
                                         dense weight beside a packed one, one expert layout and one router per
                                         layer, no fused projection beside its parts (in_proj_qkvz / in_proj_qkv)
    shape_table(tensors)                 canonical name -> shape, without reading or dequantizing any tensor

A violation is a FormatError naming the file and the tensor(s): never "one of them wins".
"""
from __future__ import annotations

import re

from ..errors import FormatError

# Dtypes a dense weight may have (safetensors names; the GGUF reader hands out float32 only).
FLOAT_DTYPES = frozenset({"F32", "F16", "BF16", "F64"})
# Non-float tensors that are metadata, not weights (compressed-tensors pack-quantized shapes, position buffers).
NON_WEIGHT_SUFFIXES = ("weight_shape", "position_ids")
PREFIX_ALIASES = ("model.language_model.", "language_model.model.", "language_model.", "model.")
_EXPERTS = re.compile(r"^(.*\.experts)\.(?:(\d+)\.)?(gate_up_proj|gate_proj|up_proj|down_proj)(?:\.weight)?$")
FUSED_PARTS = {"in_proj_qkvz": ("in_proj_qkv", "in_proj_z"), "in_proj_ba": ("in_proj_b", "in_proj_a")}
_FUSED = re.compile(r"^(.*\.linear_attn\.)(in_proj_qkvz|in_proj_ba)$")
_ROUTER = re.compile(r"^(layers\.\d+\.)(mlp\.router|mlp\.gate|router\.proj)\.weight$")


def canonical(name: str) -> str:
    """The name without its wrapper prefix (as impnb.model.weights reads it)."""
    for prefix in PREFIX_ALIASES:
        if name.startswith(prefix):
            return name[len(prefix):]
    return name


def check_dense_dtypes(dtypes: dict, source) -> None:
    """``dtypes``: name -> safetensors dtype of every tensor left as a plain array (quantized ones are consumed
    before). An integer, bool, complex, FP8 / E8M0 / FP4 / FP6 tensor cannot be a dense weight: its bytes would be
    read as numbers without the scales that give them meaning."""
    for name, dtype in dtypes.items():
        if dtype in FLOAT_DTYPES or name.endswith(NON_WEIGHT_SUFFIXES):
            continue
        raise FormatError(f"{source}: tensor {name!r} is {dtype}, which cannot be a dense weight (expected one of "
                          f"{', '.join(sorted(FLOAT_DTYPES))}; quantized tensors need their quantization config)")


def check_unique_sources(names, source) -> None:
    """Refuse two sources for one logical weight (see the module docstring)."""
    seen: dict[str, str] = {}
    for name in names:
        key = canonical(name)
        if key in seen:
            raise FormatError(f"{source}: tensors {seen[key]!r} and {name!r} are both {key!r} (one weight under "
                              f"two names); remove one")
        seen[key] = name
    _one_expert_layout(seen, source)
    _one_router(seen, source)
    _one_fused_layout(seen, source)


def _one_expert_layout(seen: dict, source) -> None:
    """Experts come fused (``experts.gate_up_proj``), stacked (``experts.gate_proj``) or per expert
    (``experts.{e}.gate_proj.weight``), each with its down projection; two of these for one projection is two
    sources."""
    whole: dict[str, dict[str, str]] = {}   # experts prefix -> projection -> name, stored for all experts at once
    single: dict[str, dict[str, str]] = {}  # experts prefix -> projection -> a name stored per expert
    for key, name in seen.items():
        m = _EXPERTS.match(key)
        if m:
            table = single if m.group(2) is not None else whole
            table.setdefault(m.group(1), {}).setdefault(m.group(3), name)
    for prefix in set(whole) | set(single):
        w, s = whole.get(prefix, {}), single.get(prefix, {})
        clash = [(w["gate_up_proj"], w.get("gate_proj") or w.get("up_proj"))] if "gate_up_proj" in w else []
        clash += [(w[p], s[p]) for p in w if p in s]
        clash += [(w["gate_up_proj"], s[p]) for p in ("gate_proj", "up_proj") if "gate_up_proj" in w and p in s]
        clash = [c for c in clash if all(c)]
        if clash:
            raise FormatError(f"{source}: {clash[0][0]!r} and {clash[0][1]!r} both hold expert weights of "
                              f"{prefix} (two layouts); a checkpoint must store each expert weight once")


def _one_fused_layout(seen: dict, source) -> None:
    """A fused projection and its parts hold the same rows (Qwen3-Next's in_proj_qkvz = in_proj_qkv | in_proj_z,
    in_proj_ba = in_proj_b | in_proj_a): tensors of both (weights, packed weights or scales) are two sources."""
    modules = {key.rpartition(".")[0]: name for key, name in seen.items()}
    for module, name in modules.items():
        m = _FUSED.match(module)
        for part in FUSED_PARTS[m.group(2)] if m else ():
            if m.group(1) + part in modules:
                raise FormatError(f"{source}: {name!r} and {modules[m.group(1) + part]!r} both hold rows of one "
                                  f"projection (fused and split); a checkpoint must store each weight once")


def _one_router(seen: dict, source) -> None:
    routers: dict[str, str] = {}
    for key, name in seen.items():
        m = _ROUTER.match(key)
        if m:
            if m.group(1) in routers:
                raise FormatError(f"{source}: tensors {routers[m.group(1)]!r} and {name!r} are both the router of "
                                  f"{m.group(1).rstrip('.')}")
            routers[m.group(1)] = name


def shape_of(value) -> tuple | None:
    """The logical shape of a checkpoint value (array, NVFP4Tensor, MXFP4Tensor, tuple of NVFP4Tensor)."""
    if isinstance(value, (tuple, list)):
        inner = shape_of(value[0]) if value else None
        return None if inner is None else (len(value),) + tuple(inner)
    shape = getattr(value, "shape", None)
    return tuple(int(d) for d in shape) if shape is not None else None


def shape_table(tensors) -> dict:
    """canonical name -> shape; a GGUF mapping answers ``.shape(name)`` without dequantizing."""
    lazy_shape = getattr(tensors, "shape", None)
    out = {}
    for name in tensors:
        shape = tuple(lazy_shape(name)) if callable(lazy_shape) else shape_of(tensors[name])
        if shape is not None:
            out[canonical(name)] = shape
    return out
