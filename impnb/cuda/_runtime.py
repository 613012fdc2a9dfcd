"""Where CUDA code can run: a real GPU (CuPy + Numba-CUDA), the Numba simulator, or nowhere.

mode() is "gpu" when CuPy sees a device and Numba-CUDA imports, "sim" when NUMBA_ENABLE_CUDASIM=1 (kernels run on
the CPU on NumPy arrays; CuPy RawKernels cannot run there), else None. Importing this module imports neither
CuPy nor Numba: the probe runs on first use.
"""
from __future__ import annotations

import functools
import os

import numpy as np

from ..errors import BackendUnavailable


def simulator_requested() -> bool:
    return os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0")


@functools.lru_cache(maxsize=1)
def _probe() -> tuple[str | None, str]:
    """(mode, why): why says what is missing when mode is None."""
    if simulator_requested():
        try:
            from numba import cuda  # noqa: F401
        except Exception as exc:  # numba-cuda missing or broken
            return None, f"NUMBA_ENABLE_CUDASIM=1 but numba-cuda does not import: {exc}"
        return "sim", "Numba CUDA simulator"
    try:
        import cupy
        if cupy.cuda.runtime.getDeviceCount() < 1:
            return None, "CuPy sees no CUDA device"
    except Exception as exc:
        return None, f"CuPy is not usable ({type(exc).__name__}: {exc}); install impnb[cuda12] or impnb[cuda13]"
    try:
        from numba import cuda
        if not cuda.is_available():
            return None, "Numba-CUDA sees no CUDA device"
    except Exception as exc:
        return None, f"numba-cuda does not import ({type(exc).__name__}: {exc})"
    return "gpu", "CUDA GPU"


def mode() -> str | None:
    return _probe()[0]


def gpu_usable() -> bool:
    """True only on a real GPU: the simulator is never chosen by default."""
    return mode() == "gpu"


def require(gpu_only: bool = False) -> str:
    """Return the mode, or raise BackendUnavailable saying why CUDA code cannot run here."""
    m, why = _probe()
    if m is None:
        raise BackendUnavailable(f"backend 'cuda' cannot run here: {why}")
    if gpu_only and m != "gpu":
        raise BackendUnavailable("this CUDA op needs a real GPU (CuPy RawKernel); the Numba simulator cannot run it")
    return m


def to_host(obj):
    """NumPy copy of a device array: CuPy, Numba, or a torch tensor on any device (CPU or CUDA; bfloat16 and the
    float8 dtypes come back as their ml_dtypes types, bit for bit). NVFP4Tensor-like objects go through their own
    to_host(). Anything else is returned as is."""
    if hasattr(obj, "to_host") and callable(obj.to_host):
        return obj.to_host()
    if _is_torch_tensor(obj):  # before the CUDA-interface test: a CUDA torch tensor has one, but no .get()
        return _torch_to_numpy(obj)
    if hasattr(obj, "__cuda_array_interface__"):
        if hasattr(obj, "get"):  # CuPy
            return obj.get()
        return obj.copy_to_host()  # Numba device array
    if type(obj).__module__.startswith("numba.cuda.simulator"):
        return np.asarray(obj)
    return obj


def _is_torch_tensor(obj) -> bool:
    """True for torch.Tensor (and subclasses such as Parameter) without importing torch."""
    return any(cls.__module__ == "torch" and cls.__name__ == "Tensor" for cls in type(obj).__mro__)


# torch dtypes NumPy has no type for: (bit-carrier dtype name in torch, ml_dtypes type name)
_TORCH_VIA_BITS = {"bfloat16": ("int16", "bfloat16"), "float8_e4m3fn": ("uint8", "float8_e4m3fn"),
                   "float8_e5m2": ("uint8", "float8_e5m2"), "float8_e8m0fnu": ("uint8", "float8_e8m0fnu")}


def _torch_to_numpy(t) -> np.ndarray:
    import torch
    t = t.detach()
    if t.device.type != "cpu":
        t = t.to("cpu")
    name = str(t.dtype).removeprefix("torch.")
    if name in _TORCH_VIA_BITS:
        import ml_dtypes
        carrier, target = _TORCH_VIA_BITS[name]
        return t.contiguous().view(getattr(torch, carrier)).numpy().copy().view(getattr(ml_dtypes, target))
    return t.resolve_conj().resolve_neg().numpy().copy()
