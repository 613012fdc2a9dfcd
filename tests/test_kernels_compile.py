"""The CUDA C kernels (impnb/cuda/kernels/*.cu, CuPy RawKernels) compile with nvcc for Hopper, in CI too.

They cannot run in the Numba simulator, so CI at least builds every instantiation the host code can launch, with
ptxas' resource report: a kernel that needs a stack frame (a register array indexed at run time, or spills) is a
performance bug in a memory-bound kernel and fails here. Skips cleanly when nvcc is absent.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest

from impnb.cuda._launch import kernel_source
from impnb.cuda.nvfp4 import KERNELS, gemv_kernel_names


def _nvcc() -> str | None:
    found = shutil.which("nvcc")
    for candidate in (found, "/usr/local/cuda/bin/nvcc"):
        if candidate and os.path.exists(candidate):
            return candidate
    return None


NVCC = _nvcc()
pytestmark = pytest.mark.skipif(NVCC is None, reason="nvcc not found (CUDA toolkit absent)")


def _instantiation(name: str) -> str:
    """``nvfp4_gemv_kernel<4,1,16>`` -> an explicit template instantiation nvcc will compile."""
    base, targs = re.fullmatch(r"(\w+)<([\d,]+)>", name).groups()
    return (f"template __global__ void {base}<{targs}>(const u8*, const u8*, const float*, float*, int, int, "
            "float, int);")


def test_nvfp4_kernels_compile_for_sm90_without_stack_frames(tmp_path):
    source = tmp_path / "nvfp4_all.cu"
    source.write_text(kernel_source(KERNELS) + "\n" + "\n".join(_instantiation(n) for n in gemv_kernel_names()))
    result = subprocess.run([NVCC, "-arch=sm_90", "-cubin", "-std=c++17", "-Xptxas", "-v", "-o",
                             str(tmp_path / "nvfp4.cubin"), str(source)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-4000:]
    report = result.stderr
    entries = re.findall(r"Compiling entry function '(\w+)'", report)
    assert len(entries) == len(gemv_kernel_names()) + 3, report[-2000:]  # + dequant, split, combine
    frames = [int(b) for b in re.findall(r"(\d+) bytes stack frame", report)]
    spills = [int(b) for b in re.findall(r"(\d+) bytes spill stores", report)]
    assert frames and max(frames) == 0 and max(spills) == 0, report[-4000:]


def _kernel_files() -> list[str]:
    import importlib.resources
    root = importlib.resources.files("impnb.cuda.kernels")
    return sorted(p.name for p in root.iterdir() if p.name.endswith(".cu"))


@pytest.mark.parametrize("filename", _kernel_files())
def test_every_kernel_file_compiles_for_sm90(tmp_path, filename):
    """Every .cu file the CUDA path loads compiles as NVRTC would see it (its extern "C" kernels are built)."""
    source = tmp_path / filename
    source.write_text(kernel_source(filename))
    result = subprocess.run([NVCC, "-arch=sm_90", "-cubin", "-std=c++17", "-o", str(tmp_path / "k.cubin"),
                             str(source)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-4000:]
