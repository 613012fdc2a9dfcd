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
Every malformed input raises impnb.FormatError; a valid but unsupported one raises impnb.Unsupported. Before any
tensor is read, the config's fields are checked (impnb/config_validate.py) and the tensor table as a whole
(impnb/loaders/tables.py: dense dtypes, one source per weight); ``check_config_against_tensors(ckpt)`` then checks
the config against the tensor shapes (impnb.load_model and the quantizer call it before building anything).
"""
from __future__ import annotations

import dataclasses

from dataclasses import dataclass, field
from pathlib import Path

from ..errors import FormatError, Unsupported
from .jsonfile import read_json_file
from .quant import QuantReport, assemble, detect_scheme
from .safetensors import SafetensorsFile, read_safetensors, save_safetensors
from .shards import INDEX_NAME, SafetensorsCheckpoint, open_safetensors
from .tables import check_unique_sources, shape_table

__all__ = ["Checkpoint", "load_checkpoint", "check_config_against_tensors", "open_safetensors", "read_safetensors", "save_safetensors",
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


def _model_config(raw: dict | None, kind: str, source: str):
    """impnb.config.ModelConfig (an unknown architecture raises there, listing the supported ones); None
    without a config."""
    if raw is None:
        return None
    from ..config import ModelConfig
    return ModelConfig.from_hf(raw, source) if kind == "hf" else ModelConfig.from_gguf(raw, source)


def check_config_against_tensors(ckpt: Checkpoint) -> None:
    """vocab / hidden / heads x head_dim / layer count / experts of ``ckpt.config`` against the tensor shapes
    (no tensor is read); a mismatch is an impnb.ConfigError naming the config file and the tensor."""
    if ckpt.config is None:
        return
    from ..config_validate import check_tensor_shapes
    where = ckpt.path if ckpt.format == "gguf" else _directory(ckpt.path) / "config.json"
    check_tensor_shapes(ckpt.config, shape_table(ckpt.tensors), str(where))


def _directory(path: Path) -> Path:
    return path if path.is_dir() else path.parent


def _load_safetensors(path: Path, directory: Path) -> Checkpoint:
    raw = read_json_file(directory / "config.json")
    hq = read_json_file(directory / "hf_quant_config.json")
    config = _model_config(raw, "hf", str(directory / "config.json"))  # fields checked before any tensor is read
    scheme = detect_scheme(raw, hq)
    st = open_safetensors(path)
    check_unique_sources(st.infos, str(path))
    tensors, report = assemble(st.infos, st.tensor, scheme, str(path))
    check_unique_sources(tensors, str(path))
    return Checkpoint(path, "safetensors", tensors, raw, config,
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
    config = _model_config(metadata, "gguf", str(path))
    check_unique_sources(tensors, str(path))  # e.g. a fused ssm_in beside the split attn_qkv / attn_gate
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
