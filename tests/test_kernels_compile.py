"""The CUDA C kernels (impnb/cuda/kernels/<family>.cu + impnb.cuh, CuPy RawKernels) compile with nvcc for Hopper,
in CI too.

They cannot run in the Numba simulator, so CI builds every instantiation the host code can launch
(impnb.cuda._kernels.INSTANTIATIONS, taken by address so nvcc instantiates each template exactly as NVRTC's
name_expressions do) with ptxas' resource report: a kernel that needs a stack frame or spills (a register array
indexed at run time) is a performance bug in a memory-bound kernel and fails here. Skips cleanly without nvcc.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest

from impnb.cuda import _kernels
from impnb.cuda._launch import kernel_source


def _nvcc() -> str | None:
    found = shutil.which("nvcc")
    for candidate in (found, "/usr/local/cuda/bin/nvcc"):
        if candidate and os.path.exists(candidate):
            return candidate
    return None


NVCC = _nvcc()


def with_instantiations(filename: str) -> str:
    """The file as NVRTC compiles it, plus a host table taking the address of every template instantiation."""
    templated = [n for n in _kernels.instantiations(filename) if "<" in n]
    table = ""
    if templated:
        table = ("\nstatic void* const impnb_instantiations[] = {" + ", ".join(f"(void*)&{n}" for n in templated)
                 + "};\n")
    return kernel_source(filename) + table


@pytest.mark.skipif(NVCC is None, reason="nvcc not found (CUDA toolkit absent)")
@pytest.mark.parametrize("filename", _kernels.files())
def test_kernel_file_compiles_for_sm90_without_stack_frames(tmp_path, filename):
    source = tmp_path / filename
    source.write_text(with_instantiations(filename))
    result = subprocess.run([NVCC, "-arch=sm_90", "-cubin", "-std=c++17", "-Xptxas", "-v", "-o",
                             str(tmp_path / "k.cubin"), str(source)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-4000:]
    report = result.stderr
    entries = re.findall(r"Compiling entry function '(\w+)'", report)
    assert len(entries) == len(_kernels.instantiations(filename)), report[-2000:]
    frames = [int(b) for b in re.findall(r"(\d+) bytes stack frame", report)]
    spills = [int(b) for b in re.findall(r"(\d+) bytes spill stores", report)]
    assert frames and max(frames) == 0 and max(spills) == 0, report[-4000:]


def test_every_kernel_file_is_listed():
    import importlib.resources
    root = importlib.resources.files("impnb.cuda.kernels")
    on_disk = sorted(p.name for p in root.iterdir() if p.name.endswith(".cu"))
    assert on_disk == _kernels.files()


def test_no_token_pasting_and_one_header():
    """Entry points are plain names grep finds: no ## pasting, no macro-generated kernels; the one header holds the
    decoders (no other file defines them)."""
    import importlib.resources
    root = importlib.resources.files("impnb.cuda.kernels")
    for name in _kernels.files():
        text = root.joinpath(name).read_text()
        assert "##" not in text, name
        assert not re.search(r"#define\s+\w+\(", text), f"{name}: function-like macro"
        assert '#include "impnb.cuh"' in text, name
        for decoder in ("fp8_e4m3(", "e2m1x2_scaled(", "e4m3_to_float(", "e2m1_pair("):
            assert f"float {decoder}" not in text and f"float2 {decoder}" not in text, f"{name} defines {decoder}"
