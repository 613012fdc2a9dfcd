"""The quantizer's input: a GGUF file, an HF checkpoint directory, or an installed model package's name
(resolved by impnb.api.resolve_model_path, as for ``python -m impnb.generate``).

Whatever the source, the quantizer sees the same ``Source``: HF-named, HF-oriented tensors (a GGUF file goes
through impnb.loaders.gguf, which renames tensors and undoes llama.cpp's converter transforms: the Llama Q/K row
permutation, Gemma's stored 1 + w norms), an HF ``config.json`` dict (built from the ModelConfig for a GGUF source),
and the tokenizer / generation files to write beside the weights.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import numpy as np

from ..errors import FormatError, Unsupported

# Files of an HF checkpoint directory copied verbatim into the quantized one (when present).
HF_SIDE_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja",
                 "chat_template.json", "generation_config.json", "tokenizer.model", "vocab.json", "merges.txt")

@dataclass
class Source:
    path: Path
    kind: str                        # "gguf" | "hf"
    config: dict                     # HF config.json (no quantization_config)
    model_config: object             # impnb.config.ModelConfig
    tensors: Mapping                 # HF name -> array (float32 / bf16 / f16 views, or lazily dequantized)
    files: dict = field(default_factory=dict)  # file name -> bytes, written beside the weights
    checkpoint: object = None        # the impnb.loaders.Checkpoint it came from

    def shapes(self) -> dict[str, tuple]:
        shape_of = getattr(self.tensors, "shape", None)
        return {n: tuple(shape_of(n)) if shape_of else tuple(self.tensors[n].shape) for n in self.tensors}

    def float32(self, name: str) -> np.ndarray:
        return np.asarray(self.tensors[name]).astype(np.float32)

    def materialize(self) -> "Source":
        """Load every tensor now (a GGUF source dequantizes once), e.g. to write several layouts from one read."""
        self.tensors = {name: np.asarray(self.tensors[name]) for name in self.tensors}
        return self


def load_source(spec: str) -> Source:
    from ..api import resolve_model_path
    from ..loaders import load_checkpoint
    path = resolve_model_path(spec)
    ckpt = load_checkpoint(path)
    if ckpt.format != "gguf" and ckpt.quantization is not None:  # GGUF tensors are dequantized by the reader
        raise Unsupported(f"{path} is already quantized ({ckpt.quantization}); quantize an unquantized checkpoint")
    if ckpt.config is None:
        raise FormatError(f"{path}: no config.json (or GGUF metadata) to take the architecture from")
    from ..loaders import check_config_against_tensors
    check_config_against_tensors(ckpt)
    if ckpt.format == "gguf":
        return _from_gguf(path, ckpt)
    return _from_hf(path, ckpt)


def _from_gguf(path: Path, ckpt) -> Source:
    from .hf_config import hf_config
    from .tokenizer_files import gguf_tokenizer_files
    mc = ckpt.config
    tensors = _drop_gguf_only(ckpt.tensors)
    config = hf_config(mc)
    # llama.cpp drops output.weight when the head is tied; transformers needs the flag to tie it back
    config["tie_word_embeddings"] = "lm_head.weight" not in tensors
    files = gguf_tokenizer_files(ckpt, mc)
    return Source(path, "gguf", config, mc, tensors, files, ckpt)


class _Subset(Mapping):
    """A lazy mapping restricted to some keys (GGUF tensors are dequantized on access)."""

    def __init__(self, base, keys):
        self._base, self._keys = base, list(keys)

    def __getitem__(self, name):
        if name not in self._keys:
            raise KeyError(name)
        return self._base[name]

    def __iter__(self):
        return iter(self._keys)

    def __contains__(self, name):  # Mapping's default would load (dequantize) the tensor to answer
        return name in self._keys

    def __len__(self):
        return len(self._keys)

    def shape(self, name):
        shape_of = getattr(self._base, "shape", None)
        return shape_of(name) if shape_of else self._base[name].shape


def _drop_gguf_only(tensors) -> Mapping:
    """GGUF-only tensors have no HF counterpart: llama3 ``rope_freqs`` is recomputed from config.json's rope
    parameters by HF loaders. Anything the GGUF name table did not map is refused (never dropped silently)."""
    keep = []
    for name in tensors:
        if name == "model.rope_freqs.weight":
            continue
        if not name.startswith(("model.", "lm_head.")):
            raise Unsupported(f"GGUF tensor {name!r} has no HF name; this checkpoint cannot be converted")
        keep.append(name)
    return _Subset(tensors, keep)


def _from_hf(path: Path, ckpt) -> Source:
    directory = path if path.is_dir() else path.parent
    config = dict(ckpt.raw_config)
    config.pop("quantization_config", None)
    files = {name: (directory / name).read_bytes() for name in HF_SIDE_FILES if (directory / name).is_file()}
    for name, arr in ckpt.tensors.items():
        if not isinstance(arr, np.ndarray) or arr.dtype.kind not in "fV" and "bfloat16" not in str(arr.dtype):
            raise Unsupported(f"{path}: tensor {name!r} is {type(arr).__name__} {getattr(arr, 'dtype', '')}; "
                              f"the quantizer takes float checkpoints")
    return Source(path, "hf", config, ckpt.config, ckpt.tensors, files, ckpt)
