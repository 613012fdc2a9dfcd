"""golden/ (the language-neutral op-core vectors) is current, self-describing and independently right.

A fresh build by tools/make_golden.py must equal the committed golden/op_core.npz bit for bit; the manifest must
describe every array with the right dtype, shape and SHA-256; and the vectors that an independent library can
produce (ml_dtypes for FP8 / E2M1) must agree with it, so the file is more than a snapshot of our own output.
"""
import hashlib
import importlib.util
import json
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = ROOT / "golden"


def _tool():
    spec = importlib.util.spec_from_file_location("make_golden", ROOT / "tools" / "make_golden.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def stored():
    with np.load(GOLDEN / "op_core.npz") as f:
        return {name: f[name] for name in f.files}


def test_regenerated_vectors_equal_the_committed_ones():
    diff = _tool().differences(GOLDEN)
    assert not diff, f"golden arrays differ from a fresh build: {diff}; if the change is intended, rerun " \
                     f"`python tools/make_golden.py` and say why in the commit"


def test_manifest_describes_every_array(stored):
    tool = _tool()
    manifest = json.loads((GOLDEN / "manifest.json").read_text())
    assert manifest["format_version"] == tool.FORMAT_VERSION
    assert manifest["generator"].startswith("python tools/make_golden.py")
    assert set(manifest["arrays"]) == set(stored)
    for name, entry in manifest["arrays"].items():
        a = stored[name]
        assert entry["dtype"] == a.dtype.name and entry["shape"] == list(a.shape), name
        assert entry["meaning"].strip(), name
        assert entry["sha256"] == hashlib.sha256(a.tobytes()).hexdigest(), name


def test_fp8_vectors_agree_with_ml_dtypes(stored):
    x = stored["fp8_encode.x"]
    with np.errstate(invalid="ignore"):
        sat = np.clip(x, -448, 448).astype(ml_dtypes.float8_e4m3fn).view(np.uint8)
        nonsat = x.astype(ml_dtypes.float8_e4m3fn).view(np.uint8)
    nan = np.isnan(x)
    np.testing.assert_array_equal(stored["fp8_encode.saturating"][~nan], sat[~nan])
    np.testing.assert_array_equal(stored["fp8_encode.non_saturating"][~nan], nonsat[~nan])
    values = stored["fp8_decode.codes"].view(ml_dtypes.float8_e4m3fn).astype(np.float32)
    np.testing.assert_array_equal(stored["fp8_decode.values"].view(np.uint32), values.view(np.uint32))


def test_e2m1_vectors_agree_with_ml_dtypes_by_value(stored):
    x, codes = stored["e2m1_encode.x"], stored["e2m1_encode.codes"]
    finite = np.isfinite(x)
    want = x[finite].astype(ml_dtypes.float4_e2m1fn).astype(np.float32)
    got = stored["e2m1_decode.values"][codes[finite]]
    np.testing.assert_array_equal(got, want)  # by value: -0.0 == 0.0 (the two libraries differ on its sign only)


@pytest.mark.parametrize("tag", ["nvfp4_ct", "nvfp4_modelopt"])
def test_gemv_vectors_are_within_the_stated_bound(stored, tag):
    k = stored[f"{tag}.x"].shape[0]
    gamma = (k + 2) * 2.0 ** -24 / (1 - (k + 2) * 2.0 ** -24)
    err = np.abs(stored[f"{tag}.gemv"] - stored[f"{tag}.gemv_f64"])
    assert np.all(err <= gamma * stored[f"{tag}.gemv_abs"])
