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


_HOST_SHIMS = r"""
#include <cmath>
#include <cstdio>
#include <cstring>
#include <xmmintrin.h>
#define __device__
#define __forceinline__ inline
using std::fabs;
static unsigned long long dbl_bits(double x) { unsigned long long u; std::memcpy(&u, &x, 8); return u; }
static unsigned f32_bits(float x) { unsigned u; std::memcpy(&u, &x, 4); return u; }
static float bits_f32(unsigned u) { float f; std::memcpy(&f, &u, 4); return f; }
static double dadd_rn(double a, double b) { volatile double r = a + b; return r; }
static double dsub_rn(double a, double b) { volatile double r = a - b; return r; }
static double ldexp_pow2(double a, int e) { return std::ldexp(a, e); }
"""

_HOST_MAIN = r"""
int main() {  // stdin: q s g divide (hex float bits) per line; stdout: result bits
    _mm_setcsr(_mm_getcsr() | 0x8040);  // flush-to-zero and denormals-are-zero, as -ftz=true on the GPU
    unsigned q, s, g; int d;
    while (std::scanf("%x %x %x %d", &q, &s, &g, &d) == 4)
        std::printf("%08x\n", f32_bits(exact_dequant(bits_f32(q), bits_f32(s), bits_f32(g), d)));
    return 0;
}
"""


def _exact_dequant_section() -> str:
    import importlib.resources
    text = importlib.resources.files("impnb.cuda.kernels").joinpath("impnb.cuh").read_text()
    section = text.split("// BEGIN exact_dequant")[1].split("// END exact_dequant")[0]
    return section.split("\n", 1)[1]  # without the rest of the BEGIN line


@pytest.mark.skipif(shutil.which("g++") is None, reason="no host C++ compiler")
def test_exact_dequant_rounds_like_float32_without_flushing(tmp_path, rng):
    """The dequantization step the GPU runs under CuPy's -ftz=true, built for the host with the x86 flush-to-zero
    and denormals-are-zero modes on (plain float32 arithmetic fails this test there): for multipliers from normal
    down to deep subnormal, and signed zeros and NaN, its bits equal NumPy's float32 q * fl32(s / g) and
    q * fl32(s * g) (IEEE, subnormals kept), the reference's order."""
    src = tmp_path / "exact.cpp"
    src.write_text(_HOST_SHIMS + "namespace {\n" + _exact_dequant_section() + "}\n" + _HOST_MAIN)
    exe = tmp_path / "exact"
    build = subprocess.run(["g++", "-O2", "-std=c++17", "-ffp-contract=off", "-o", str(exe), str(src)],
                           capture_output=True, text=True)
    assert build.returncode == 0, build.stderr[-3000:]
    import numpy as np
    from impnb.reference.fp8 import fp8_e4m3_decode
    n = 20000
    q = rng.choice(np.array([0, -0.0, 0.5, -0.5, 1, 1.5, -2, 3, 4, -6], np.float32), n)
    s = fp8_e4m3_decode(rng.integers(0, 256, n).astype(np.uint8))  # every scale byte: subnormals, NaN, -0
    g = np.float32(2.0) ** rng.integers(-150, 128, n).astype(np.float32) * (1 + rng.random(n)).astype(np.float32)
    g = g.astype(np.float32)
    divide = rng.integers(0, 2, n)
    with np.errstate(all="ignore"):
        m = np.where(divide == 1, s / g, s * g).astype(np.float32)
        want = (q * m).astype(np.float32)
    lines = "\n".join(f"{a:08x} {b:08x} {c:08x} {d}" for a, b, c, d in
                      zip(q.view(np.uint32), s.view(np.uint32), g.view(np.uint32), divide))
    run = subprocess.run([str(exe)], input=lines, capture_output=True, text=True, check=True)
    got = np.array([int(v, 16) for v in run.stdout.split()], np.uint64).astype(np.uint32).view(np.float32)
    subnormal = (np.abs(want) < np.float32(2.0 ** -126)) & (want != 0)
    assert subnormal.sum() > 100  # the range -ftz would flush is exercised
    same = (got.view(np.uint32) == want.view(np.uint32)) | (np.isnan(got) & np.isnan(want))
    assert same.all(), (q[~same][:5], s[~same][:5], g[~same][:5], divide[~same][:5], got[~same][:5], want[~same][:5])
