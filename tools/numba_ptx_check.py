"""Compile the linear-attention family's Numba kernels to PTX for a GPU architecture, without a GPU.

    python tools/numba_ptx_check.py [--cc 90]

The CUDA simulator (where CI runs these kernels) executes them as Python, so it cannot catch what only the real
compiler sees: an unsupported function, a type that does not unify, float64 arithmetic creeping into a float32
kernel. This compiles each kernel with the argument types its launcher passes (float32 C-contiguous 1-D arrays,
int64 sizes, float32 / bool scalars) through NVVM, as on a GPU, and reports the PTX size and any f64 instruction.
Needs NVVM (a CUDA toolkit; CUDA_HOME or the usual paths) but no driver and no NVRTC: the two lookups of the current
device's architecture and of NVRTC's location are answered with the --cc given. Exit status 1 if any kernel fails
or uses float64; 3 when NVVM is not found.
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))


def _patch_for_no_gpu(cc: tuple[int, int]) -> None:
    from numba.cuda import cuda_paths, dispatcher
    from numba.cuda.cudadrv import nvrtc
    nvrtc.get_arch_option = lambda major, minor: f"compute_{major}{minor}"
    cuda_paths._get_nvrtc_path = lambda: ("<not used>", None)
    dispatcher.get_current_device = lambda: type("Device", (), {"compute_capability": cc})()


def kernels():
    from numba import boolean, float32, int64
    import impnb.cuda.activations as ac
    import impnb.cuda.linear_attention as la
    import impnb.cuda.norms as nm
    a, i, f, b = float32[::1], int64, float32, boolean
    return {
        la._conv_kernel: (a, a, a, a, i, i, i, b),
        la._conv_state_kernel: (a, a, a, i, i, i),
        la._gates_kernel: (a, a, a, a, a, a, i, i),
        la._delta_kernel: (a, a, a, a, a, a, a, i, i, i, i, i, f, b, f),
        la._normalise_kernel: (a, a, a, a, i, i, i, i, f, b, f),
        la._gamma_kernel: (a, a, a, a, i, i, i, i),
        la._pairs_kernel: (a, a, a, a, a, a, i, i, i, i, i),
        la._solve_kernel: (a, a, a, a, a, a, a, i, i, i, i, i, i, i),
        la._scan_kernel: (a, a, a, a, a, a, a, a, a, i, i, i, i, i, i, i),
        nm._gated_rms_kernel: (a, a, a, a, i, i, f),
        nm._l2_kernel: (a, a, i, i, f),
        ac._sigmoid_gate_kernel: (a, a, a, i),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cc", default="90", help="compute capability, e.g. 90 (Hopper), 80, 100")
    args = ap.parse_args(argv)
    if os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0"):
        print("error: unset NUMBA_ENABLE_CUDASIM (the simulator compiles nothing)", file=sys.stderr)
        return 2
    cc = (int(args.cc[:-1]), int(args.cc[-1]))
    from numba import cuda
    _patch_for_no_gpu(cc)
    try:
        from numba.cuda.cudadrv.nvvm import NVVM
        NVVM()
    except Exception as exc:  # no CUDA toolkit: nothing to check against
        print(f"NVVM not found ({type(exc).__name__}: {str(exc)[:200]})", file=sys.stderr)
        return 3
    failed = 0
    for kernel, signature in kernels().items():
        name = kernel.py_func.__name__
        try:
            ptx, _ = cuda.compile_ptx(kernel.py_func, signature, cc=cc)
        except Exception as exc:
            failed += 1
            print(f"{name:22s} FAILED {type(exc).__name__}: {str(exc)[:400]}")
            continue
        f64 = sum(1 for line in ptx.splitlines() if ".f64" in line and not line.lstrip().startswith("//"))
        failed += f64 > 0
        print(f"{name:22s} ok: {len(ptx)} characters of PTX for sm_{args.cc}, {f64} float64 instructions")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
