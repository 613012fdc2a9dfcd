"""Launch the NVFP4 GEMV / GEMM once per shape (after a warm-up) so that Nsight Compute can profile each launch.

    ncu --section SpeedOfLight --section MemoryWorkloadAnalysis --section Occupancy --section WarpStateStats \
        --launch-skip 0 python tools/ncu_gemv.py [N x K ...] [--gemm M]

The warm-up compiles the kernels under the same names; profile with ``--kernel-name regex:gemv|gemm`` and
``--launch-skip`` / ``--launch-count`` to select one launch per shape.
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from tools.bench_ops import random_nvfp4  # noqa: E402

DEFAULT_SHAPES = ["262144x640", "14336x4096", "4096x4096", "704x2816"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("shapes", nargs="*", default=DEFAULT_SHAPES, help="NxK weight shapes")
    parser.add_argument("--gemm", type=int, default=0, help="also nvfp4_gemm with this many activation rows")
    args = parser.parse_args(argv)
    import cupy
    from impnb.cuda.nvfp4 import nvfp4_gemm, nvfp4_gemv
    rng = np.random.default_rng(0)
    for shape in args.shapes:
        n, k = (int(v) for v in shape.lower().split("x"))
        w = random_nvfp4(rng, n, k)
        x = cupy.asarray(rng.standard_normal(k).astype(np.float32))
        nvfp4_gemv(w, x)
        cupy.cuda.runtime.deviceSynchronize()
        nvfp4_gemv(w, x)  # the profiled launch
        if args.gemm:
            xm = cupy.asarray(rng.standard_normal((args.gemm, k)).astype(np.float32))
            nvfp4_gemm(w, xm)
        cupy.cuda.runtime.deviceSynchronize()
        print(f"{shape}: done", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
