"""Safetensors reader (validating, mmap, zero-copy NumPy views) and a small writer.

File layout (https://github.com/huggingface/safetensors, README "Format"):
    [0, 8)          N: unsigned 64-bit little-endian, the header length in bytes
    [8, 8+N)        header: UTF-8 JSON object
                      {"__metadata__": {str: str}?,  name: {"dtype": D, "shape": [d0, ...], "data_offsets": [b, e]}}
    [8+N, EOF)      data region; a tensor's bytes are data[b:e], little-endian, row-major

Why our own parser: the `safetensors` package cannot hand F8_E4M3 (or F8_E8M0 / F4) tensors to NumPy, and NVFP4
checkpoints store their block scales as F8_E4M3. Parsing the header ourselves also lets us validate it the way the
untrusted input requires, with every failure a FormatError naming the file and the tensor:
    - N read as a Python int (no overflow), N <= 32 MiB (MAX_HEADER_BYTES), N <= file size - 8;
    - strict UTF-8, strict JSON (no NaN/Infinity, no duplicate keys at any depth), a JSON object at the top;
    - "__metadata__" maps str -> str;
    - per tensor: exactly the keys dtype/shape/data_offsets, a known dtype, a shape that is a list of at most
      MAX_NDIM non-negative ints whose product fits int64, two int offsets (bools/floats/strings rejected) with
      0 <= b <= e <= data length and e - b == numel x bits / 8;
    - the tensors tile the data region exactly (no overlap, no hole, no trailing byte), as the format requires:
      a header length off by a few bytes, which would shift every tensor, cannot pass.
Validation holds O(header) memory: the data region is only mapped, never read.

Views: a tensor comes back as a read-only NumPy view into the file's mmap (no copy). NumPy dtypes:
    BF16 -> ml_dtypes.bfloat16, F8_E4M3 -> ml_dtypes.float8_e4m3fn, F8_E5M2 -> ml_dtypes.float8_e5m2,
    F8_E8M0 -> uint8 (raw exponent bytes, 2^(e-127)), F4 -> uint8 [..., d/2] (two E2M1 codes a byte, element 2i
    in the low nibble), F6_E2M3 / F6_E3M2 -> flat uint8 bytes, the rest their NumPy equivalents.
"""
from __future__ import annotations

import json
import math
import mmap
import os
from dataclasses import dataclass
from pathlib import Path

import ml_dtypes
import numpy as np

from ..errors import FormatError

MAX_HEADER_BYTES = 32 * 1024 * 1024   # real headers are < 2 MiB; a parsed header takes about 15x its size
MAX_NDIM = 16
MAX_JSON_DEPTH = 64                   # JSON side files nest a few levels (tokenizer.json's deepest is about 8)
INT64_MAX = 2**63 - 1

# safetensors dtype -> (bits per element, NumPy dtype of the view)
DTYPES: dict[str, tuple[int, np.dtype]] = {
    "BOOL": (8, np.dtype(np.bool_)),
    "U8": (8, np.dtype("u1")), "I8": (8, np.dtype("i1")),
    "U16": (16, np.dtype("<u2")), "I16": (16, np.dtype("<i2")),
    "U32": (32, np.dtype("<u4")), "I32": (32, np.dtype("<i4")),
    "U64": (64, np.dtype("<u8")), "I64": (64, np.dtype("<i8")),
    "F16": (16, np.dtype("<f2")), "F32": (32, np.dtype("<f4")), "F64": (64, np.dtype("<f8")),
    "C64": (64, np.dtype("<c8")),
    "BF16": (16, np.dtype(ml_dtypes.bfloat16)),
    "F8_E4M3": (8, np.dtype(ml_dtypes.float8_e4m3fn)),
    "F8_E5M2": (8, np.dtype(ml_dtypes.float8_e5m2)),
    "F8_E8M0": (8, np.dtype("u1")),
    "F4": (4, np.dtype("u1")),
    "F6_E2M3": (6, np.dtype("u1")), "F6_E3M2": (6, np.dtype("u1")),
}


class GapWarning(UserWarning):
    """A safetensors data region has bytes no tensor claims (legal, but worth knowing)."""


@dataclass(frozen=True)
class TensorInfo:
    """One header entry. begin/end are byte offsets into the data region."""
    name: str
    dtype: str
    shape: tuple[int, ...]
    begin: int
    end: int

    @property
    def nbytes(self) -> int:
        return self.end - self.begin

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


# ---------------------------------------------------------------------------------------------------- header


def _fail(path, msg, tensor=None) -> FormatError:
    where = f"{path}" + (f": tensor {tensor!r}" if tensor is not None else "")
    return FormatError(f"safetensors {where}: {msg}")


def _no_duplicates(pairs):
    obj = {}
    for key, value in pairs:
        if key in obj:
            raise ValueError(f"duplicate key {key!r} in a JSON object")
        obj[key] = value
    return obj


def _reject_constant(token):
    raise ValueError(f"non-standard JSON constant {token}")


def _header_length(path, head: bytes, file_size: int) -> int:
    if file_size < 8:
        raise _fail(path, f"file is {file_size} bytes, shorter than the 8-byte header length")
    n = int.from_bytes(head[:8], "little")  # a Python int: 2^64 - 1 cannot wrap around
    if n > MAX_HEADER_BYTES:
        raise _fail(path, f"header length {n} exceeds the {MAX_HEADER_BYTES}-byte cap")
    if n > file_size - 8:
        raise _fail(path, f"header length {n} exceeds the {file_size - 8} bytes after the length field")
    if n < 2:
        raise _fail(path, f"header length {n} is too short for a JSON object")
    return n


def parse_json_object(path, raw: bytes, what: str = "safetensors header", max_depth: int = MAX_JSON_DEPTH) -> dict:
    """Strict JSON: UTF-8, no duplicate keys at any depth, no NaN/Infinity, nesting at most ``max_depth`` deep,
    an object at the top."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FormatError(f"{what} {path}: not valid UTF-8 ({exc})") from None
    try:
        obj = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_reject_constant)
    except (ValueError, RecursionError, MemoryError) as exc:  # syntax, duplicates, int digits, deep nesting
        raise FormatError(f"{what} {path}: not valid JSON: {str(exc)[:200] or type(exc).__name__}") from None
    if not isinstance(obj, dict):
        raise FormatError(f"{what} {path}: a JSON {type(obj).__name__}, not an object")
    depth = json_depth(obj, max_depth)
    if depth > max_depth:
        raise FormatError(f"{what} {path}: JSON nested deeper than {max_depth} levels")
    return obj


def json_depth(obj, limit: int) -> int:
    """Nesting depth of a parsed JSON value (a scalar is 0), counted without recursion; stops past ``limit``."""
    deepest, stack = 0, [(obj, 0)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            value = value.values()
        elif not isinstance(value, list):
            continue
        depth += 1
        deepest = max(deepest, depth)
        if deepest > limit:
            return deepest
        stack.extend((v, depth) for v in value if isinstance(v, (dict, list)))
    return deepest


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _check_metadata(path, meta) -> dict:
    if meta is None:
        return {}
    if not isinstance(meta, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items()):
        raise _fail(path, "__metadata__ must map strings to strings")
    return dict(meta)


def _check_shape(path, name, shape) -> tuple[int, ...]:
    if not isinstance(shape, list) or len(shape) > MAX_NDIM:
        raise _fail(path, f"shape must be a list of at most {MAX_NDIM} ints, got {str(shape)[:80]}", name)
    bound = 1
    for d in shape:
        if not _is_int(d) or d < 0:
            raise _fail(path, f"shape {str(shape)[:80]} has an entry that is not a non-negative int", name)
        bound *= max(d, 1)   # a zero-size dimension counts as 1: it cannot hide a huge other one
        if bound > INT64_MAX:
            raise _fail(path, f"shape {str(shape)[:80]} has more elements than int64 can count", name)
    return tuple(shape)


def _check_entry(path, name, entry, data_len: int) -> TensorInfo:
    if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
        got = sorted(entry) if isinstance(entry, dict) else type(entry).__name__
        raise _fail(path, f"entry must have exactly dtype, shape, data_offsets; got {got}", name)
    dtype = entry["dtype"]
    if not isinstance(dtype, str) or dtype not in DTYPES:
        raise _fail(path, f"unknown dtype {str(dtype)[:40]!r}; known: {', '.join(DTYPES)}", name)
    shape = _check_shape(path, name, entry["shape"])
    offsets = entry["data_offsets"]
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(_is_int(o) for o in offsets)):
        raise _fail(path, f"data_offsets must be two ints, got {str(offsets)[:80]}", name)
    begin, end = offsets
    if not 0 <= begin <= end <= data_len:
        raise _fail(path, f"data_offsets [{begin}, {end}] are not ordered inside the {data_len}-byte data region",
                    name)
    bits = math.prod(shape) * DTYPES[dtype][0]
    if bits % 8:
        raise _fail(path, f"{dtype} shape {list(shape)} is {bits} bits, not a whole number of bytes", name)
    if end - begin != bits // 8:
        raise _fail(path, f"data_offsets [{begin}, {end}] span {end - begin} bytes but {dtype} {list(shape)} "
                          f"needs {bits // 8}", name)
    return TensorInfo(name, dtype, shape, begin, end)


def _check_layout(path, infos: list[TensorInfo], data_len: int) -> None:
    """The tensors tile the data region exactly, as the format requires ("the byte buffer needs to be entirely
    indexed, and cannot contain holes"): sorted by offset, each starts where the previous one ended and the last
    ends at the end of the file. So overlaps, gaps, trailing bytes and a header length that is off by some bytes
    (which would shift every tensor) are all errors."""
    spans = sorted(infos, key=lambda t: (t.begin, t.end))
    covered, prev = 0, None
    for t in spans:
        if t.begin < covered:
            raise _fail(path, f"bytes [{t.begin}, {t.end}) overlap tensor {prev.name!r} [{prev.begin}, {prev.end})",
                        t.name)
        if t.begin > covered:
            raise _fail(path, f"data starts at byte {t.begin} but the tensors before it end at byte {covered}: the "
                              f"data region has a hole (or the header length is wrong)", t.name)
        if t.nbytes:
            covered, prev = t.end, t
    if covered != data_len:
        raise _fail(path, f"the tensors end at byte {covered} of a {data_len}-byte data region: {data_len - covered} "
                          f"trailing bytes (is the header length {data_len - covered} bytes short?)")


def parse_header(path, head: bytes, file_size: int) -> tuple[int, dict, dict[str, TensorInfo]]:
    """Validate a header. `head` holds at least the first 8 + N bytes (or the whole file if shorter).

    Returns (data_start, metadata, infos). Raises FormatError naming the file (and tensor) on any defect.
    """
    n = _header_length(path, head, file_size)
    if len(head) < 8 + n:
        raise _fail(path, f"file ended inside the {n}-byte header")
    obj = parse_json_object(path, head[8:8 + n])
    data_len = file_size - 8 - n
    metadata = _check_metadata(path, obj.pop("__metadata__", None))
    infos = {name: _check_entry(path, name, entry, data_len) for name, entry in obj.items()}
    _check_layout(path, list(infos.values()), data_len)
    return 8 + n, metadata, infos


# ---------------------------------------------------------------------------------------------------- files


def view_shape(info: TensorInfo) -> tuple[int, ...]:
    """Shape of the NumPy view: F4 packs two codes a byte along the last axis; F6 is a flat byte string."""
    if info.dtype == "F4":
        if info.shape and info.shape[-1] % 2 == 0:
            return info.shape[:-1] + (info.shape[-1] // 2,)
        return (info.nbytes,)
    if info.dtype in ("F6_E2M3", "F6_E3M2"):
        return (info.nbytes,)
    return info.shape


class SafetensorsFile:
    """One validated .safetensors file; tensors are read-only views into a shared mmap of the file."""

    def __init__(self, path):
        self.path = Path(path)
        try:
            with open(self.path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                head = f.read(8)
                if len(head) == 8:
                    n = int.from_bytes(head, "little")
                    if n <= min(MAX_HEADER_BYTES, size - 8):  # else parse_header raises on `head` alone
                        head += f.read(n)
        except OSError as exc:
            raise FormatError(f"safetensors {self.path}: cannot read ({exc})") from None
        self.data_start, self.metadata, self.infos = parse_header(self.path, head, size)
        self.file_size = size
        self._map = None

    def __contains__(self, name) -> bool:
        return name in self.infos

    def keys(self):
        return self.infos.keys()

    def _mapped(self):
        if self._map is None:
            with open(self.path, "rb") as f:
                self._map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
            if len(self._map) != self.file_size:
                raise _fail(self.path, "file changed size after its header was validated")
        return self._map

    def tensor(self, name: str) -> np.ndarray:
        """A zero-copy, read-only view of tensor `name` (see the module docstring for dtypes)."""
        info = self.infos.get(name)
        if info is None:
            raise KeyError(f"{self.path}: no tensor {name!r}")
        dtype, shape = DTYPES[info.dtype][1], view_shape(info)
        if info.nbytes == 0:
            empty = np.zeros(shape, dtype)
            empty.flags.writeable = False
            return empty
        count = info.nbytes // dtype.itemsize
        arr = np.frombuffer(self._mapped(), dtype=dtype, count=count, offset=self.data_start + info.begin)
        return arr.reshape(shape)

    def tensors(self) -> dict[str, np.ndarray]:
        return {name: self.tensor(name) for name in self.infos}


def read_safetensors(path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """(name -> zero-copy view, __metadata__) of one file."""
    f = SafetensorsFile(path)
    return f.tensors(), f.metadata


# ---------------------------------------------------------------------------------------------------- writer


_WRITE_DTYPES = {np.dtype(v[1]): k for k, v in DTYPES.items()
                 if k not in ("F8_E8M0", "F4", "F6_E2M3", "F6_E3M2")}
_WRITE_DTYPES[np.dtype(ml_dtypes.float8_e8m0fnu)] = "F8_E8M0"


def _encode_tensor(name, arr, override):
    arr = np.asarray(arr)
    if not arr.flags.c_contiguous:  # (np.ascontiguousarray would turn a 0-d array into 1-d)
        arr = arr.copy(order="C")
    if arr.dtype.byteorder == ">":
        arr = arr.astype(arr.dtype.newbyteorder("<"))
    if override is None:
        if arr.dtype not in _WRITE_DTYPES:
            raise ValueError(f"tensor {name!r}: no safetensors dtype for NumPy {arr.dtype}; pass dtypes={{...}}")
        return _WRITE_DTYPES[arr.dtype], list(arr.shape), arr
    if override not in DTYPES:
        raise ValueError(f"tensor {name!r}: unknown safetensors dtype {override!r}")
    bits = DTYPES[override][0]
    if override == "F4":  # the array holds packed bytes [..., d/2]; the header names the logical shape
        if arr.dtype != np.uint8 or arr.ndim == 0:
            raise ValueError(f"tensor {name!r}: F4 needs a packed uint8 array with at least one axis")
        return override, list(arr.shape[:-1]) + [2 * arr.shape[-1]], arr
    if bits != 8 * arr.dtype.itemsize:
        raise ValueError(f"tensor {name!r}: {override} is {bits}-bit but the array is {arr.dtype}")
    return override, list(arr.shape), arr


def save_safetensors(path, tensors: dict, metadata: dict | None = None, dtypes: dict | None = None) -> None:
    """Write `tensors` (name -> NumPy array) to `path`, atomically.

    dtypes: name -> safetensors dtype to store the array's bytes under, e.g. {"x.weight_scale": "F8_E4M3"} for
    FP8 scale bytes held in a uint8 array, "F8_E8M0" for MX exponents, "F4" for packed E2M1 pairs.
    Tensors are laid out by decreasing item size, then name, so each starts aligned to its item size.
    """
    dtypes = dtypes or {}
    if "__metadata__" in tensors:
        raise ValueError("'__metadata__' is reserved for the metadata block; it cannot name a tensor")
    unknown = set(dtypes) - set(tensors)
    if unknown:
        raise ValueError(f"dtypes names tensors that are not being written: {sorted(unknown)}")
    encoded = {name: _encode_tensor(name, arr, dtypes.get(name)) for name, arr in tensors.items()}
    order = sorted(encoded, key=lambda n: (-encoded[n][2].dtype.itemsize, n))
    header, offset = {}, 0
    if metadata:
        header["__metadata__"] = _check_metadata(path, metadata)
    for name in order:
        dtype, shape, arr = encoded[name]
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + arr.nbytes]}
        offset += arr.nbytes
    raw = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    raw += b" " * (-len(raw) % 8)  # pad so the data region starts 8-byte aligned
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(len(raw).to_bytes(8, "little"))
        f.write(raw)
        for name in order:
            f.write(encoded[name][2].tobytes())
    os.replace(tmp, path)
