"""Launching kernels: the array module, streams, the compile-once kernel cache, CuPy RawModule loading.

Every launch runs on a CuPy stream: the one given, else CuPy's current stream, so ``with stream:`` (or a stream
under CUDA-graph capture) takes every impnb op along. Numba kernels go onto that same stream through
``numba.cuda.external_stream(stream.ptr)``, with CuPy arrays wrapped without a synchronisation (a sync inside a
graph capture is illegal). Under the Numba simulator (``NUMBA_ENABLE_CUDASIM=1``) arrays are NumPy arrays, there
are no streams, and CuPy RawKernels cannot run (``require_gpu`` says so).

Compile once: a RawModule is built once per (file, template instantiation) and kept (``raw_function``); Numba
dispatchers compile once per argument-type signature. ``compile_counts()`` lets tests check nothing recompiles.
"""
from __future__ import annotations

import functools
import importlib.resources

import numpy as np

from . import _runtime as runtime

_NVRTC_OPTIONS = ("--std=c++17",)  # never --use_fast_math (IEEE division); CuPy itself appends -ftz=true
_raw_builds = {"modules": 0}


def xp():
    """The array module of the CUDA path: CuPy on a GPU, NumPy under the simulator."""
    if runtime.require() == "gpu":
        import cupy
        return cupy
    return np


def to_device(a, dtype=None):
    """``a`` as an array of the CUDA path (NumPy inputs are copied to the GPU), optionally cast (exact casts only)."""
    mod = xp()
    arr = mod.asarray(a)
    if dtype is not None and arr.dtype != np.dtype(dtype):
        arr = arr.astype(dtype)
    return arr


def require_gpu(what: str) -> None:
    if runtime.require() != "gpu":
        from ..errors import BackendUnavailable
        raise BackendUnavailable(f"{what} is a CuPy RawKernel: it needs a real GPU (the Numba simulator cannot run it)")


def gpu_only(fn):
    """Mark a CUDA-path op whose kernel is a CuPy RawKernel: it cannot run in the simulator (the cross-check tests
    skip it there, saying so, and tests/test_kernels_compile.py compiles its .cu file with nvcc instead)."""
    fn.gpu_only = True
    return fn


def current_stream(stream=None):
    """The CuPy stream a launch runs on: ``stream`` if given, else CuPy's current stream."""
    import cupy
    return stream if stream is not None else cupy.cuda.get_current_stream()


# ---- CuPy RawModule (CUDA C in impnb/cuda/kernels/*.cu) ------------------------------------------------------
def kernel_source(filename: str) -> str:
    return importlib.resources.files("impnb.cuda.kernels").joinpath(filename).read_text()


@functools.lru_cache(maxsize=None)
def raw_function(filename: str, name: str):
    """The compiled kernel ``name`` (a plain extern "C" name or a template instantiation like ``k<4,1,16>``),
    compiled once per process (CuPy also keeps the binary in its disk cache)."""
    import cupy
    templated = "<" in name
    module = cupy.RawModule(code=kernel_source(filename), options=_NVRTC_OPTIONS,
                            name_expressions=[name] if templated else None)
    _raw_builds["modules"] += 1
    return module.get_function(name)


def launch_raw(filename: str, name: str, grid, block, args, *, stream=None, shared_mem: int = 0) -> None:
    fn = raw_function(filename, name)
    with current_stream(stream):
        fn(tuple(grid), tuple(block), args, shared_mem=shared_mem)


# ---- Numba kernels -----------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=64)
def _numba_stream(ptr: int):
    from numba import cuda
    return cuda.external_stream(ptr)


def launch_numba(kernel, n_threads: int, *args, block: int = 256, stream=None) -> None:
    """Launch a 1-D Numba kernel over ``n_threads`` threads on the CuPy stream (or in the simulator)."""
    if n_threads <= 0:
        return
    grid = (n_threads + block - 1) // block
    if runtime.mode() == "sim":
        kernel[grid, block](*args)
        return
    from numba import cuda
    dargs = [cuda.as_cuda_array(a, sync=False) if hasattr(a, "__cuda_array_interface__") else a for a in args]
    kernel[grid, block, _numba_stream(current_stream(stream).ptr)](*dargs)


def compile_counts(*numba_kernels) -> dict:
    """How many RawModules were built, and how many signatures each given Numba dispatcher has compiled."""
    counts = {"raw_modules": _raw_builds["modules"]}
    for k in numba_kernels:
        name = getattr(getattr(k, "py_func", None), "__name__", None) or getattr(k, "__name__", repr(k))
        counts[name] = len(getattr(k, "overloads", {}) or {})
    return counts
