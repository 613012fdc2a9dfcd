"""quantize_checkpoint: source checkpoint -> NVFP4 checkpoint directory (compressed-tensors or ModelOpt layout).

Output directory (deterministic: the same source and options give the same bytes):
    model.safetensors        quantized Linears (layouts.py names and dtypes) + everything else in ``dtype``
                             (bfloat16 by default, as llm-compressor and ModelOpt keep unquantized tensors);
                             above 5 GB: model-0000i-of-0000n.safetensors + model.safetensors.index.json
    config.json              the HF config with quantization_config (sorted keys, indent 2)
    hf_quant_config.json     ModelOpt layout only
    tokenizer.json, tokenizer_config.json (with the chat template), generation_config.json, ...

lm_head: left unquantized and listed in the ignore list unless ``quantize_lm_head``. A tied model (lm_head shares
the embedding, e.g. SmolLM2, Gemma-3) then gets an untied ``lm_head.weight`` quantized from the embedding, while the
embedding stays in ``dtype`` for the row lookup, and ``tie_word_embeddings`` becomes false.
"""
from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import ml_dtypes
import numpy as np

from .. import __version__
from ..loaders.safetensors import save_safetensors
from . import layouts
from .plan import Plan, input_scalar, make_plan, quantize_group
from .progress import Progress
from .source import Source, load_source

DTYPES = {"bfloat16": np.dtype(ml_dtypes.bfloat16), "float16": np.dtype(np.float16),
          "float32": np.dtype(np.float32)}
EMBED = "model.embed_tokens.weight"
_SHARD_RE = re.compile(r"^model-\d{5}-of-\d{5}\.safetensors$")
MAX_SHARD_BYTES = 5 * 10**9  # transformers' default max_shard_size ("5GB")


@dataclass
class Report:
    out: Path
    layout: str
    quantized: list = field(default_factory=list)
    ignored: list = field(default_factory=list)
    bytes_quantized: int = 0
    bytes_total: int = 0
    seconds: float = 0.0

    def summary(self) -> str:
        return (f"wrote {self.out} ({self.layout}): {len(self.quantized)} Linears in NVFP4, "
                f"{len(self.ignored)} left in high precision ({_few(self.ignored)}); "
                f"{self.bytes_total / 1e6:.1f} MB of tensors, {self.bytes_quantized / 1e6:.1f} MB of them NVFP4; "
                f"{self.seconds:.1f} s")


def _few(names, limit: int = 5) -> str:
    if not names:
        return "none"
    return ", ".join(names[:limit]) + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")


def quantize_checkpoint(model, out, *, layout: str = "compressed-tensors", ignore=(),
                        quantize_lm_head: bool = False, w4a4: bool = False, calibration=None,
                        dtype: str = "bfloat16", progress: bool = True, backend=None,
                        max_shard_bytes: int = MAX_SHARD_BYTES) -> Report:
    """Quantize ``model`` (GGUF path, HF directory, installed model package name, or a loaded
    impnb.quantize.source.Source) into directory ``out``.

    w4a4: also write input global scales, calibrated on ``calibration`` (a list of prompts; default
    impnb.quantize.calibrate.DEFAULT_PROMPTS) with the static_minmax observer: the max |x| seen at each Linear's
    input, igs = 448*6/amax (compressed-tensors) or input_scale = amax/2688 (ModelOpt).
    backend: where ``ops.nvfp4_quantize`` runs (None: the default; the bytes are the same on every backend).
    max_shard_bytes: above this, the weights are sharded with a model.safetensors.index.json.
    """
    layouts.tensor_names(layout)  # validates layout
    if dtype not in DTYPES:
        raise ValueError(f"dtype {dtype!r}; expected one of {sorted(DTYPES)}")
    start = time.perf_counter()
    src = model if isinstance(model, Source) else load_source(model)
    shapes = src.shapes()
    untie = quantize_lm_head and "lm_head.weight" not in shapes
    if untie:
        shapes["lm_head.weight"] = shapes[EMBED]
    plan = make_plan(shapes, ignore, quantize_lm_head)
    if w4a4 and src.kind == "gguf" and not isinstance(src.tensors, dict):
        src.materialize()  # calibration and quantization both read every tensor: dequantize the GGUF once
    amax = _calibrate(src, plan, calibration, progress) if w4a4 else {}
    tensors, dtypes, report = _convert(src, plan, layout, amax, DTYPES[dtype], untie, progress, backend)
    config = _config(src, plan, layout, w4a4, dtype, untie)
    _write(Path(out), tensors, dtypes, config, layouts.extra_files(layout, ignore=list(plan.ignore), w4a4=w4a4),
           src.files, max_shard_bytes)
    report.out, report.layout, report.seconds = Path(out), layout, time.perf_counter() - start
    return report


def _clean_out(out: Path) -> None:
    """Remove what an earlier quantizer run (or save_pretrained) left that this run may not overwrite: weight files,
    the shard index and hf_quant_config.json (a stale one would change how loaders read the result). transformers'
    save_pretrained cleans its folder the same way."""
    if not out.is_dir():
        return
    for p in out.iterdir():
        weights = p.suffix == ".safetensors" and (p.name == "model.safetensors" or _SHARD_RE.match(p.name))
        if weights or p.name in ("model.safetensors.index.json", "hf_quant_config.json"):
            p.unlink()


def _calibrate(src: Source, plan: Plan, prompts, progress: bool) -> dict[str, float]:
    from .calibrate import calibrate_input_amax
    return calibrate_input_amax(src, plan.quantize, prompts, progress=progress)


def _weight(src: Source, name: str) -> np.ndarray:
    if name == "lm_head.weight" and name not in src.tensors:
        name = EMBED  # untied copy of a tied head
    return src.float32(name)


def _convert(src: Source, plan: Plan, layout: str, amax: dict, dtype: np.dtype, untie: bool, progress: bool,
             backend=None):
    tensors, dtypes, report = {}, {}, Report(Path(), layout, list(plan.quantize), list(plan.ignore))
    names = sorted(set(src.tensors) | ({"lm_head.weight"} if untie else set()))
    quantized = {m + ".weight" for m in plan.quantize}
    bar = Progress(len(plan.groups) + len(names) - len(quantized), "quantize", enabled=progress)
    for group in plan.groups:
        ts = quantize_group([_weight(src, m + ".weight") for m in group], layout, backend)
        for module, t in zip(group, ts):
            scalar = input_scalar(amax[module], layout) if module in amax else None
            arrays, overrides = layouts.linear_tensors(module, t, scalar)
            tensors.update(arrays)
            dtypes.update(overrides)
            report.bytes_quantized += sum(a.nbytes for a in arrays.values())
        bar.step(group[0].rsplit(".", 1)[0])
    for name in names:
        if name in quantized:
            continue
        arr = np.asarray(src.tensors[name]) if name in src.tensors else _weight(src, name)
        tensors[name] = arr.astype(dtype) if _is_float(arr) else arr
        bar.step(name)
    bar.close()
    report.bytes_total = sum(a.nbytes for a in tensors.values())
    return tensors, dtypes, report


def _is_float(arr: np.ndarray) -> bool:
    return arr.dtype.kind == "f" or arr.dtype in (DTYPES["bfloat16"],)


def _config(src: Source, plan: Plan, layout: str, w4a4: bool, dtype: str, untie: bool) -> dict:
    config = dict(src.config)
    config["torch_dtype"] = dtype
    if untie:
        config["tie_word_embeddings"] = False
    config["quantization_config"] = layouts.quantization_config(layout, ignore=list(plan.ignore), w4a4=w4a4)
    return config


def _json_bytes(obj) -> bytes:
    return (json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")


def shard_plan(tensors: dict, max_shard_bytes: int) -> list[list[str]]:
    """Tensor names per shard, in name order, each shard at most ``max_shard_bytes`` (a larger tensor alone)."""
    shards, current, size = [], [], 0
    for name in sorted(tensors):
        n = tensors[name].nbytes
        if current and size + n > max_shard_bytes:
            shards.append(current)
            current, size = [], 0
        current.append(name)
        size += n
    return shards + [current] if current else shards


def _write_weights(out: Path, tensors: dict, dtypes: dict, max_shard_bytes: int) -> dict:
    """model.safetensors, or model-0000i-of-0000n.safetensors + model.safetensors.index.json (as transformers'
    save_pretrained names them) when the tensors exceed ``max_shard_bytes``. Returns extra JSON files."""
    metadata = {"format": "pt", "producer": f"impnb {__version__}"}
    shards = shard_plan(tensors, max_shard_bytes)
    if len(shards) <= 1:
        save_safetensors(out / "model.safetensors", tensors, metadata=metadata, dtypes=dtypes)
        return {}
    weight_map = {}
    for i, names in enumerate(shards, 1):
        fname = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
        save_safetensors(out / fname, {n: tensors[n] for n in names}, metadata=metadata,
                         dtypes={n: dtypes[n] for n in names if n in dtypes})
        weight_map.update({n: fname for n in names})
    total = sum(a.nbytes for a in tensors.values())
    return {"model.safetensors.index.json": {"metadata": {"total_size": total}, "weight_map": weight_map}}


def _write(out: Path, tensors: dict, dtypes: dict, config: dict, extra: dict, side_files: dict,
           max_shard_bytes: int = MAX_SHARD_BYTES) -> None:
    out.mkdir(parents=True, exist_ok=True)
    _clean_out(out)
    extra = {**extra, **_write_weights(out, tensors, dtypes, max_shard_bytes)}
    files = dict(side_files)
    files["config.json"] = _json_bytes(config)
    for name, obj in extra.items():
        files[name] = _json_bytes(obj)
    for name in sorted(files):
        tmp = out / (name + ".tmp")
        tmp.write_bytes(files[name])
        os.replace(tmp, out / name)
