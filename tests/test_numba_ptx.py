"""The linear-attention family's Numba kernels compile to PTX for a Hopper GPU through NVVM, with no float64
instruction (tools/numba_ptx_check.py; the CUDA simulator that runs them in CI cannot see compiler errors). Skips
without a CUDA toolkit."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

TOOL = Path(__file__).resolve().parent.parent / "tools" / "numba_ptx_check.py"


def test_linear_attention_kernels_compile_for_sm90_in_float32():
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    if "CUDA_HOME" not in env and os.path.isdir("/usr/local/cuda"):
        env["CUDA_HOME"] = "/usr/local/cuda"
    run = subprocess.run([sys.executable, str(TOOL), "--cc", "90"], capture_output=True, text=True, env=env,
                         timeout=900)
    if run.returncode == 3:
        pytest.skip(f"no CUDA toolkit (NVVM) to compile with: {run.stderr.strip()[:200]}")
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.count(" ok: ") == 12, run.stdout
