"""A bounded, validating parser for the GGUF container (header, metadata, tensor infos, data region).

Layout (GGUF v2/v3, little-endian; https://github.com/ggml-org/ggml/blob/master/docs/gguf.md):

    magic "GGUF" | u32 version | u64 n_tensors | u64 n_kv
    n_kv x      (string key, u32 value_type, value)
    n_tensors x (string name, u32 n_dims, u64 ne[n_dims], u32 ggml_type, u64 offset)
    padding to `general.alignment` (default 32) | tensor data (each tensor at data_start + offset)

    string = u64 length + UTF-8 bytes;  array = u32 element_type + u64 count + elements.

Why our own parser rather than `gguf.GGUFReader`: the reader walks every array element in Python (10.6 s for
Gemma-3-270M's 262k-token vocabulary, measured) and, for a numeric array whose count runs past the end of the
file, loops forever appending empty views (its `_get` returns a 0-byte slice, so the cursor never moves). Here
every count is checked against the bytes that remain BEFORE anything is allocated or iterated, numeric arrays are
read with one `np.frombuffer`, and each check failure raises `FormatError` naming the file and the key/tensor.
The `gguf` package still supplies the type tables and the dequantizers, and the tests cross-check this parser
against `GGUFReader` on both real models.

Memory bound: the file is memory-mapped read-only; metadata values are at most proportional to the file size
(every count is bounded by the remaining bytes divided by the element's minimum size).

Dimension legend: ne = GGUF's dimension order (ne[0] is the contiguous, fastest-varying axis); NumPy shape is
ne reversed, so a linear weight with ne = [in_features, out_features] is [out_features, in_features].
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

from ..errors import FormatError

GGUF_MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)   # v1 used u32 counts; no file in use still has it
DEFAULT_ALIGNMENT = 32
MAX_DIMS = 4                  # GGML_MAX_DIMS
MAX_NAME_BYTES = 1 << 16      # generous bound on keys and tensor names
MAX_ARRAY_DEPTH = 2           # arrays of arrays are legal; deeper nesting is not used by any writer
MAX_ARRAY_ELEMENTS = 1 << 23  # per array; Gemma-3's 262k-token vocabulary and 514k merges are far below
MAX_METADATA_ELEMENTS = 1 << 24   # all arrays together: Python holds each element in about 32 bytes

# value type id -> (struct format, NumPy dtype); 8 = string and 9 = array are handled separately
_SCALAR = {
    0: ("<B", "<u1"), 1: ("<b", "<i1"), 2: ("<H", "<u2"), 3: ("<h", "<i2"), 4: ("<I", "<u4"),
    5: ("<i", "<i4"), 6: ("<f", "<f4"), 7: ("<?", "u1"), 10: ("<Q", "<u8"), 11: ("<q", "<i8"), 12: ("<d", "<f8"),
}
_STRING, _ARRAY = 8, 9
VALUE_TYPE_NAMES = {0: "u8", 1: "i8", 2: "u16", 3: "i16", 4: "u32", 5: "i32", 6: "f32", 7: "bool", 8: "string",
                    9: "array", 10: "u64", 11: "i64", 12: "f64"}


@dataclass(frozen=True)
class TensorInfo:
    """One tensor's entry in the header. `ne` is GGUF order; `shape` (ne reversed) is NumPy order."""

    name: str
    ne: tuple[int, ...]
    ggml_type: GGMLQuantizationType
    offset: int       # absolute byte offset in the file
    nbytes: int

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(reversed(self.ne))

    @property
    def n_elements(self) -> int:
        return int(np.prod(self.ne, dtype=object)) if self.ne else 1


@dataclass
class GGUFHeader:
    path: str
    version: int
    metadata: dict
    metadata_types: dict      # key -> type name ("u32", "string", "array[f32]", ...)
    tensors: list[TensorInfo]
    alignment: int
    data_start: int
    file_size: int


class _Cursor:
    """Reads little-endian values from a buffer, refusing to step past its end."""

    def __init__(self, buf: memoryview, path: str):
        self.buf, self.path, self.pos, self.size = buf, path, 0, len(buf)
        self.elements_left = MAX_METADATA_ELEMENTS

    def fail(self, what: str) -> FormatError:
        return FormatError(f"{self.path}: {what} (at byte {self.pos} of {self.size})")

    def need(self, n: int, what: str) -> None:
        if n < 0 or self.pos + n > self.size:
            raise self.fail(f"truncated: {what} needs {n} bytes, {self.size - self.pos} remain")

    def scalar(self, fmt: str, what: str):
        n = struct.calcsize(fmt)
        self.need(n, what)
        value = struct.unpack_from(fmt, self.buf, self.pos)[0]
        self.pos += n
        return value

    def string(self, what: str, max_bytes: int | None = None) -> str:
        n = self.scalar("<Q", f"{what} length")
        if max_bytes is not None and n > max_bytes:
            raise self.fail(f"{what}: length {n} exceeds the limit {max_bytes}")
        self.need(n, what)
        raw = self.buf[self.pos:self.pos + n]
        self.pos += n
        try:
            return str(raw, "utf-8")
        except UnicodeDecodeError as e:
            raise self.fail(f"{what}: not valid UTF-8 ({e.reason})") from None

    def numeric_array(self, dtype: str, count: int, what: str) -> list:
        width = np.dtype(dtype).itemsize
        self.need(count * width, what)
        values = np.frombuffer(self.buf, dtype=dtype, count=count, offset=self.pos)
        self.pos += count * width
        return values.tolist()


def _read_value(cur: _Cursor, vtype: int, what: str, depth: int = 0):
    """One metadata value of type `vtype` -> (plain Python value, type name)."""
    if vtype in _SCALAR:
        return cur.scalar(_SCALAR[vtype][0], what), VALUE_TYPE_NAMES[vtype]
    if vtype == _STRING:
        return cur.string(what), "string"
    if vtype != _ARRAY:
        raise cur.fail(f"{what}: unknown value type {vtype}")
    if depth >= MAX_ARRAY_DEPTH:
        raise cur.fail(f"{what}: arrays nested deeper than {MAX_ARRAY_DEPTH}")
    etype = cur.scalar("<I", f"{what} element type")
    count = cur.scalar("<Q", f"{what} element count")
    min_width = struct.calcsize(_SCALAR[etype][0]) if etype in _SCALAR else 8 if etype == _STRING else 12
    if etype not in _SCALAR and etype not in (_STRING, _ARRAY):
        raise cur.fail(f"{what}: unknown array element type {etype}")
    if count * min_width > cur.size - cur.pos:
        raise cur.fail(f"{what}: {count} elements cannot fit in the {cur.size - cur.pos} bytes that remain")
    cur.elements_left -= count
    if count > MAX_ARRAY_ELEMENTS or cur.elements_left < 0:
        raise cur.fail(f"{what}: {count} elements is over the limit of {MAX_ARRAY_ELEMENTS} per array and "
                       f"{MAX_METADATA_ELEMENTS} in all")
    if etype in _SCALAR:
        tname = VALUE_TYPE_NAMES[etype]
        values = cur.numeric_array(_SCALAR[etype][1], count, f"{what} elements")
        return ([bool(v) for v in values] if tname == "bool" else values), f"array[{tname}]"
    items, inner = [], VALUE_TYPE_NAMES[etype]
    for i in range(count):
        value, inner = _read_value(cur, etype, f"{what}[{i}]", depth + 1)
        items.append(value)
    return items, f"array[{inner}]"


def _read_tensor_info(cur: _Cursor, index: int) -> tuple[str, tuple[int, ...], int, int]:
    name = cur.string(f"tensor #{index} name", MAX_NAME_BYTES)
    n_dims = cur.scalar("<I", f"tensor {name!r} n_dims")
    if not 1 <= n_dims <= MAX_DIMS:
        raise cur.fail(f"tensor {name!r}: n_dims {n_dims} outside 1..{MAX_DIMS}")
    ne = tuple(cur.scalar("<Q", f"tensor {name!r} ne[{d}]") for d in range(n_dims))
    raw_type = cur.scalar("<I", f"tensor {name!r} type")
    offset = cur.scalar("<Q", f"tensor {name!r} offset")
    return name, ne, raw_type, offset


def _tensor_nbytes(path: str, name: str, ne: tuple[int, ...], raw_type: int, limit: int) -> tuple:
    """Validate type and shape; -> (GGMLQuantizationType, nbytes). Python ints, so no overflow."""
    try:
        qtype = GGMLQuantizationType(raw_type)
        block, type_size = GGML_QUANT_SIZES[qtype]
    except (ValueError, KeyError):
        raise FormatError(f"{path}: tensor {name!r} has unknown ggml type {raw_type}") from None
    bound = 1
    for d in ne:   # zero-size dimensions count as 1 here, so one of them cannot hide a huge other one
        bound *= max(d, 1)
        if bound > limit * block:   # cannot fit in the file whatever the type: stop before the product grows
            raise FormatError(f"{path}: tensor {name!r} shape {list(ne)} holds more data than the file")
    n = 1
    for d in ne:
        n *= d
    if ne[0] % block:
        raise FormatError(f"{path}: tensor {name!r} ({qtype.name}) ne[0]={ne[0]} is not a multiple of its "
                          f"block size {block}")
    return qtype, n // block * type_size


def _check_layout(path: str, infos: list[TensorInfo], data_start: int, file_size: int, alignment: int) -> None:
    """Every tensor aligned, inside the data region, and every pair of data ranges disjoint: sorted by offset, each
    non-empty range must start at or after the furthest end seen so far (zero-size tensors take no bytes, so one
    between two overlapping tensors cannot hide them)."""
    spans = []
    for t in infos:
        rel = t.offset - data_start
        if rel % alignment:
            raise FormatError(f"{path}: tensor {t.name!r} offset {rel} is not a multiple of alignment {alignment}")
        if t.offset + t.nbytes > file_size:
            raise FormatError(f"{path}: tensor {t.name!r} data [{t.offset}, {t.offset + t.nbytes}) runs past the "
                              f"end of the file ({file_size} bytes)")
        if t.nbytes:
            spans.append((t.offset, t.offset + t.nbytes, t.name))
    spans.sort()
    furthest = None   # (end, name) of the range that reaches furthest so far
    for begin, end, name in spans:
        if furthest is not None and begin < furthest[0]:
            raise FormatError(f"{path}: tensors {furthest[1]!r} (ending at {furthest[0]}) and {name!r} "
                              f"[{begin}, {end}) overlap")
        if furthest is None or end > furthest[0]:
            furthest = (end, name)


def _read_metadata(cur: _Cursor, n_kv: int) -> tuple[dict, dict]:
    metadata, types = {}, {}
    for i in range(n_kv):
        key = cur.string(f"metadata key #{i}", MAX_NAME_BYTES)
        if key in metadata:
            raise cur.fail(f"duplicate metadata key {key!r}")
        vtype = cur.scalar("<I", f"metadata {key!r} type")
        metadata[key], types[key] = _read_value(cur, vtype, f"metadata {key!r}")
    return metadata, types


def _alignment(path: str, metadata: dict, types: dict) -> int:
    if "general.alignment" not in metadata:
        return DEFAULT_ALIGNMENT
    value = metadata["general.alignment"]
    if types["general.alignment"] != "u32" or value == 0 or value & (value - 1):
        raise FormatError(f"{path}: general.alignment must be a non-zero power of two u32, got {value!r}")
    return value


def parse_header(buf, path: str | Path) -> GGUFHeader:
    """Parse and validate everything up to the tensor data; `buf` is the whole file (bytes-like)."""
    path = str(path)
    cur = _Cursor(memoryview(buf).cast("B"), path)
    cur.need(4, "magic")
    if bytes(cur.buf[:4]) != GGUF_MAGIC:
        raise cur.fail(f"not a GGUF file: magic {bytes(cur.buf[:4])!r}, expected {GGUF_MAGIC!r}")
    cur.pos = 4
    version = cur.scalar("<I", "version")
    if version & 0xFFFF == 0 and version:
        raise cur.fail("big-endian GGUF files are not supported")
    if version not in SUPPORTED_VERSIONS:
        raise cur.fail(f"GGUF version {version} is not supported (supported: {SUPPORTED_VERSIONS})")
    n_tensors = cur.scalar("<Q", "tensor count")
    n_kv = cur.scalar("<Q", "metadata count")
    # each KV needs >= 8 (key len) + 4 (type) + 1 bytes; each tensor info >= 8 + 4 + 8 + 4 + 8
    if n_kv * 13 + n_tensors * 32 > cur.size - cur.pos:
        raise cur.fail(f"{n_kv} metadata entries and {n_tensors} tensors cannot fit in the file")
    metadata, types = _read_metadata(cur, n_kv)
    raw_infos = [_read_tensor_info(cur, i) for i in range(n_tensors)]
    alignment = _alignment(path, metadata, types)
    data_start = -(-cur.pos // alignment) * alignment
    infos, seen = [], set()
    for name, ne, raw_type, offset in raw_infos:
        if name in seen:
            raise FormatError(f"{path}: duplicate tensor name {name!r}")
        seen.add(name)
        qtype, nbytes = _tensor_nbytes(path, name, ne, raw_type, cur.size)
        infos.append(TensorInfo(name, ne, qtype, data_start + offset, nbytes))
    _check_layout(path, infos, data_start, cur.size, alignment)
    return GGUFHeader(path, version, metadata, types, infos, alignment, data_start, cur.size)
