"""Golden activation dumps: record every named tap of one forward pass, save it, import other engines' dumps, and
diff any two.

Dimension legend: T = tokens of the dumped forward pass; the other axes are the tap's own (e.g. [T, D], [T, H, Dh]).

Vocabulary (llama.cpp's ``cb(cur, name, il)``, stored as GGUF-style keys): ``embedding``; per layer i
``blk.{i}.attn_norm``, ``.q``, ``.k`` (after QK-norm and RoPE), ``.v``, ``.attn_out`` (after the output projection,
before any post-attention norm), ``.ffn_norm``, ``.router_logits``, ``.ffn_out`` (after any post-FFN norm),
``.residual`` (the layer's output); linear-attention layers also ``.delta_out``, ``.conv_state``,
``.recurrent_state`` (states with a leading axis of 1, one per prefill chunk); then ``final_norm`` and ``logits``. The model calls ``taps.tap(name, layer,
array)`` at each point.

File format: one safetensors file; the metadata entry ``impnb_golden`` holds the JSON manifest (format version,
producer, model hash, token ids, backend, commit, tap order). A tap is either
  * full:    a float32 tensor under its key, or
  * partial: what an engine printed of it (llama.cpp's eval-callback: the first and last values of each axis and
             the sum): ``<key>#corner_index`` int64 [n, ndim], ``<key>#corner_value`` float64 [n], ``<key>#sum``
             float64 [1], with the tensor's shape and the print precision in the manifest's ``partial_taps``.
A dump of another format version is refused with the command to regenerate it.

Producers: ``impnb.generate --dump-golden`` (impnb), ``python -m impnb.golden import-hf`` (transformers),
``python -m impnb.golden import-llamacpp`` (a llama.cpp eval-callback log). CLI: see impnb/golden/cli.py.
"""
from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import subprocess
from dataclasses import dataclass, field

import numpy as np

FORMAT_VERSION = 1
_META_KEY = "impnb_golden"
REGENERATE_HINT = "regenerate it with: python -m impnb.generate --model MODEL --prompt PROMPT --dump-golden FILE"
PER_LAYER = ("attn_norm", "q", "k", "v", "attn_out", "ffn_norm", "router_logits", "ffn_out", "residual")


class GoldenRecorder:
    """A ``taps`` object for ``model.forward``: keeps a float32 host copy of each tap, in call order.

    ``include``: glob patterns of tap keys to keep (default: all; env ``IMPNB_GOLDEN_INCLUDE``, comma-separated).
    """

    def __init__(self, include: list[str] | None = None):
        env = os.environ.get("IMPNB_GOLDEN_INCLUDE")
        self.include = include or ([p.strip() for p in env.split(",") if p.strip()] if env else None)
        self.tensors: dict[str, np.ndarray] = {}

    @staticmethod
    def key(name: str, layer: int | None) -> str:
        return name if layer is None else f"blk.{int(layer)}.{name}"

    def tap(self, name: str, layer: int | None, array) -> None:
        key = self.key(name, layer)
        if self.include and not any(fnmatch.fnmatchcase(key, p) for p in self.include):
            return
        from ..cuda._runtime import to_host
        host = np.array(to_host(array), dtype=np.float32, copy=True)
        if key in self.tensors:  # a second forward (chunked prefill): append along the token axis
            host = np.concatenate([self.tensors[key], host], axis=0)
        self.tensors[key] = host


def model_hash(path: str) -> str:
    """sha256 fingerprint of a model file or directory: name, size, first and last MiB of each weight file."""
    files = [path] if os.path.isfile(path) else sorted(
        os.path.join(path, f) for f in os.listdir(path)
        if f.endswith((".gguf", ".safetensors", ".json", ".jinja")))
    h = hashlib.sha256()
    for f in files:
        size = os.path.getsize(f)
        h.update(f"{os.path.basename(f)}:{size}".encode())
        with open(f, "rb") as fh:
            h.update(fh.read(1 << 20))
            fh.seek(max(0, size - (1 << 20)))
            h.update(fh.read(1 << 20))
    return h.hexdigest()[:32]


def source_commit() -> str:
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        out = subprocess.run(["git", "-C", here, "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True,
                             timeout=5)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


@dataclass
class Corners:
    """What an engine printed of one tap: values at some indices, the sum, the tensor's shape."""
    shape: tuple
    index: np.ndarray  # int64 [n, ndim]
    values: np.ndarray  # float64 [n]
    total: float | None  # the printed sum of all elements (None if not printed)
    print_abs: float  # half a unit of the printed last digit: the print's own error
    sum_print_abs: float = 0.0  # the same for the sum


@dataclass
class Dump:
    manifest: dict
    tensors: dict[str, np.ndarray]  # full taps
    partial: dict[str, Corners] = field(default_factory=dict)

    @property
    def taps(self) -> list[str]:
        return list(self.manifest["taps"])

    def has(self, key: str) -> bool:
        return key in self.tensors or key in self.partial


def save(file: str, recorder: GoldenRecorder, *, token_ids, backend: str, model: str = "", model_sha: str = "") -> dict:
    """Write the recorded taps and their manifest to ``file`` (safetensors). Returns the manifest."""
    if not recorder.tensors:
        raise ValueError("no taps were recorded (does the model call taps.tap, and does --include match?)")
    return save_dump(file, recorder.tensors, {}, token_ids=token_ids, backend=backend, producer="impnb",
                     model=model, model_sha=model_sha, commit=source_commit())


def save_dump(file: str, tensors: dict, partial: dict, *, token_ids, backend: str, producer: str, model: str = "",
              model_sha: str = "", commit: str = "", order: list | None = None, extra: dict | None = None) -> dict:
    """Write full ``tensors`` {key: array} and ``partial`` {key: Corners} with a manifest; returns the manifest."""
    from safetensors.numpy import save_file
    taps = list(order) if order is not None else list(tensors) + [k for k in partial if k not in tensors]
    manifest = {"format_version": FORMAT_VERSION, "producer": producer, "model": model, "model_hash": model_sha,
                "token_ids": None if token_ids is None else [int(t) for t in token_ids], "backend": backend,
                "commit": commit, "dtype": "float32", "taps": taps, **(extra or {})}
    arrays = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in tensors.items()}
    if partial:
        manifest["partial_taps"] = {k: {"shape": list(c.shape), "print_abs": c.print_abs,
                                        "sum_print_abs": c.sum_print_abs} for k, c in partial.items()}
        for k, c in partial.items():
            arrays[f"{k}#corner_index"] = np.ascontiguousarray(c.index, dtype=np.int64)
            arrays[f"{k}#corner_value"] = np.ascontiguousarray(c.values, dtype=np.float64)
            arrays[f"{k}#sum"] = np.array([] if c.total is None else [c.total], np.float64)  # [0]: not printed
    save_file(arrays, file, metadata={_META_KEY: json.dumps(manifest)})
    return manifest


def load(file: str) -> Dump:
    from safetensors import safe_open
    if not os.path.isfile(file):
        raise FileNotFoundError(f"golden dump {file!r} does not exist")
    try:
        with safe_open(file, framework="numpy") as f:
            meta = (f.metadata() or {}).get(_META_KEY)
            if meta is None:
                raise ValueError(f"{file}: not an impnb golden dump (no '{_META_KEY}' manifest); {REGENERATE_HINT}")
            manifest = json.loads(meta)
            version = manifest.get("format_version")
            if version != FORMAT_VERSION:
                raise ValueError(f"{file}: golden format version {version}, this impnb reads version "
                                 f"{FORMAT_VERSION}; {REGENERATE_HINT}")
            partial_meta = manifest.get("partial_taps", {})
            tensors = {k: f.get_tensor(k) for k in manifest["taps"] if k not in partial_meta}
            partial = {k: _corners(f, k, m) for k, m in partial_meta.items()}
    except (OSError, json.JSONDecodeError, KeyError) as exc:
        raise ValueError(f"{file}: unreadable golden dump ({type(exc).__name__}: {exc})") from None
    return Dump(manifest, tensors, partial)


def _corners(f, key: str, meta: dict) -> Corners:
    total = f.get_tensor(f"{key}#sum")
    return Corners(tuple(meta["shape"]), f.get_tensor(f"{key}#corner_index"), f.get_tensor(f"{key}#corner_value"),
                   float(total[0]) if total.size else None, float(meta["print_abs"]),
                   float(meta.get("sum_print_abs", 0.0)))


from .diff import TapDiff, compare, format_table, plot_growth  # noqa: E402  (the diff needs Dump and Corners)
from .cli import main  # noqa: E402

__all__ = ["GoldenRecorder", "Dump", "Corners", "TapDiff", "save", "save_dump", "load", "compare", "format_table",
           "plot_growth", "model_hash", "main"]
