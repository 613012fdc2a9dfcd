"""golden/ (language-neutral vectors of every op) is current, complete, self-describing and independently right,
and the C harness reads it: a correct C FP8 encoder passes, one with the 0x77 clamp bug is reported."""
import hashlib
import importlib.util
import json
import re
import shutil
import subprocess
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest

from impnb import ops, tolerances

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = ROOT / "golden"
INDEX = json.loads((GOLDEN / "manifest.json").read_text())


def _tool():
    spec = importlib.util.spec_from_file_location("make_golden", ROOT / "tools" / "make_golden.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _vectors(op):
    return [json.loads((GOLDEN / v["manifest"]).read_text()) for v in INDEX["vectors"] if v["op"] == op]


def _array(op, entry):
    data = (GOLDEN / "vectors" / op / entry["file"]).read_bytes()
    assert hashlib.sha256(data).hexdigest() == entry["sha256"], entry["file"]
    return np.frombuffer(data, dtype=np.dtype(entry["dtype"]).newbyteorder("<")).reshape(entry["shape"])


def test_regenerated_vectors_equal_the_committed_ones():
    diff = _tool().differences(GOLDEN)
    assert not diff, f"golden files differ from a fresh build: {diff[:10]}; if the change is intended, rerun " \
                     f"`python tools/make_golden.py` and say why in the commit"


def test_every_registered_op_has_vectors_and_every_file_is_described():
    assert set(INDEX["ops"]) == set(ops.OPS)
    described = {"manifest.json"}
    for v in INDEX["vectors"]:
        text = (GOLDEN / v["manifest"]).read_bytes()
        assert hashlib.sha256(text).hexdigest() == v["sha256"]
        described.add(v["manifest"])
        vector = json.loads(text)
        for entry in _entries(vector):
            _array(v["op"], entry)  # size and sha256 agree
            described.add(f"vectors/{v['op']}/{entry['file']}")
    on_disk = {p.relative_to(GOLDEN).as_posix() for p in (GOLDEN / "vectors").rglob("*") if p.is_file()}
    assert on_disk | {"manifest.json"} == described


def test_the_readmes_state_the_vector_and_op_counts():
    vectors, n_ops = len(INDEX["vectors"]), len(INDEX["ops"])
    assert f"{vectors} vectors of {n_ops} ops" in (GOLDEN / "README.md").read_text()
    assert re.search(rf"\({vectors} vectors of the\s+{n_ops} ops", (ROOT / "README.md").read_text())


def _entries(vector):
    for entry in vector["inputs"]:
        if entry["kind"] == "array":
            yield entry
        elif entry["kind"] == "nvfp4":
            yield entry["packed"]
            yield entry["scales"]
    for out in vector["outputs"]:
        if "file" in out:
            yield out
            if out["tolerance"]["rule"] == "bound":
                yield out["tolerance"]["bound"]


def test_non_exact_outputs_state_their_bound_in_the_manifest():
    for v in INDEX["vectors"]:
        vector = json.loads((GOLDEN / v["manifest"]).read_text())
        for out in vector["outputs"]:
            if "tolerance" in out and out["tolerance"]["rule"] == "bound":
                assert out["tolerance"]["formula"] and out["tolerance"]["bound"]["dtype"] == "float64"
                assert not ops.OPS[v["op"]].exact or out["dtype"].startswith("float")
    text = (GOLDEN / "manifest.json").read_text() + "".join(p.read_text() for p in GOLDEN.rglob("*.json"))
    assert "numerics-spec" not in text and "shared/" not in text  # no document outside the repository


def test_every_scaled_error_rule_states_its_formula_and_the_manifests_carry_it():
    rules = {op: rule for op, table in tolerances.TOLERANCES.items() for rule in table.values()
             if isinstance(rule, tolerances.ScaledError)}
    assert {"linear", "nvfp4_gemv", "attention_output"} <= set(rules)
    for op, rule in rules.items():
        assert "|" in rule.formula and len(rule.formula) > 20, op  # a magnitude, stated in words
    with pytest.raises(TypeError, match="formula"):
        tolerances.ScaledError(1.0, lambda args, kwargs: 1.0, "a scale without a stated formula")
    for v in INDEX["vectors"]:
        if v["op"] in rules:
            vector = json.loads((GOLDEN / v["manifest"]).read_text())
            formulas = [out["tolerance"]["formula"] for out in vector["outputs"] if "tolerance" in out
                        and out["tolerance"]["rule"] == "bound"]
            assert formulas and all(rules[v["op"]].formula in f for f in formulas), v["manifest"]


def test_fp8_vectors_agree_with_ml_dtypes():
    for vector in _vectors("fp8_e4m3_encode"):
        x = _array("fp8_e4m3_encode", vector["inputs"][0])
        got = _array("fp8_e4m3_encode", vector["outputs"][0])
        saturate = next((e["value"] for e in vector["inputs"] if e["name"] == "saturate"), True)
        with np.errstate(invalid="ignore"):
            want = (np.clip(x, -448, 448) if saturate else x).astype(ml_dtypes.float8_e4m3fn).view(np.uint8)
        finite = ~np.isnan(x)
        np.testing.assert_array_equal(got[finite], want[finite], err_msg=vector["case"])
        assert np.all((got[~finite] & 0x7F) == 0x7F)


def test_e2m1_vectors_agree_with_ml_dtypes_by_value():
    table = np.array([0, 0.5, 1, 1.5, 2, 3, 4, 6, -0.0, -0.5, -1, -1.5, -2, -3, -4, -6], np.float32)
    for vector in _vectors("e2m1_encode"):
        x = _array("e2m1_encode", vector["inputs"][0])
        codes = _array("e2m1_encode", vector["outputs"][0])
        finite = np.isfinite(x)
        want = x[finite].astype(ml_dtypes.float4_e2m1fn).astype(np.float32)
        np.testing.assert_array_equal(table[codes[finite]], want)  # by value: the libraries differ on -0's sign


def _compile(cc, tmp_path, encoder):
    exe = tmp_path / encoder.replace(".c", "")
    sources = ["golden_check.c", "json.c", encoder, "other_ops.c"]
    subprocess.run([cc, "-std=c99", "-O1", "-Wall", "-o", str(exe), *sources, "-lm"],
                   cwd=GOLDEN / "harness", check=True, capture_output=True, text=True)
    return exe


def test_c_harness_passes_a_correct_encoder_and_reports_the_0x77_clamp(tmp_path):
    cc = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if cc is None:
        pytest.skip("no C compiler (cc, gcc or clang) on PATH")
    good = subprocess.run([str(_compile(cc, tmp_path, "fp8_encode.c")), str(GOLDEN)], capture_output=True,
                          text=True)
    assert good.returncode == 0, good.stdout + good.stderr
    n_vectors = sum(len(_vectors(op)) for op in ("fp8_e4m3_encode", "fp8_e4m3_decode", "silu"))
    assert f"{n_vectors} vectors checked, 0 failed" in good.stdout
    bad = subprocess.run([str(_compile(cc, tmp_path, "fp8_encode_clamp_0x77.c")), str(GOLDEN), "fp8_e4m3_encode"],
                         capture_output=True, text=True)
    assert bad.returncode == 1, bad.stdout + bad.stderr
    lines = [line for line in bad.stdout.splitlines() if line.startswith("FAIL fp8_e4m3_encode[")]
    assert len(lines) == len(_vectors("fp8_e4m3_encode"))  # every encode vector has a value above 240
    assert all("got 119 (0x77)" in line or "got 247 (0xf7)" in line or "(0x7f)" in line for line in lines)
    assert "expected 126 (0x7e)" in bad.stdout or "expected 254 (0xfe)" in bad.stdout


def test_c_harness_refuses_a_missing_directory(tmp_path):
    cc = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if cc is None:
        pytest.skip("no C compiler (cc, gcc or clang) on PATH")
    run = subprocess.run([str(_compile(cc, tmp_path, "fp8_encode.c")), str(tmp_path / "nowhere")],
                         capture_output=True, text=True)
    assert run.returncode == 2 and "manifest.json" in run.stderr
