"""GGUF checkpoints -> metadata, canonical (HF-named, HF-oriented) float32 tensors, tokenizer description.

    gf = read_gguf("model.gguf")
    gf.architecture            # "llama", "gemma3", ... (general.architecture)
    gf.metadata                # every KV pair as plain Python values ("llama.block_count": 30, ...)
    gf.tensors["model.layers.0.self_attn.q_proj.weight"]   # float32 [out_features, in_features], dequantized
    gf.raw("blk.0.attn_q.weight")                          # the stored bytes, GGUF-named, never transformed
    gf.tokenizer_info          # the tokenizer.* keys without the "tokenizer." prefix ("ggml.tokens", ...)

Legend: ne = GGUF dimension order (ne[0] contiguous); NumPy shape = ne reversed, so a linear weight is
[out_features, in_features] exactly as in Hugging Face checkpoints. n_head / n_kv = attention / KV head count,
hd = head_dim (rows per head in q_proj / k_proj).

`.tensors` is a lazy mapping: each access dequantizes that tensor (gguf.quants, verified block by block against
our own reading of the layouts in tests/test_gguf.py) and applies the converter's value transforms in reverse
(names.py lists them). Nothing is cached: a caller that wants a tensor twice keeps it.
"""
from __future__ import annotations

import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType
from gguf.quants import dequantize as _gguf_dequantize

from ..errors import FormatError, Unsupported
from . import names
from .gguf_format import GGUFHeader, TensorInfo, parse_header

__all__ = ["GGUFFile", "read_gguf", "dequantize", "undo_qk_permutation", "TensorInfo"]

# The ggml types the issue requires; other types the gguf package can dequantize are accepted too.
REQUIRED_TYPES = ("F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q4_K", "Q5_K", "Q6_K")
_PLAIN = {GGMLQuantizationType.F32: "<f4", GGMLQuantizationType.F16: "<f2"}
_INTEGER_TYPES = frozenset(GGMLQuantizationType[n] for n in ("I8", "I16", "I32", "I64")
                           if n in GGMLQuantizationType.__members__)
_BLOCKS_PER_CHUNK = 1 << 14   # 512 Ki values of a 32-value type per gguf.quants call (faster than one call)
_BLOCKS_PER_ROW = 64          # blocks per row handed to gguf.quants (it loops over groups of 16 rows)


def dequantize(raw: np.ndarray, ggml_type: GGMLQuantizationType, shape: tuple[int, ...], where: str = "") -> np.ndarray:
    """Stored bytes (uint8, any shape) of one tensor -> float32 array of NumPy `shape`."""
    flat = np.ascontiguousarray(raw).reshape(-1)
    if ggml_type in _PLAIN:
        return flat.view(_PLAIN[ggml_type]).astype(np.float32).reshape(shape)
    block, type_size = GGML_QUANT_SIZES[ggml_type]
    blocks = flat.reshape(-1, type_size)                    # [n_blocks, type_size]
    out = np.empty((blocks.shape[0], block), dtype=np.float32)
    # in chunks: gguf.quants' temporaries are several times its output (Gemma-3's 262k x 640 embedding)
    for start in range(0, blocks.shape[0], _BLOCKS_PER_CHUNK):
        stop = min(start + _BLOCKS_PER_CHUNK, blocks.shape[0])
        whole = start + (stop - start) // _BLOCKS_PER_ROW * _BLOCKS_PER_ROW
        try:
            _dequantize_rows(blocks[start:whole], ggml_type, out[start:whole], _BLOCKS_PER_ROW)
            _dequantize_rows(blocks[whole:stop], ggml_type, out[whole:stop], 1)
        except NotImplementedError:
            raise Unsupported(f"{where}: ggml type {ggml_type.name} cannot be dequantized "
                              f"(supported at least: {', '.join(REQUIRED_TYPES)})") from None
    return out.reshape(shape)


def _dequantize_rows(blocks: np.ndarray, ggml_type, out: np.ndarray, per_row: int) -> None:
    """gguf.quants over ``blocks`` [n, type_size] viewed as rows of ``per_row`` blocks: it works on groups of 16
    rows, so one block per row would mean one NumPy round per 16 blocks. Every block is decoded on its own, so the
    grouping changes nothing in the values."""
    if blocks.shape[0]:
        rows = blocks.reshape(-1, per_row * blocks.shape[1])
        out[...] = _gguf_dequantize(rows, ggml_type).reshape(out.shape)


def undo_qk_permutation(w: np.ndarray, n_heads: int, where: str = "") -> np.ndarray:
    """Undo llama.cpp's Q/K row permutation (rows are the first axis; works for weights and biases).

    HF keeps each head's rotary pairs as (first half, second half): row h*hd + j*(hd/2) + i is component j of
    pair i. llama.cpp's converter interleaves them for its "normal" RoPE: GGUF row h*hd + 2*i + j holds that
    same row. So original[h, j, i] = gguf[h, i, j] with the head's rows viewed as [hd/2, 2] in GGUF.
    """
    rows = w.shape[0]
    if n_heads <= 0 or rows % (2 * n_heads):
        raise FormatError(f"{where}: {rows} rows cannot be split into {n_heads} heads of rotary pairs")
    half = rows // n_heads // 2
    heads = w.reshape(n_heads, half, 2, *w.shape[1:])      # [n_head, hd/2, 2, ...] as stored
    return np.ascontiguousarray(heads.swapaxes(1, 2)).reshape(w.shape)


@dataclass
class GGUFFile:
    """A parsed, validated GGUF file. The memory map stays open while this object (or a raw view) lives."""

    path: str
    header: GGUFHeader
    architecture: str
    canonical: dict = field(default_factory=dict)   # canonical name -> TensorInfo
    unmapped: list = field(default_factory=list)    # GGUF names kept as-is (no table entry)
    _buf: np.ndarray | None = None

    def __iter__(self):
        """`metadata, tensors, tokenizer_info = read_gguf(path)` unpacks like a tuple (impnb.loaders uses it)."""
        return iter((self.metadata, self.tensors, self.tokenizer_info))

    @property
    def metadata(self) -> dict:
        return self.header.metadata

    @property
    def tokenizer_info(self) -> dict:
        return {k[len("tokenizer."):]: v for k, v in self.metadata.items() if k.startswith("tokenizer.")}

    @property
    def tensor_infos(self) -> list[TensorInfo]:
        return self.header.tensors

    @property
    def tensors(self) -> "CanonicalTensors":
        return CanonicalTensors(self)

    def raw(self, gguf_name: str) -> np.ndarray:
        """The stored bytes of a tensor, uint8, shape [*shape[:-1], row_bytes]; a read-only view of the file."""
        info = next((t for t in self.header.tensors if t.name == gguf_name), None)
        if info is None:
            raise KeyError(f"{self.path}: no tensor {gguf_name!r}")
        return self._raw(info)

    def _raw(self, info: TensorInfo) -> np.ndarray:
        data = np.frombuffer(self._buf, dtype=np.uint8, count=info.nbytes, offset=info.offset)
        return data.reshape(*info.shape[:-1], -1) if info.nbytes else data

    def load(self, canonical_name: str) -> np.ndarray:
        """One canonical tensor as float32 in HF orientation, converter transforms undone."""
        info = self.canonical[canonical_name]
        where = f"{self.path}: tensor {info.name!r}"
        w = dequantize(self._raw(info), info.ggml_type, info.shape, where)
        return self._undo_converter(info.name, w, where)

    def _undo_converter(self, gguf_name: str, w: np.ndarray, where: str) -> np.ndarray:
        arch, stem = self.architecture, names.block_stem(gguf_name)
        if arch in names.HYBRID_ARCHS:
            from .gguf_hybrid import undo_converter
            return undo_converter(gguf_name, w, self.metadata, arch, where)
        if arch in names.PERMUTED_QK_ARCHS and stem and stem[1] in ("attn_q", "attn_k"):
            key = "head_count" if stem[1] == "attn_q" else "head_count_kv"
            w = undo_qk_permutation(w, self._per_layer(key, stem[0]), where)
        if arch in names.NORM_PLUS_ONE_ARCHS and gguf_name.endswith("norm.weight"):
            w = w - np.float32(1.0)
        return w

    def _per_layer(self, key: str, layer: int) -> int:
        """`<arch>.attention.<key>` for one layer (a scalar, or a per-layer array in some files)."""
        full = f"{self.architecture}.attention.{key}"
        value = self.metadata.get(full)
        if value is None and key == "head_count_kv":
            value = self.metadata.get(f"{self.architecture}.attention.head_count")
        if isinstance(value, list):
            value = value[layer] if layer < len(value) else None
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise FormatError(f"{self.path}: {full} must be a positive integer to undo the Q/K permutation, "
                              f"got {value!r}")
        return value


class CanonicalTensors(Mapping):
    """canonical name -> float32 array, dequantized on access (a `Mapping`, so `dict(gf.tensors)` loads all)."""

    def __init__(self, gf: GGUFFile):
        self._gf = gf

    def __getitem__(self, name: str) -> np.ndarray:
        if name not in self._gf.canonical:
            raise KeyError(f"{self._gf.path}: no tensor {name!r}")
        return self._gf.load(name)

    def __iter__(self) -> Iterator[str]:
        return iter(self._gf.canonical)

    def __len__(self) -> int:
        return len(self._gf.canonical)

    def shape(self, name: str) -> tuple[int, ...]:
        return self._gf.canonical[name].shape


def _map_names(path: str, arch: str, infos: list[TensorInfo]) -> tuple[dict, list]:
    canonical, unmapped = {}, []
    for info in infos:
        name = names.gguf_to_canonical(info.name, arch)
        if name is None:
            name = info.name
            unmapped.append(info.name)
        if name in canonical:
            raise FormatError(f"{path}: tensors {canonical[name].name!r} and {info.name!r} both map to {name!r}")
        canonical[name] = info
    return canonical, unmapped


def read_gguf(path: str | Path) -> GGUFFile:
    """Parse and validate a GGUF file; any malformation raises `impnb.FormatError` naming file and item."""
    path = str(path)
    try:
        buf = np.memmap(path, dtype=np.uint8, mode="r")
    except (ValueError, OSError) as e:   # an empty file cannot be mapped
        raise FormatError(f"{path}: cannot map the file as GGUF ({e})") from None
    header = parse_header(buf, path)
    arch = header.metadata.get("general.architecture")
    if not isinstance(arch, str) or not arch:
        raise FormatError(f"{path}: general.architecture is missing or not a string ({arch!r})")
    if arch not in names.VERIFIED_ARCHS:
        warnings.warn(f"{path}: GGUF architecture {arch!r} has not been verified for tensor naming and "
                      f"converter transforms (verified: {sorted(names.VERIFIED_ARCHS)})", stacklevel=2)
    for info in header.tensors:
        if info.ggml_type in _INTEGER_TYPES:
            raise FormatError(f"{path}: tensor {info.name!r} has ggml type {info.ggml_type.name}, an integer type: "
                              f"it cannot be a model weight")
    canonical, unmapped = _map_names(path, arch, header.tensors)
    if arch in names.HYBRID_ARCHS:
        from .gguf_hybrid import set_aside_mtp
        canonical = set_aside_mtp(canonical, header.metadata, arch)
    return GGUFFile(path, header, arch, canonical, unmapped, buf)
