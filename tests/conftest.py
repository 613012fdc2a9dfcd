"""Shared test plumbing: the gpu marker, the backend under test, seeded generators, canary checks."""
from __future__ import annotations

import os

import numpy as np
import pytest


def _real_gpu() -> bool:
    try:
        import cupy
        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False


# Without a GPU, the Numba kernels run in the CUDA simulator (tiny shapes); this must be set before numba loads.
if "NUMBA_ENABLE_CUDASIM" not in os.environ and not _real_gpu():
    os.environ["NUMBA_ENABLE_CUDASIM"] = "1"

from impnb.cuda import _runtime as runtime  # noqa: E402


def pytest_collection_modifyitems(config, items):
    """`gpu` tests skip cleanly without a real GPU (they run on the device machine)."""
    if runtime.gpu_usable():
        return
    skip = pytest.mark.skip(reason="needs a real CUDA GPU (run on the device machine)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def rng(request):
    """A generator seeded from the test id, so a failure reproduces, and each test draws different values."""
    seed = int.from_bytes(request.node.nodeid.encode()[-8:].ljust(8, b"\0"), "little") ^ 0x5EED
    return np.random.default_rng(seed)


def cuda_mode() -> str | None:
    """'gpu', 'sim' or None: what the cross-check tests can run the CUDA path on."""
    return runtime.mode()


def size_class() -> str:
    """Case size: tiny shapes in the simulator, real shapes on a GPU (override with IMPNB_CASE_SIZE)."""
    return os.environ.get("IMPNB_CASE_SIZE") or ("real" if runtime.gpu_usable() else "tiny")
