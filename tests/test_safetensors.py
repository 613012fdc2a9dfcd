"""impnb.loaders.safetensors / shards: round trips against the `safetensors` package (an independent reader and
writer), zero-copy views, and one test per defect the reader must reject (header overflow, offsets, overlaps, dtypes, shapes)."""
from __future__ import annotations

import json
import warnings

import ml_dtypes
import numpy as np
import pytest

from impnb import FormatError
from impnb.loaders.safetensors import (MAX_HEADER_BYTES, GapWarning, SafetensorsFile, read_safetensors,
                                       save_safetensors)
from impnb.loaders.shards import INDEX_NAME, open_safetensors


def _sample(rng) -> dict:
    return {
        "f32": rng.standard_normal((3, 5)).astype(np.float32),
        "f16": rng.standard_normal((7,)).astype(np.float16),
        "f64": rng.standard_normal((2, 2, 2)),
        "bf16": rng.standard_normal((4, 3)).astype(ml_dtypes.bfloat16),
        "fp8": rng.standard_normal((2, 16)).astype(ml_dtypes.float8_e4m3fn),
        "e5m2": rng.standard_normal((3,)).astype(ml_dtypes.float8_e5m2),
        "i8": rng.integers(-128, 127, (5,), dtype=np.int8),
        "u16": rng.integers(0, 65535, (2, 3), dtype=np.uint16),
        "i32": rng.integers(-9, 9, (4,), dtype=np.int32),
        "i64": rng.integers(-9, 9, (1,), dtype=np.int64),
        "u64": rng.integers(0, 9, (2,), dtype=np.uint64),
        "mask": rng.integers(0, 2, (6,)).astype(bool),
        "scalar": np.array(3.5, dtype=np.float32),
        "empty": np.zeros((0, 4), dtype=np.float32),
    }


def _raw_file(path, header, data=b"", length=None):
    """Write a file byte by byte: header is a dict (serialised) or raw bytes; length overrides the u64 field."""
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    n = len(raw) if length is None else length
    path.write_bytes(n.to_bytes(8, "little") + raw + data)
    return path


def _entry(dtype="F32", shape=(2,), offsets=(0, 8)):
    return {"dtype": dtype, "shape": list(shape), "data_offsets": list(offsets)}


# ------------------------------------------------------------------------------------------- round trips


def test_roundtrip_our_writer_every_dtype(tmp_path, rng):
    tensors = _sample(rng)
    save_safetensors(tmp_path / "a.safetensors", tensors, metadata={"format": "np", "note": "é"})
    back, meta = read_safetensors(tmp_path / "a.safetensors")
    assert meta == {"format": "np", "note": "é"}
    assert set(back) == set(tensors)
    for name, arr in tensors.items():
        got = back[name]
        assert got.dtype == arr.dtype and got.shape == arr.shape, name
        assert got.tobytes() == arr.tobytes(), name
        assert not got.flags.writeable, name


def test_views_are_zero_copy(tmp_path, rng):
    save_safetensors(tmp_path / "a.safetensors", {"w": rng.standard_normal((64, 64)).astype(np.float32)})
    f = SafetensorsFile(tmp_path / "a.safetensors")
    w = f.tensor("w")
    assert not w.flags.owndata and not w.flags.writeable
    assert np.shares_memory(w, f.tensor("w"))  # both views alias the one mmap


def test_package_reads_our_files(tmp_path, rng):
    """The `safetensors` package (numpy framework) reads what we write, bit for bit (dtypes NumPy can hold)."""
    load_file = pytest.importorskip("safetensors.numpy").load_file
    tensors = {k: v for k, v in _sample(rng).items() if k not in ("bf16", "fp8", "e5m2")}
    save_safetensors(tmp_path / "a.safetensors", tensors)
    back = load_file(tmp_path / "a.safetensors")
    for name, arr in tensors.items():
        assert back[name].dtype == arr.dtype and back[name].tobytes() == arr.tobytes(), name


def test_we_read_package_files_including_fp8(tmp_path, rng):
    """torch + safetensors write BF16 / F8_E4M3 / F8_E5M2; our views hold the same bytes."""
    torch = pytest.importorskip("torch")
    save_file = pytest.importorskip("safetensors.torch").save_file
    src = {"bf16": torch.randn(4, 6).to(torch.bfloat16), "fp8": torch.randn(3, 32).to(torch.float8_e4m3fn),
           "e5m2": torch.randn(5).to(torch.float8_e5m2), "i64": torch.arange(7)}
    save_file(src, tmp_path / "t.safetensors", metadata={"format": "pt"})
    back, meta = read_safetensors(tmp_path / "t.safetensors")
    assert meta == {"format": "pt"}
    expect = {"bf16": ml_dtypes.bfloat16, "fp8": ml_dtypes.float8_e4m3fn, "e5m2": ml_dtypes.float8_e5m2,
              "i64": np.int64}
    for name, t in src.items():
        assert back[name].dtype == np.dtype(expect[name]) and back[name].shape == tuple(t.shape), name
        assert back[name].tobytes() == t.contiguous().view(torch.uint8).numpy().tobytes(), name


def test_dtype_override_writes_fp8_e8m0_f4(tmp_path):
    """uint8 bytes stored as F8_E4M3 (NVFP4 scales), F8_E8M0 (MX scales) and F4 (packed E2M1 pairs)."""
    torch = pytest.importorskip("torch")
    safe_open = pytest.importorskip("safetensors").safe_open
    scale = np.array([[0x38, 0x7E], [0x01, 0x80]], dtype=np.uint8)  # 1.0, 448, 2^-9, -0.0
    e8 = np.array([127, 128, 0xFF], dtype=np.uint8)
    packed = np.array([[0x21, 0xF7]], dtype=np.uint8)
    save_safetensors(tmp_path / "o.safetensors", {"s": scale, "e": e8, "p": packed},
                     dtypes={"s": "F8_E4M3", "e": "F8_E8M0", "p": "F4"})
    f = SafetensorsFile(tmp_path / "o.safetensors")
    assert (f.infos["s"].dtype, f.infos["e"].dtype, f.infos["p"].dtype) == ("F8_E4M3", "F8_E8M0", "F4")
    assert f.infos["p"].shape == (1, 4)  # logical E2M1 count; the view is the packed bytes
    assert f.tensor("s").astype(np.float32).tolist() == [[1.0, 448.0], [2.0 ** -9, -0.0]]
    assert f.tensor("e").tolist() == [127, 128, 255] and f.tensor("p").tolist() == [[0x21, 0xF7]]
    with safe_open(tmp_path / "o.safetensors", "pt") as g:  # the package agrees on the FP8 values
        assert g.get_tensor("s").float().tolist() == [[1.0, 448.0], [2.0 ** -9, -0.0]]
        assert g.get_tensor("e").dtype == torch.float8_e8m0fnu


def test_writer_ml_dtypes_e8m0(tmp_path):
    e = np.array([1.0, 2.0 ** -3, 2.0 ** 10], dtype=ml_dtypes.float8_e8m0fnu)
    save_safetensors(tmp_path / "e.safetensors", {"e": e})
    f = SafetensorsFile(tmp_path / "e.safetensors")
    assert f.infos["e"].dtype == "F8_E8M0" and f.tensor("e").tolist() == [127, 124, 137]


def test_writer_rejects_bad_override(tmp_path):
    with pytest.raises(ValueError, match="reserved"):
        save_safetensors(tmp_path / "x.safetensors", {"__metadata__": np.zeros(2, np.float32)})
    with pytest.raises(ValueError, match="8-bit"):
        save_safetensors(tmp_path / "x.safetensors", {"a": np.zeros(2, np.float32)}, dtypes={"a": "F8_E4M3"})
    with pytest.raises(ValueError, match="not being written"):
        save_safetensors(tmp_path / "x.safetensors", {"a": np.zeros(2, np.float32)}, dtypes={"b": "F32"})


# ------------------------------------------------------------------------------------------- rejections


def _rejects(path, *needles):
    with pytest.raises(FormatError) as info:
        SafetensorsFile(path)
    msg = str(info.value)
    assert str(path) in msg
    for needle in needles:
        assert needle in msg, msg
    return msg


@pytest.mark.parametrize("length", [2**64 - 1, 2**64 - 5, 2**63, MAX_HEADER_BYTES + 1])
def test_header_length_overflow_and_cap(tmp_path, length):
    """8 + (2^64 - 5) wraps to 3 in u64 arithmetic; we compare Python ints, so it cannot."""
    _rejects(_raw_file(tmp_path / "h.safetensors", b"{}", length=length), "header length")


def test_header_cap_on_a_file_that_is_large_enough(tmp_path):
    """A 129 MiB header inside a (sparse) file big enough to hold it: rejected by the cap, never read."""
    path = tmp_path / "big.safetensors"
    n = MAX_HEADER_BYTES + 1024
    with open(path, "wb") as f:
        f.write(n.to_bytes(8, "little") + b"{")
        f.truncate(8 + n + 16)
    _rejects(path, "cap")


def test_header_longer_than_file(tmp_path):
    _rejects(_raw_file(tmp_path / "h.safetensors", b'{"__metadata__":{}}', length=200), "exceeds")


@pytest.mark.parametrize("content", [b"", b"\x02\x00\x00"])
def test_file_shorter_than_length_field(tmp_path, content):
    path = tmp_path / "s.safetensors"
    path.write_bytes(content)
    _rejects(path, "shorter than")


@pytest.mark.parametrize("header, needle", [
    (b'{"a": \xff}', "UTF-8"),
    (b'{"a": ', "not valid JSON"),
    (b'[1, 2]', "not an object"),
    (b'{"a": NaN}', "not valid JSON"),
    (b'{"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}, '
     b'"a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}', "duplicate key 'a'"),
    (b'{"a": {"dtype": "F32", "dtype": "F16", "shape": [1], "data_offsets": [0, 4]}}', "duplicate key"),
    (b'{"a": {"dtype": "F32", "shape": [' + b"9" * 5000 + b'], "data_offsets": [0, 4]}}', "not valid JSON"),
    (b"[" * 100000 + b"]" * 100000, "not valid JSON"),
])
def test_json_errors(tmp_path, header, needle):
    _rejects(_raw_file(tmp_path / "j.safetensors", header, b"\0" * 8), needle)


@pytest.mark.parametrize("meta", [{"k": 1}, ["k"], {"k": None}, "text"])
def test_metadata_must_be_str_to_str(tmp_path, meta):
    _rejects(_raw_file(tmp_path / "m.safetensors", {"__metadata__": meta}), "__metadata__")


@pytest.mark.parametrize("entry, needle", [
    (_entry(dtype="F128"), "unknown dtype"),
    (_entry(dtype=7), "unknown dtype"),
    ({"dtype": "F32", "shape": [2]}, "exactly dtype"),
    ({**_entry(), "extra": 1}, "exactly dtype"),
    ("F32", "exactly dtype"),
    (_entry(shape=(-2,)), "non-negative"),
    (_entry(shape=(2.0,)), "non-negative"),
    (_entry(shape=(True,)), "non-negative"),
    (_entry(shape=("2",)), "non-negative"),
    ({"dtype": "F32", "shape": 2, "data_offsets": [0, 8]}, "list"),
    (_entry(shape=(1,) * 17), "at most"),
    (_entry(shape=(2**32, 2**32)), "int64"),
    (_entry(shape=(2**31, -2**31)), "non-negative"),
    (_entry(offsets=(0.0, 8)), "two ints"),
    (_entry(offsets=(False, 8)), "two ints"),
    (_entry(offsets=("0", "8")), "two ints"),
    (_entry(offsets=(0, 4, 8)), "two ints"),
    (_entry(offsets=(8, 0)), "not ordered"),
    (_entry(offsets=(-8, 0)), "not ordered"),
    (_entry(offsets=(0, 16)), "not ordered"),
    (_entry(offsets=(0, 4)), "needs 8"),
    (_entry(dtype="F4", shape=(3,), offsets=(0, 1)), "whole number of bytes"),
])
def test_bad_tensor_entries(tmp_path, entry, needle):
    msg = _rejects(_raw_file(tmp_path / "e.safetensors", {"w.weight": entry}, b"\0" * 8), needle)
    assert "'w.weight'" in msg  # the tensor is named


def test_overlap_is_rejected(tmp_path):
    header = {"a": _entry(offsets=(0, 8)), "b": _entry(offsets=(4, 12))}
    _rejects(_raw_file(tmp_path / "o.safetensors", header, b"\0" * 12), "overlap tensor 'a'")


def test_holes_and_trailing_bytes_are_rejected(tmp_path):
    """The format requires the tensors to tile the data region: a hole, or bytes after the last tensor (what a
    header length a few bytes short leaves), is an error, never a shift of every tensor."""
    hole = {"a": _entry(offsets=(0, 8)), "b": _entry(offsets=(16, 24))}
    _rejects(_raw_file(tmp_path / "g.safetensors", hole, bytes(range(24))), "has a hole")
    tail = {"a": _entry(offsets=(0, 8))}
    _rejects(_raw_file(tmp_path / "t.safetensors", tail, bytes(range(9))), "1 trailing bytes")


def test_header_length_off_by_one_is_rejected(tmp_path, rng):
    path = tmp_path / "h.safetensors"
    save_safetensors(path, _sample(rng))
    raw = bytearray(path.read_bytes())
    n = int.from_bytes(raw[:8], "little")
    for delta in (-1, 1):
        shifted = tmp_path / f"h{delta}.safetensors"
        shifted.write_bytes((n + delta).to_bytes(8, "little") + bytes(raw[8:]))
        with pytest.raises(FormatError):
            SafetensorsFile(shifted)


def test_zero_size_dimension_cannot_hide_a_huge_one(tmp_path):
    header = {"z": _entry(shape=(0, 2**40, 2**40), offsets=(0, 0)), "a": _entry(offsets=(0, 8))}
    _rejects(_raw_file(tmp_path / "z.safetensors", header, b"\0" * 8), "more elements than int64")


def test_contiguous_file_does_not_warn(tmp_path, rng):
    save_safetensors(tmp_path / "c.safetensors", _sample(rng))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        SafetensorsFile(tmp_path / "c.safetensors")


# ------------------------------------------------------------------------------------------- shards


def _two_shards(tmp_path, rng, index=True):
    a = {"x.weight": rng.standard_normal((2, 4)).astype(np.float32)}
    b = {"y.weight": rng.standard_normal((3,)).astype(np.float16), "y.bias": np.zeros(3, np.float32)}
    save_safetensors(tmp_path / "model-00001-of-00002.safetensors", a)
    save_safetensors(tmp_path / "model-00002-of-00002.safetensors", b)
    weight_map = {**{k: "model-00001-of-00002.safetensors" for k in a},
                  **{k: "model-00002-of-00002.safetensors" for k in b}}
    if index:
        (tmp_path / INDEX_NAME).write_text(json.dumps({"metadata": {"total_size": 50}, "weight_map": weight_map}))
    return {**a, **b}, weight_map


def test_sharded_index_loads(tmp_path, rng):
    tensors, weight_map = _two_shards(tmp_path, rng)
    ck = open_safetensors(tmp_path)
    assert set(ck.infos) == set(tensors)
    for name, arr in tensors.items():
        assert ck.tensor(name).tobytes() == arr.tobytes()
        assert ck.file_of(name).name == weight_map[name]


def test_directory_without_index_loads_all_shards(tmp_path, rng):
    tensors, _ = _two_shards(tmp_path, rng, index=False)
    assert set(open_safetensors(tmp_path).infos) == set(tensors)


def _index(tmp_path, weight_map):
    (tmp_path / INDEX_NAME).write_text(json.dumps({"weight_map": weight_map}))


def test_index_missing_shard(tmp_path, rng):
    _, wm = _two_shards(tmp_path, rng)
    (tmp_path / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(FormatError, match="missing"):
        open_safetensors(tmp_path)


def test_index_wrong_shard(tmp_path, rng):
    _, wm = _two_shards(tmp_path, rng)
    _index(tmp_path, {**wm, "x.weight": "model-00002-of-00002.safetensors"})
    with pytest.raises(FormatError, match="'x.weight' is not in 'model-00002-of-00002.safetensors'"):
        open_safetensors(tmp_path)


def test_index_tensor_in_two_shards(tmp_path, rng):
    _, wm = _two_shards(tmp_path, rng)
    save_safetensors(tmp_path / "model-00002-of-00002.safetensors",
                     {"y.weight": np.zeros(3, np.float16), "y.bias": np.zeros(3, np.float32),
                      "x.weight": np.zeros((2, 4), np.float32)})
    with pytest.raises(FormatError, match="as well as"):
        open_safetensors(tmp_path)


@pytest.mark.parametrize("fname", ["../model.safetensors", "/etc/passwd", "sub/a.safetensors", 3, "a.bin"])
def test_index_rejects_paths(tmp_path, rng, fname):
    _, wm = _two_shards(tmp_path, rng)
    _index(tmp_path, {**wm, "x.weight": fname})
    with pytest.raises(FormatError, match="not a .safetensors file name"):
        open_safetensors(tmp_path)


def test_index_unlisted_tensor_warns(tmp_path, rng):
    _, wm = _two_shards(tmp_path, rng)
    _index(tmp_path, {k: v for k, v in wm.items() if k != "y.bias"})
    with pytest.warns(GapWarning, match="not in the index"):
        ck = open_safetensors(tmp_path)
    assert "y.bias" not in ck


@pytest.mark.parametrize("index", [b"[]", b'{"weight_map": []}', b'{"weight_map": {}}', b"{\xff}"])
def test_index_malformed(tmp_path, rng, index):
    _two_shards(tmp_path, rng)
    (tmp_path / INDEX_NAME).write_bytes(index)
    with pytest.raises(FormatError):
        open_safetensors(tmp_path)


def test_duplicate_names_without_index(tmp_path, rng):
    save_safetensors(tmp_path / "a.safetensors", {"w": np.zeros(2, np.float32)})
    save_safetensors(tmp_path / "consolidated.safetensors", {"w": np.zeros(2, np.float32)})
    with pytest.raises(FormatError, match="in both"):
        open_safetensors(tmp_path)
