"""Bounded fuzzing of the safetensors reader (hypothesis): mutate the header length, header bytes, dtypes, shapes
and offsets of a small valid file. Each case must either load (every view inside the file) or raise FormatError:
never another exception, never a hang (per-case time bound), never an allocation beyond a small multiple of the
file size (tracemalloc peak), whatever size the header claims. A second property feeds random quantization-like
tensor sets (names, dtypes, shapes) to the NVFP4/MXFP4 assembly under each scheme: a checkpoint, FormatError or
Unsupported, nothing else. The number of cases run is printed."""
from __future__ import annotations

import json
import os
import time
import tracemalloc
import warnings

import ml_dtypes
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from impnb import FormatError
from impnb.loaders.safetensors import DTYPES, MAX_HEADER_BYTES, SafetensorsFile, save_safetensors

EXAMPLES = int(os.environ.get("IMPNB_FUZZ_EXAMPLES", 300))  # per strategy; more on demand
SECONDS_PER_CASE = 2.0
CASES = {"run": 0, "loaded": 0, "rejected": 0}
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _base_file(path) -> bytes:
    tensors = {"a.weight": np.arange(6, dtype=np.float32).reshape(2, 3),
               "b.bias": np.ones(4, dtype=ml_dtypes.bfloat16),
               "c.weight_scale": np.array([[0x38, 0x7E], [0x01, 0x20]], dtype=np.uint8),
               "d.ids": np.array([7], dtype=np.int64),
               "e.empty": np.zeros((0, 3), dtype=np.uint8)}
    save_safetensors(path, tensors, {"format": "pt"}, dtypes={"c.weight_scale": "F8_E4M3"})
    return path.read_bytes()


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    d = tmp_path_factory.mktemp("fuzz")
    raw = _base_file(d / "base.safetensors")
    n = int.from_bytes(raw[:8], "little")
    return d, raw, json.loads(raw[8:8 + n]), raw[8 + n:]


def _touch(view) -> int:
    """Read every byte of a view (a view outside the mmap would fault or raise here)."""
    flat = np.ascontiguousarray(view).reshape(-1)
    return int(flat.view(np.uint8).sum()) if flat.size else 0


def check(directory, content: bytes) -> None:
    """The property: load or FormatError; views inside the file; bounded time and memory."""
    path = directory / "case.safetensors"
    path.write_bytes(content)
    CASES["run"] += 1
    tracemalloc.start()
    start = time.perf_counter()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            f = SafetensorsFile(path)
            total = 0
            for name in f.keys():
                view = f.tensor(name)
                total += view.nbytes
                _touch(view)
        assert total <= len(content)
        CASES["loaded"] += 1
    except FormatError as exc:
        assert str(path) in str(exc)
        CASES["rejected"] += 1
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    elapsed = time.perf_counter() - start
    assert elapsed < SECONDS_PER_CASE, f"{elapsed:.2f} s for a {len(content)}-byte file"
    assert peak <= 512 * 1024 + 64 * len(content), f"peak {peak} bytes for a {len(content)}-byte file"


# ------------------------------------------------------------------------------------------- strategies

EDGE_LENGTHS = [0, 1, 2, 7, 8, 2**31, 2**32 - 1, 2**63 - 1, 2**63, 2**64 - 5, 2**64 - 1, MAX_HEADER_BYTES,
                MAX_HEADER_BYTES + 1]
NASTY_INTS = st.one_of(st.integers(-3, 40), st.sampled_from([2**31, 2**32, 2**62, 2**63 - 1, 2**63, 2**64,
                                                             -2**63, 10**30]))
JSON_VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), NASTY_INTS, st.floats(allow_nan=False, allow_infinity=False),
              st.text(max_size=6), st.sampled_from(list(DTYPES) + ["F128", "f32", ""])),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=8)
SHAPES = st.lists(NASTY_INTS, max_size=5) | JSON_VALUES
OFFSETS = st.lists(NASTY_INTS, min_size=0, max_size=3) | JSON_VALUES
FIELDS = {"dtype": st.sampled_from(list(DTYPES)) | JSON_VALUES, "shape": SHAPES, "data_offsets": OFFSETS}


def _length_prefixed(header_bytes: bytes, data: bytes, length: int | None = None) -> bytes:
    n = len(header_bytes) if length is None else length
    return n.to_bytes(8, "little") + header_bytes + data


@st.composite
def structured_mutation(draw, header: dict, data: bytes) -> bytes:
    """Change up to three header fields to hostile values; maybe drop a key, duplicate a tensor, cut the data."""
    header = json.loads(json.dumps(header))
    names = sorted(k for k in header if k != "__metadata__")
    for _ in range(draw(st.integers(0, 3))):
        name = draw(st.sampled_from(names + ["__metadata__", "new.tensor"]))
        if name == "__metadata__":
            header[name] = draw(JSON_VALUES)
            continue
        entry = header.setdefault(name, {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]})
        key = draw(st.sampled_from(sorted(FIELDS) + ["<drop>"]))
        if key == "<drop>":
            entry.pop(draw(st.sampled_from(sorted(FIELDS))), None)
        elif isinstance(entry, dict):
            entry[key] = draw(FIELDS[key])
    raw = json.dumps(header).encode()
    if draw(st.booleans()):  # a duplicate key, which json.dumps cannot produce
        dup = json.dumps({names[0]: header.get(names[0])})[1:-1].encode()
        raw = b"{" + dup + b"," + raw[1:]
    return _length_prefixed(raw, data[:draw(st.integers(0, len(data)))] if draw(st.booleans()) else data)


@st.composite
def byte_mutation(draw, raw: bytes) -> bytes:
    """Overwrite a few bytes (anywhere, biased to the header), then maybe truncate or extend the file."""
    buf = bytearray(raw)
    n = int.from_bytes(raw[:8], "little")
    for _ in range(draw(st.integers(1, 4))):
        hi = draw(st.sampled_from([8 + n, len(buf)])) - 1
        buf[draw(st.integers(0, hi))] = draw(st.integers(0, 255))
    cut = draw(st.integers(0, len(buf)))
    if draw(st.booleans()):
        buf = buf[:cut]
    return bytes(buf) + draw(st.binary(max_size=16))


# ------------------------------------------------------------------------------------------- tests


def test_fuzz_header_length(base):
    d, raw, _, _ = base

    @SETTINGS
    @given(st.sampled_from(EDGE_LENGTHS) | st.integers(0, 2**64 - 1) | st.integers(0, len(raw) + 8))
    def run(length):
        check(d, length.to_bytes(8, "little") + raw[8:])
    run()


def test_fuzz_structured(base):
    d, _, header, data = base

    @SETTINGS
    @given(st.data())
    def run(draw):
        check(d, draw.draw(structured_mutation(header, data)))
    run()


def test_fuzz_bytes(base):
    d, raw, _, _ = base

    @SETTINGS
    @given(st.data())
    def run(draw):
        check(d, draw.draw(byte_mutation(raw)))
    run()


# ------------------------------------------------------------------------------------------- quantized tensors

QUANT_SUFFIXES = [".weight", ".weight_packed", ".weight_scale", ".weight_global_scale", ".weight_scale_2",
                  ".input_scale", "_blocks", "_scales"]
CONFIGS = [None, {"quant_method": "compressed-tensors", "format": "nvfp4-pack-quantized"},
           {"quant_method": "compressed-tensors", "format": "mxfp4-pack-quantized"},
           {"quant_method": "modelopt", "quant_algo": "NVFP4"}, {"quant_method": "mxfp4"}]
QUANT_CASES = {"run": 0, "config": 0}


@st.composite
def quant_tensor_set(draw):
    """A few tensors of one module with quantization-like names, random dtypes and shapes."""
    from impnb.loaders.safetensors import TensorInfo
    infos, arrays = {}, {}
    for suffix in draw(st.lists(st.sampled_from(QUANT_SUFFIXES), min_size=1, max_size=5, unique=True)):
        name = "m" + suffix
        dtype = draw(st.sampled_from(["U8", "F8_E4M3", "F8_E8M0", "F32", "BF16", "F16", "I64"]))
        shape = tuple(draw(st.lists(st.sampled_from([0, 1, 2, 4, 8, 16, 32]), max_size=4)))
        arrays[name] = np.zeros(shape, DTYPES[dtype][1])
        infos[name] = TensorInfo(name, dtype, shape, 0, arrays[name].nbytes)
    return infos, arrays


def test_fuzz_quant_assembly():
    """Random quantization-like tensor sets under each scheme: a checkpoint, FormatError or Unsupported."""
    from impnb import Unsupported
    from impnb.loaders.quant import assemble, detect_scheme

    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None)
    @given(st.sampled_from(CONFIGS), quant_tensor_set())
    def run(qc, tensor_set):
        infos, arrays = tensor_set
        QUANT_CASES["run"] += 1
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                assemble(infos, arrays.__getitem__, detect_scheme({"quantization_config": qc} if qc else {}))
            except (FormatError, Unsupported):
                pass
    run()


QC_TEMPLATES = [
    {"quant_method": "compressed-tensors", "format": "nvfp4-pack-quantized", "ignore": ["lm_head"],
     "config_groups": {"group_0": {"format": "nvfp4-pack-quantized", "targets": ["Linear"],
                                   "weights": {"num_bits": 4, "group_size": 16}}}},
    {"quant_method": "modelopt", "quant_algo": "NVFP4", "ignore": ["lm_head"],
     "config_groups": {"group_0": {"weights": {"group_size": 16}}}},
    {"quant_method": "mxfp4", "modules_to_not_convert": ["lm_head"]},
]
HQ_TEMPLATE = {"producer": {"name": "modelopt"}, "quantization": {
    "quant_algo": "MIXED_PRECISION", "group_size": 16, "exclude_modules": ["lm_head"],
    "quantized_layers": {"model.layers.0.mlp.down_proj": {"quant_algo": "NVFP4"}}}}


def _nested_dicts(obj, out):
    if isinstance(obj, dict):
        out.append(obj)
        for v in obj.values():
            _nested_dicts(v, out)
    return out


@st.composite
def mutated_config(draw, template):
    obj = json.loads(json.dumps(template))
    for _ in range(draw(st.integers(1, 3))):
        target = draw(st.sampled_from(_nested_dicts(obj, [])))
        key = draw(st.sampled_from(sorted(target) + ["quant_algo", "format", "weights"]))
        target[key] = draw(JSON_VALUES)
    return obj


def test_fuzz_quantization_config():
    """Mutated quantization_config / hf_quant_config.json blocks: a scheme, None, FormatError or Unsupported;
    never a TypeError from a list or number where a string belongs."""
    from impnb import Unsupported
    from impnb.loaders.quant import detect_scheme

    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None)
    @given(st.sampled_from(QC_TEMPLATES).flatmap(mutated_config) | st.none(), mutated_config(HQ_TEMPLATE))
    def run(qc, hq):
        QUANT_CASES["config"] += 1
        try:
            detect_scheme({"quantization_config": qc} if qc is not None else {}, hq)
        except (FormatError, Unsupported):
            pass
    run()


def test_fuzz_summary(capsys):
    """Prints how many cases ran (this module's tests run in file order, so the ones above have run)."""
    if CASES["run"] == 0:
        pytest.skip("no fuzz case ran in this session (the fuzz tests were deselected)")
    with capsys.disabled():
        print(f"\nsafetensors fuzz: {CASES['run']} cases, {CASES['loaded']} loaded, {CASES['rejected']} rejected "
              f"with FormatError; "
              f"{QUANT_CASES['run']} quantized-tensor cases; {QUANT_CASES['config']} quantization-config cases")
    assert CASES["run"] == CASES["loaded"] + CASES["rejected"]
    assert CASES["loaded"] and CASES["rejected"]  # the mutations reach both outcomes
