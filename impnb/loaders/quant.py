"""Quantized safetensors checkpoints: detect the scheme, validate its tensors, build NVFP4Tensor / MXFP4Tensor.

Dimensions: M = a module (Linear) name, N = output features, K = logical input features, E = experts.

Detection (docs/numerics.md 3.1, 3.2, 4) dispatches on config.json quantization_config.quant_method FIRST, because a
ModelOpt config_groups block looks like compressed-tensors:
    "compressed-tensors": config_groups[*].format (or the top-level format) "nvfp4-pack-quantized" -> NVFP4,
                          "mxfp4-pack-quantized" -> MXFP4; "dense" groups carry no packed tensors.
    "modelopt":           quant_algo NVFP4 / W4A16_NVFP4 / NVFP4_AWQ -> NVFP4; MXFP4 / W4A8_MXFP4_FP8 -> MXFP4
                          (also read from hf_quant_config.json "quantization" when config.json has no block).
    "mxfp4":              gpt-oss `*_blocks` / `*_scales`.
    anything else:        impnb.Unsupported, naming what is supported.
Tensors per quantized module M (all shapes validated, then wrapped without copying):
    compressed-tensors NVFP4: M.weight_packed U8 [N, K/2], M.weight_scale F8_E4M3 [N, K/16],
                              M.weight_global_scale F32 [1] (a DIVISOR), M.input_global_scale F32 [1] (kept raw)
                              -> tensors["M.weight"] = NVFP4Tensor(layout="compressed-tensors")
    ModelOpt NVFP4:           M.weight U8 [N, K/2], M.weight_scale F8_E4M3 [N, K/16], M.weight_scale_2 F32 []
                              (a MULTIPLIER), M.input_scale F32 [] (kept raw)
                              -> tensors["M.weight"] = NVFP4Tensor(layout="modelopt")
    compressed-tensors / ModelOpt MXFP4: as above with a U8 or F8_E8M0 scale [N, K/32] and NO global scale
                              -> tensors["M.weight"] = MXFP4Tensor
    gpt-oss MXFP4:            X_blocks U8 [..., N, K/32, 16], X_scales U8 [..., N, K/32] -> tensors["X"] = MXFP4Tensor
                              of logical shape [E, N, K] (rows = outputs). NOTE: a dense gpt-oss checkpoint's X
                              (and transformers' dequantized one) is the TRANSPOSE, [E, K, N].
    Stacked experts [E, N, K/2] (NVFP4) become a tuple of E NVFP4Tensor (global scale [1] or [E]).
The tensor level must agree with the config: F8_E4M3 scale + group 16 + a global scale is NVFP4; U8/F8_E8M0 scale +
group 32 + no global scale is MXFP4; anything else (and packed tensors in a module the ignore list leaves
unquantized, or quantized tensors without a quantization config) is a FormatError. A global scale of 0, inf or NaN
is kept and warned about (the layer contributes zeros); fused q/k/v or gate/up shards with different global
scales are warned about (docs/numerics.md 3.3).
"""
from __future__ import annotations

import fnmatch
import functools
import math
import warnings
from dataclasses import dataclass, field

import numpy as np

from ..errors import FormatError, Unsupported
from ..formats import NVFP4Tensor
from .mxfp4 import MXFP4Tensor
from .safe_regex import MAX_PATTERN_CHARS, SafeRegex
from .tables import check_dense_dtypes

CT_FORMATS = {"nvfp4-pack-quantized": "nvfp4", "mxfp4-pack-quantized": "mxfp4", "dense": None}
MODELOPT_ALGOS = {"NVFP4": "nvfp4", "W4A16_NVFP4": "nvfp4", "NVFP4_AWQ": "nvfp4",
                  "MXFP4": "mxfp4", "W4A8_MXFP4_FP8": "mxfp4"}
GROUP = {"nvfp4": 16, "mxfp4": 32}
SCALE_KIND = {"F8_E4M3": "nvfp4", "U8": "mxfp4", "F8_E8M0": "mxfp4"}
FUSED_FAMILIES = (("q_proj", "k_proj", "v_proj"), ("gate_proj", "up_proj"), ("w1", "w3"))
MAX_IGNORE_PATTERNS = 4096    # released configs list at most a few hundred modules


class FusedScaleWarning(UserWarning):
    """Shards of one fused GEMM (q/k/v, gate/up) carry different NVFP4 global scales."""


@dataclass(frozen=True)
class QuantScheme:
    method: str                 # "compressed-tensors" | "modelopt" | "mxfp4"
    kinds: frozenset            # subset of {"nvfp4", "mxfp4"}
    ignore: tuple = ()          # module patterns left unquantized: exact, fnmatch, or "re:<regex>" (CT)

    @property
    def name(self) -> str:
        producer = "gpt-oss" if self.method == "mxfp4" else self.method
        return "+".join(sorted(self.kinds)) + "-" + producer


@dataclass
class QuantReport:
    quantized: int = 0
    unusable_global_scale: list = field(default_factory=list)  # module names whose layer contributes zeros
    fused_scale_mismatch: list = field(default_factory=list)
    pre_quant_scale: list = field(default_factory=list)  # AWQ modules: inputs must be scaled by M.pre_quant_scale


# ------------------------------------------------------------------------------------------------ detection


def detect_scheme(config: dict | None, hf_quant_config: dict | None = None) -> QuantScheme | None:
    """The quantization scheme a checkpoint declares, or None for an unquantized one."""
    qc = (config or {}).get("quantization_config")
    if qc is None:
        if _is_modelopt_file(hf_quant_config):
            return _detect_modelopt({}, hf_quant_config)
        return None
    if not isinstance(qc, dict):
        raise FormatError("config.json quantization_config must be an object")
    method = qc.get("quant_method")
    if method == "compressed-tensors":
        return _detect_ct(qc)
    if method == "modelopt":
        return _detect_modelopt(qc, hf_quant_config)
    if method == "mxfp4":
        return QuantScheme("mxfp4", frozenset({"mxfp4"}), _patterns(qc.get("modules_to_not_convert")))
    raise Unsupported(f"quantization_config.quant_method {method!r} is not supported; supported: "
                      f"'compressed-tensors' ({', '.join(CT_FORMATS)}), 'modelopt' ({', '.join(MODELOPT_ALGOS)}), "
                      f"'mxfp4' (gpt-oss)")


def _is_modelopt_file(hq) -> bool:
    return isinstance(hq, dict) and isinstance(hq.get("quantization"), dict)


def _patterns(value) -> tuple:
    """The ignore list, every entry checked now (before any tensor is read): "re:" entries compile to a
    backtracking-free matcher (impnb/loaders/safe_regex.py)."""
    if value is None:
        return ()
    if (not isinstance(value, list) or len(value) > MAX_IGNORE_PATTERNS
            or not all(isinstance(p, str) and len(p) <= MAX_PATTERN_CHARS + 3 for p in value)):
        raise FormatError(f"quantization ignore list must be a list of at most {MAX_IGNORE_PATTERNS} strings of at "
                          f"most {MAX_PATTERN_CHARS} characters, got {str(value)[:80]}")
    for p in value:
        if p.startswith("re:"):
            _regex(p[3:])
    return tuple(value)


@functools.lru_cache(maxsize=1024)
def _regex(pattern: str) -> SafeRegex:
    return SafeRegex(pattern, "quantization ignore pattern")


def _check_group_size(kind, weights, where) -> None:
    size = (weights or {}).get("group_size") if isinstance(weights, dict) else None
    if kind and size is not None and size != GROUP[kind]:
        raise FormatError(f"{where}: weights group_size {size!r} contradicts {kind} (group {GROUP[kind]})")


def _text(value, what: str) -> str | None:
    if value is not None and not isinstance(value, str):
        raise FormatError(f"{what} must be a string, got {str(value)[:80]}")
    return value


def _detect_ct(qc) -> QuantScheme | None:
    groups = qc.get("config_groups") or {}
    if not isinstance(groups, dict) or not all(isinstance(g, dict) for g in groups.values()):
        raise FormatError("compressed-tensors config_groups must be an object of objects")
    top = _text(qc.get("format"), "compressed-tensors format")
    formats = {name: _text(g.get("format"), f"config group {name} format") or top for name, g in groups.items()}
    kinds = set()
    for name, fmt in (formats or {"<top level>": top}).items():
        if fmt not in CT_FORMATS:
            raise Unsupported(f"compressed-tensors format {fmt!r} (config group {name}) is not supported; "
                              f"supported: {', '.join(CT_FORMATS)}")
        kind = CT_FORMATS[fmt]
        _check_group_size(kind, groups.get(name, {}).get("weights"), f"compressed-tensors group {name}")
        kinds.add(kind)
    kinds.discard(None)
    return QuantScheme("compressed-tensors", frozenset(kinds), _patterns(qc.get("ignore"))) if kinds else None


def _modelopt_algos(qc, hq_quant) -> set:
    algo = _text(qc.get("quant_algo") or hq_quant.get("quant_algo"), "ModelOpt quant_algo")
    if algo != "MIXED_PRECISION":
        return {algo}
    layers = hq_quant.get("quantized_layers")
    if not isinstance(layers, dict) or not all(isinstance(v, dict) for v in layers.values()):
        raise FormatError("ModelOpt MIXED_PRECISION needs hf_quant_config.json quantization.quantized_layers "
                          "{module: {quant_algo: ...}}")
    return {_text(v.get("quant_algo"), f"quantized_layers[{k!r}].quant_algo") for k, v in layers.items()}


def _detect_modelopt(qc, hq) -> QuantScheme:
    hq_quant = hq.get("quantization", {}) if _is_modelopt_file(hq) else {}
    algos = _modelopt_algos(qc, hq_quant)
    unknown = algos - set(MODELOPT_ALGOS)
    if unknown:
        raise Unsupported(f"ModelOpt quant_algo {sorted(map(str, unknown))} is not supported; supported: "
                          f"{', '.join(MODELOPT_ALGOS)}")
    kinds = frozenset(MODELOPT_ALGOS[a] for a in algos)
    if "nvfp4" in kinds:
        size = hq_quant.get("group_size")
        if size is not None and size != 16:
            raise FormatError(f"ModelOpt NVFP4 group_size {size!r}; NVFP4 blocks are 16 elements")
    ignore = qc.get("ignore") if qc.get("ignore") is not None else hq_quant.get("exclude_modules")
    return QuantScheme("modelopt", kinds, _patterns(ignore))


# ------------------------------------------------------------------------------------------------ helpers


def is_ignored(module: str, patterns) -> bool:
    """CT: exact name or "re:" regex (re.match semantics, matched without backtracking); ModelOpt/gpt-oss:
    fnmatch. A pattern naming a parent counts."""
    for p in patterns:
        if p.startswith("re:"):
            if _regex(p[3:]).match(module):
                return True
        elif fnmatch.fnmatchcase(module, p) or fnmatch.fnmatchcase(module, p + ".*"):
            return True
    return False


def _group(packed_info, scale_info, module) -> int:
    """Group size implied by the [.., N, K/2] packed / [.., N, K/G] scale shape pair."""
    ps, ss = packed_info.shape, scale_info.shape
    if packed_info.dtype != "U8" or len(ps) < 2:
        raise FormatError(f"{module}: packed weight must be U8 with >= 2 axes, got {packed_info.dtype} {list(ps)}")
    if len(ss) != len(ps) or ss[:-1] != ps[:-1] or ss[-1] == 0 or (2 * ps[-1]) % ss[-1]:
        raise FormatError(f"{module}: scale shape {list(ss)} does not pair with packed shape {list(ps)}")
    return (2 * ps[-1]) // ss[-1]


def _global_scales(infos, get, name, count) -> np.ndarray:
    """float32 [count] from a scalar / [1] / [count] float tensor."""
    info = infos[name]
    if info.dtype not in ("F32", "F64", "BF16", "F16") or info.numel not in (1, count):
        raise FormatError(f"{name}: global scale must be a float tensor of 1 or {count} elements, got "
                          f"{info.dtype} {list(info.shape)}")
    values = np.broadcast_to(np.asarray(get(name), dtype=np.float32).reshape(-1), (count,))
    if np.any(values < 0):
        raise FormatError(f"{name}: negative global scale {values.min()!r} (it would flip the layer's sign)")
    return values


def _nvfp4(packed, scales, gs, layout, name) -> NVFP4Tensor | tuple:
    scales = scales.view(np.uint8)
    if packed.ndim == 2:
        return NVFP4Tensor(packed, scales, float(gs[0]), layout, name)
    if packed.ndim == 3:
        return tuple(NVFP4Tensor(packed[e], scales[e], float(gs[e]), layout, f"{name}[{e}]")
                     for e in range(packed.shape[0]))
    raise Unsupported(f"{name}: NVFP4 weights with {packed.ndim} axes (only [N, K/2] and [E, N, K/2])")


# ------------------------------------------------------------------------------------------------ assembly


def assemble(infos: dict, get, scheme: QuantScheme | None, source="checkpoint") -> tuple[dict, QuantReport]:
    """infos: name -> TensorInfo (safetensors dtype strings), get(name) -> array. Returns (tensors, report).
    Every tensor left dense must have a float dtype, and a quantized weight must not also be stored dense."""
    report = QuantReport()
    if scheme is None:
        _refuse_undeclared(infos)
        check_dense_dtypes({name: info.dtype for name, info in infos.items()}, source)
        return {name: get(name) for name in infos}, report
    if scheme.method == "mxfp4":
        built, consumed = _assemble_gpt_oss(infos, get, scheme)
    else:
        built, consumed = _assemble_linear(infos, get, scheme, report)
    report.quantized = len(built)
    dense = {name: info.dtype for name, info in infos.items() if name not in consumed}
    both = sorted(set(dense) & set(built))
    if both:
        raise FormatError(f"{source}: {both[0]!r} is stored both dense and quantized ({len(both)} such weight(s)); "
                          f"a checkpoint must store each weight once")
    check_dense_dtypes(dense, source)
    tensors = {name: get(name) for name in dense}
    tensors.update(built)
    _check_fused(built, report)
    return tensors, report


def _refuse_undeclared(infos) -> None:
    for name, info in infos.items():
        packed_like = name.endswith((".weight_packed", ".weight_global_scale", ".weight_scale_2"))
        blocks_like = name.endswith("_blocks") and name[:-7] + "_scales" in infos
        modelopt_like = name.endswith(".weight_scale") and infos.get(name[:-6], info).dtype == "U8"
        if packed_like or blocks_like or modelopt_like:
            raise FormatError(f"tensor {name!r} looks quantized but config.json declares no quantization_config "
                              f"(and there is no ModelOpt hf_quant_config.json); refusing to guess its format")


def _linear_names(scheme, module) -> tuple[str, str]:
    if scheme.method == "compressed-tensors":
        return module + ".weight_packed", module + ".weight_global_scale"
    return module + ".weight", module + ".weight_scale_2"


def _assemble_linear(infos, get, scheme, report) -> tuple[dict, set]:
    built, consumed = {}, set()
    for scale_name in sorted(n for n in infos if n.endswith(".weight_scale")):
        module = scale_name[:-len(".weight_scale")]
        packed_name, global_name = _linear_names(scheme, module)
        if packed_name not in infos:
            raise FormatError(f"{scale_name}: a weight scale without {packed_name} ({scheme.name} checkpoint)")
        if is_ignored(module, scheme.ignore):
            raise FormatError(f"{module}: the ignore list leaves it unquantized but it carries {scale_name}")
        scale_info = infos[scale_name]
        kind = SCALE_KIND.get(scale_info.dtype)
        if kind is None or kind not in scheme.kinds:
            raise FormatError(f"{scale_name}: scale dtype {scale_info.dtype} means {kind or 'no FP4 format'}, but "
                              f"the checkpoint declares {scheme.name} (F8_E4M3 = NVFP4, U8/F8_E8M0 = MXFP4)")
        group = _group(infos[packed_name], scale_info, module)
        if group != GROUP[kind]:
            raise FormatError(f"{module}: shapes {list(infos[packed_name].shape)} / {list(scale_info.shape)} give "
                              f"group {group}, but a {scale_info.dtype} scale means {kind} (group {GROUP[kind]})")
        packed, scales = get(packed_name), get(scale_name)
        if kind == "mxfp4":
            if global_name in infos:
                raise FormatError(f"{global_name}: MXFP4 has no per-tensor scale; U8 scales with a global scale "
                                  f"are neither MXFP4 nor NVFP4")
            built[module + ".weight"] = MXFP4Tensor(packed, scales.view(np.uint8), module + ".weight")
        else:
            if global_name not in infos:
                raise FormatError(f"{module}: NVFP4 layer without its global scale {global_name}")
            count = packed.shape[0] if packed.ndim == 3 else 1
            gs = _global_scales(infos, get, global_name, count)
            if not np.all(np.isfinite(gs) & (gs != 0)):
                report.unusable_global_scale.append(module)
            built[module + ".weight"] = _nvfp4(packed, scales, gs, scheme.method, module + ".weight")
            consumed.add(global_name)
        consumed.update({packed_name, scale_name})
    _refuse_orphans(infos, consumed, scheme)
    _note_pre_quant_scales(infos, built, report)
    return built, consumed


def _note_pre_quant_scales(infos, built, report) -> None:
    """ModelOpt NVFP4_AWQ: x must be multiplied by M.pre_quant_scale before M's GEMM. The tensor stays raw."""
    report.pre_quant_scale = sorted(n[:-len(".pre_quant_scale")] for n in infos if n.endswith(".pre_quant_scale"))
    if report.pre_quant_scale:
        warnings.warn(f"{len(report.pre_quant_scale)} module(s) carry an AWQ pre_quant_scale (e.g. "
                      f"{report.pre_quant_scale[0]}): their inputs must be scaled by it before the GEMM; the "
                      f"tensors are kept as '<module>.pre_quant_scale'", RuntimeWarning, stacklevel=4)


def _refuse_orphans(infos, consumed, scheme) -> None:
    for name, info in infos.items():
        if name in consumed:
            continue
        orphan_global = name.endswith((".weight_global_scale", ".weight_scale_2"))
        orphan_packed = name.endswith(".weight_packed") or (scheme.method == "modelopt" and info.dtype == "U8"
                                                            and name.endswith(".weight"))
        if orphan_global or orphan_packed:
            raise FormatError(f"{name}: a packed weight or global scale without the rest of its {scheme.name} "
                              f"tensors (weight_scale missing?)")


def _assemble_gpt_oss(infos, get, scheme) -> tuple[dict, set]:
    built, consumed = {}, set()
    for blocks_name in sorted(n for n in infos if n.endswith("_blocks")):
        base = blocks_name[:-len("_blocks")]
        scales_name = base + "_scales"
        if scales_name not in infos:
            raise FormatError(f"{blocks_name}: MXFP4 blocks without {scales_name}")
        if is_ignored(base, scheme.ignore):
            raise FormatError(f"{base}: modules_to_not_convert leaves it unquantized but it carries {blocks_name}")
        b, s = infos[blocks_name], infos[scales_name]
        if b.dtype != "U8" or SCALE_KIND.get(s.dtype) != "mxfp4":
            raise FormatError(f"{base}: gpt-oss MXFP4 needs U8 blocks and U8/F8_E8M0 scales, got {b.dtype} / "
                              f"{s.dtype}")
        if len(b.shape) < 3 or b.shape[-1] != 16 or s.shape != b.shape[:-1]:
            raise FormatError(f"{base}: blocks {list(b.shape)} / scales {list(s.shape)} are not [..., K/32, 16] / "
                              f"[..., K/32]")
        blocks = get(blocks_name)
        packed = blocks.reshape(blocks.shape[:-2] + (blocks.shape[-2] * 16,))  # [..., N, K/2], a view
        built[base] = MXFP4Tensor(packed, get(scales_name).view(np.uint8), base)
        consumed.update({blocks_name, scales_name})
    for name in infos:
        if name.endswith("_scales") and name not in consumed:
            raise FormatError(f"{name}: MXFP4 scales without {name[:-7]}_blocks")
    return built, consumed


def _check_fused(built: dict, report: QuantReport) -> None:
    by_parent: dict[tuple, dict] = {}
    for name, t in built.items():
        if isinstance(t, NVFP4Tensor) and name.endswith(".weight"):
            parent, _, leaf = name[:-len(".weight")].rpartition(".")
            for family in FUSED_FAMILIES:
                if leaf in family:
                    by_parent.setdefault((parent, family), {})[leaf] = t.global_scale
    for (parent, family), scales in by_parent.items():
        finite = {v for v in scales.values() if math.isfinite(v)}
        if len(scales) > 1 and len(set(scales.values())) > 1 and finite:
            report.fused_scale_mismatch.append(parent)
            warnings.warn(f"{parent}: fused shards {sorted(scales)} carry different NVFP4 global scales {scales}; "
                          f"a fused GEMM would need their FP8 block scales recomputed (docs/numerics.md 3.3)",
                          FusedScaleWarning, stacklevel=3)
