"""python -m impnb.conformance: the reference passes, a broken implementation fails on the right op with index and
bits, torch tensors work, exceptions are failures, usage errors are one line and exit 2, --json has the schema."""
from __future__ import annotations

import json
import sys
import textwrap

import numpy as np
import pytest

from impnb import ops
from impnb.conformance import REFERENCE, run
from impnb.conformance.__main__ import main
from impnb.reference import activations, fp8

BROKEN = '''
import numpy as np
from impnb.reference import fp8, activations

def encode_with_0x77_clamp(x, *, saturate=True):
    x = np.asarray(x)
    return fp8.fp8_e4m3_encode(np.clip(x, -240.0, 240.0) if saturate else x, saturate=saturate)

def crashing_gelu(x):
    raise RuntimeError("kernel launch failed")

OPS = {"fp8_e4m3_encode": encode_with_0x77_clamp, "silu": activations.silu, "gelu_tanh": crashing_gelu}
'''


@pytest.fixture
def broken_module(tmp_path, monkeypatch):
    (tmp_path / "broken_kernels.py").write_text(textwrap.dedent(BROKEN))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "broken_kernels"
    sys.modules.pop("broken_kernels", None)


def test_the_reference_passes_every_op(tmp_path, capsys):
    out = tmp_path / "ref.json"
    assert main(["--impl", "impnb.conformance:REFERENCE", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert f"{len(ops.OPS)} ops checked" in text and "all pass" in text
    report = json.loads(out.read_text())
    assert set(report["ops"]) == set(ops.OPS)
    assert all(r["status"] == "pass" and r["failed"] == 0 and r["cases"] > 0 for r in report["ops"].values())


def test_broken_encoder_fails_its_op_with_index_and_bits(broken_module, tmp_path, capsys):
    out = tmp_path / "broken.json"
    assert main(["--impl", f"{broken_module}:OPS", "--json", str(out)]) == 1
    text = capsys.readouterr().out
    report = json.loads(out.read_text())["ops"]
    assert report["silu"]["status"] == "pass"
    assert report["fp8_e4m3_encode"]["status"] == "fail"
    assert report["attention"]["status"] == "skip"  # not provided
    first = report["fp8_e4m3_encode"]["first_failure"]
    assert first["got_bits"] == "0x77" and first["reference_bits"] in ("0x78", "0x79", "0x7a", "0x7b", "0x7c",
                                                                        "0x7d", "0x7e")
    x = np.float32(first["input"]["value"])
    assert abs(x) > 240  # the element that failed is one the 0x77 clamp gets wrong
    assert int(first["got_bits"], 16) == int(fp8.fp8_e4m3_encode(np.clip(x, -240, 240)))
    assert isinstance(first["index"], list) and first["bad"] >= 1
    assert "fp8_e4m3_encode[" in text and "got=119 (0x77)" in text


def test_an_exception_fails_the_case_and_the_run_goes_on(broken_module, capsys):
    from broken_kernels import OPS
    report = run(OPS)
    gelu = report.ops["gelu_tanh"]
    assert gelu.status == "fail" and gelu.passed == 0 and gelu.failed == gelu.cases
    assert "RuntimeError: kernel launch failed" in gelu.failures[0].mismatch.describe()
    assert report.ops["silu"].status == "pass"


def test_wrong_dtype_or_shape_is_a_failure_not_a_crash():
    report = run({"argmax_token": lambda x: np.argmax(x, axis=-1).astype(np.int32),
                  "silu": lambda x: activations.silu(x)[..., :-1]})
    assert "expected" in report.ops["argmax_token"].failures[0].mismatch.message
    assert "int32" in report.ops["argmax_token"].failures[0].mismatch.message
    assert report.ops["silu"].status == "fail"


def test_scores_are_in_the_ops_own_metric():
    def silu_off_by_one_ulp(x):
        y = activations.silu(x)
        return np.nextafter(y, np.float32(np.inf))

    def decode_positive_nan(codes):
        y = fp8.fp8_e4m3_decode(codes)
        return np.where(np.isnan(y), np.float32(np.nan), y)

    report = run({"silu": silu_off_by_one_ulp, "fp8_e4m3_decode": decode_positive_nan})
    assert report.ops["silu"].status == "pass" and 0 < report.ops["silu"].worst["bound"] < 1
    decode = report.ops["fp8_e4m3_decode"]
    assert decode.status == "fail" and decode.worst["ulp"] == np.inf  # -NaN against +NaN
    assert decode.failures[0].mismatch.reference_bits == "0xffc00000"


def test_torch_cpu_tensors_in_and_out():
    torch = pytest.importorskip("torch")

    class TorchKernels:
        inputs = "torch"

        def resolve(self, op):
            return {"silu": lambda x: x * torch.sigmoid(x),
                    "swiglu": lambda g, u: torch.nn.functional.silu(g) * u,
                    "fp8_e4m3_decode": self.decode,
                    "argmax_token": lambda x: torch.argmax(x, dim=-1)}.get(op)

        @staticmethod
        def decode(codes):
            assert isinstance(codes, torch.Tensor) and codes.device.type == "cpu"
            y = codes.view(torch.float8_e4m3fn).to(torch.float32)  # torch's NaN here is 0x7FF00000
            return torch.where(torch.isnan(y), torch.copysign(torch.full_like(y, float("nan")), y), y)

    report = run(TorchKernels())
    assert report.inputs == "torch"
    for op in ("silu", "swiglu", "fp8_e4m3_decode", "argmax_token"):
        assert report.ops[op].status == "pass", report.ops[op].failures[:1]

    wrong = run({"silu": lambda x: x * torch.sigmoid(x * 1.01),
                 "fp8_e4m3_decode": lambda c: c.view(torch.float8_e4m3fn).to(torch.float32)}, inputs="torch")
    assert wrong.failing_ops() == ["fp8_e4m3_decode", "silu"]
    nan = wrong.ops["fp8_e4m3_decode"].failures[0].mismatch  # the NaN payload is part of the exact contract
    assert nan.reference_bits in ("0x7fc00000", "0xffc00000") and nan.got_bits != nan.reference_bits


def test_implementation_may_write_into_its_inputs():
    def scribbling_silu(x):
        y = activations.silu(x)
        x[...] = 0.0  # must not change what the reference or the comparison sees
        return y

    assert run({"silu": scribbling_silu}).ops["silu"].status == "pass"


@pytest.mark.parametrize("argv, message", [
    (["--impl", "no_such_module_xyz:OPS"], "cannot import module 'no_such_module_xyz'"),
    (["--impl", "impnb.conformance:NOT_THERE"], "has no attribute 'NOT_THERE'"),
    (["--impl", "impnb.conformance"], "expected MODULE:ATTR"),
    (["--impl", "impnb.conformance:REFERENCE", "--ops", "silu,no_such_op"], "unknown op(s) no_such_op"),
    (["--impl", "impnb.conformance:REFERENCE", "--size", "huge"], "--size 'huge'"),
    (["--impl", "impnb.conformance:REFERENCE", "--inputs", "jax"], "--inputs 'jax'"),
    (["--impl", "impnb.conformance:__doc__"], "must be a mapping"),
    ([], "required: --impl"),
])
def test_usage_errors_are_one_line_and_exit_2(argv, message, capsys):
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1 and message in captured.err


def test_a_module_that_raises_on_import_is_a_usage_error(tmp_path, monkeypatch, capsys):
    (tmp_path / "raising_kernels.py").write_text("raise ImportError('libcudart.so.12 not found')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert main(["--impl", "raising_kernels:OPS"]) == 2
    assert "libcudart.so.12 not found" in capsys.readouterr().err


def test_ops_selection_and_resolver_object():
    report = run(REFERENCE, ["silu", "attention_mask"])
    assert list(report.ops) == ["silu", "attention_mask"] and report.ok
    assert not run({}).ok  # nothing provided is not a pass


def test_the_same_implementation_as_a_dispatcher_backend(broken_module):
    from broken_kernels import OPS
    from impnb.errors import CrossCheckError
    x = np.array([1.0, 300.0, -448.0], np.float32)
    ops.register_backend("broken", OPS)
    try:
        assert ops.fp8_e4m3_encode(x, backend="broken").tolist() == [0x38, 0x77, 0xF7]
        with pytest.raises(CrossCheckError, match=r"2/3 elements.*0xfe.*0xf7"):
            ops.fp8_e4m3_encode(x, backend="check:broken")
        assert np.array_equal(ops.silu(x, backend="check:broken"), activations.silu(x))
    finally:
        ops.unregister_backend("broken")


def test_readme_example_works_as_written(tmp_path, monkeypatch):
    pytest.importorskip("torch")
    import re
    import subprocess
    from pathlib import Path
    root = Path(__file__).resolve().parent.parent
    text = (root / "README.md").read_text()
    section = text[text.index("## Test your own kernels against impnb"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    command = re.search(r"```bash\n(python -m impnb.conformance [^\n#]*)", section).group(1).split()
    (tmp_path / "my_kernels.py").write_text(code)
    env = {**__import__("os").environ, "PYTHONPATH": f"{root}:{tmp_path}"}
    run = subprocess.run([sys.executable, *command[1:]], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert (tmp_path / "report.json").exists(), run.stderr
    assert re.search(r"^silu +PASS", run.stdout, re.M), run.stdout
    import torch
    if int(torch.tensor([470.0]).to(torch.float8_e4m3fn).view(torch.uint8)) != 0x7E:
        # The README's FAIL line is torch 2.13's cast (448 for 464 < |x| <= 480); other versions give NaN there.
        assert re.search(r"^fp8_e4m3_encode +(PASS|FAIL)", run.stdout, re.M), run.stdout
        return
    shown = re.search(r"```text\n(.*?)```", section, re.S).group(1)
    for line in shown.splitlines():
        if line.strip() and line.strip() != "...":
            assert line in run.stdout, (line, run.stdout)
    assert run.returncode == 1 and (tmp_path / "report.json").exists()


def test_impnb_cuda_path_as_an_implementation():
    from tests.conftest import cuda_mode
    from impnb.conformance import CUDA
    if cuda_mode() is None:
        pytest.skip("no CUDA GPU and no Numba simulator")
    report = run(CUDA, ["fp8_e4m3_encode", "nvfp4_quantize", "silu"])
    assert report.ops["fp8_e4m3_encode"].status == "pass" and report.ops["nvfp4_quantize"].status == "pass"
    if cuda_mode() == "sim":
        assert report.ops["silu"].status == "skip"  # a CuPy RawKernel: not runnable in the simulator


def test_to_host_takes_torch_tensors_bit_for_bit():
    torch = pytest.importorskip("torch")
    import ml_dtypes
    from impnb.cuda._runtime import to_host
    x = torch.tensor([1.5, -0.0, float("nan"), 3.0e38], dtype=torch.float32)
    for dtype, numpy_dtype in ((torch.bfloat16, ml_dtypes.bfloat16), (torch.float8_e4m3fn, ml_dtypes.float8_e4m3fn),
                               (torch.float32, np.float32), (torch.float16, np.float16)):
        t = x.clamp(-448, 448).to(dtype) if dtype == torch.float8_e4m3fn else x.to(dtype)
        host = to_host(t)
        assert isinstance(host, np.ndarray) and host.dtype == numpy_dtype
        width = {1: torch.uint8, 2: torch.int16, 4: torch.int32}[t.element_size()]
        assert host.tobytes() == t.view(width).numpy().tobytes()
    param = torch.nn.Parameter(torch.ones(3))  # requires grad: detached, not an error
    assert to_host(param).tolist() == [1.0, 1.0, 1.0]
    assert to_host(torch.arange(6).reshape(2, 3).t()).tolist() == [[0, 3], [1, 4], [2, 5]]  # a strided view
