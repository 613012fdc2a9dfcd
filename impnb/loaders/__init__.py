"""load_checkpoint(path): one entry point for every checkpoint impnb reads.

    path                                        format        what is read
    model.gguf (a file, or a dir holding one)   "gguf"        impnb.loaders.gguf.read_gguf: metadata, tensors, tokenizer
    x.safetensors (a file)                      "safetensors" that file (+ config.json beside it, if present)
    a directory with config.json and            "safetensors" model.safetensors.index.json if present (validated),
      *.safetensors                                           else every *.safetensors (names unique across them)

Checkpoint fields:
    path          the path given (a Path)
    format        "safetensors" | "gguf"
    raw_config    config.json as a dict (safetensors) or the GGUF metadata dict
    config        impnb.config.ModelConfig built from raw_config (None when there is no config.json)
    quantization  safetensors: None | "nvfp4-compressed-tensors" | "nvfp4-modelopt" | "mxfp4-compressed-tensors" |
                  "mxfp4-modelopt" | "mxfp4-gpt-oss" (see impnb.loaders.quant); GGUF: "gguf-<general.file_type>",
                  e.g. "gguf-Q4_1" (informational: the GGUF reader dequantizes per tensor)
    tensors       name -> NumPy array (zero-copy mmap view) | NVFP4Tensor | tuple of NVFP4Tensor (stacked experts) |
                  MXFP4Tensor. Safetensors names are the checkpoint's own; GGUF names are the GGUF reader's.
    metadata      the safetensors "__metadata__" (merged over shards), or {} for GGUF
    tokenizer     the GGUF reader's tokenizer info (None for safetensors: see impnb.tokenizer)
    report        impnb.loaders.quant.QuantReport (quantized modules, unusable global scales, fused mismatches)
    source        the reader object (SafetensorsCheckpoint, or the GGUF reader's file) for raw access
Every malformed input raises impnb.FormatError; a valid but unsupported one raises impnb.Unsupported.
"""
from __future__ import annotations

import dataclasses

from dataclasses import dataclass, field
from pathlib import Path

from ..errors import FormatError, Unsupported
from .quant import QuantReport, assemble, detect_scheme
from .safetensors import MAX_HEADER_BYTES, SafetensorsFile, parse_json_object, read_safetensors, save_safetensors
from .shards import INDEX_NAME, SafetensorsCheckpoint, open_safetensors

__all__ = ["Checkpoint", "load_checkpoint", "open_safetensors", "read_safetensors", "save_safetensors",
           "SafetensorsFile", "SafetensorsCheckpoint"]

GGUF_MAGIC = b"GGUF"


@dataclass
class Checkpoint:
    """What load_checkpoint returns; the fields are described in the module docstring."""

    path: Path
    format: str
    tensors: dict
    raw_config: dict | None = None
    config: object = None
    quantization: str | None = None
    metadata: dict = field(default_factory=dict)
    tokenizer: object = None
    report: QuantReport = field(default_factory=QuantReport)
    source: object = field(default=None, repr=False)

    def __repr__(self) -> str:
        arch = getattr(self.config, "arch", None) or (self.raw_config or {}).get("model_type")
        return (f"Checkpoint({str(self.path)!r}, format={self.format!r}, arch={arch!r}, "
                f"quantization={self.quantization!r}, {len(self.tensors)} tensors)")


def load_checkpoint(path) -> Checkpoint:
    """Read a GGUF file, a .safetensors file, or a checkpoint directory (see the module docstring)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}")
    if path.is_dir():
        return _load_directory(path)
    if _is_gguf(path):
        return _load_gguf(path)
    if path.suffix == ".safetensors":
        return _load_safetensors(path, path.parent)
    raise FormatError(f"{path}: neither GGUF (magic {GGUF_MAGIC!r}) nor a .safetensors file")


def _is_gguf(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(4) == GGUF_MAGIC
    except OSError as exc:
        raise FormatError(f"{path}: cannot read ({exc})") from None


def _load_directory(path: Path) -> Checkpoint:
    has_safetensors = (path / INDEX_NAME).is_file() or any(path.glob("*.safetensors"))
    if has_safetensors:
        return _load_safetensors(path, path)
    ggufs = sorted(p for p in path.glob("*.gguf") if p.is_file())
    if len(ggufs) == 1:
        return _load_gguf(ggufs[0])
    if ggufs:
        raise FormatError(f"{path}: {len(ggufs)} GGUF files ({', '.join(p.name for p in ggufs)}); pass one of them")
    if any(path.glob("*.bin")) or any(path.glob("*.pt")) or any(path.glob("*.pth")):
        raise Unsupported(f"{path}: PyTorch pickle checkpoints (*.bin, *.pt) are not loaded (unpickling runs "
                          f"code); convert them to safetensors")
    raise FormatError(f"{path}: no *.safetensors, {INDEX_NAME} or *.gguf inside")


def _read_json(path: Path):
    if not path.is_file():
        return None
    if path.stat().st_size > MAX_HEADER_BYTES:
        raise FormatError(f"{path}: {path.stat().st_size} bytes is too large for a config file")
    return parse_json_object(path, path.read_bytes(), path.name)


def _model_config(raw: dict | None, source: str):
    """impnb.config.ModelConfig (an unknown architecture raises there, listing the supported ones); None
    without a config."""
    if raw is None:
        return None
    from ..config import ModelConfig
    return ModelConfig.from_hf(raw) if source == "hf" else ModelConfig.from_gguf(raw)


def _load_safetensors(path: Path, directory: Path) -> Checkpoint:
    raw = _read_json(directory / "config.json")
    hq = _read_json(directory / "hf_quant_config.json")
    scheme = detect_scheme(raw, hq)
    st = open_safetensors(path)
    tensors, report = assemble(st.infos, st.tensor, scheme)
    return Checkpoint(path, "safetensors", tensors, raw, _model_config(raw, "hf"),
                      scheme.name if scheme else None, st.metadata, None, report, st)


def _load_gguf(path: Path) -> Checkpoint:
    try:
        from .gguf import read_gguf
    except ModuleNotFoundError as exc:
        if exc.name != "impnb.loaders.gguf":
            raise
        raise FormatError(f"{path}: GGUF support (impnb.loaders.gguf) is not available ({exc})") from None
    source = read_gguf(path)
    metadata, tensors, tokenizer = source
    config = _model_config(metadata, "gguf")
    if config is not None:  # GGUF has no tie flag: llama.cpp's converter omits output.weight when the head is tied
        config = dataclasses.replace(config, tie_embeddings="lm_head.weight" not in tensors)
    return Checkpoint(path, "gguf", tensors, metadata, config, _gguf_file_type(metadata),
                      {}, tokenizer, QuantReport(), source)


def _gguf_file_type(metadata: dict) -> str | None:
    code = metadata.get("general.file_type")
    try:
        import gguf
        return "gguf-" + gguf.LlamaFileType(code).name.removeprefix("MOSTLY_")
    except (ImportError, ValueError, TypeError):
        return None if code is None else f"gguf-file-type-{code}"
