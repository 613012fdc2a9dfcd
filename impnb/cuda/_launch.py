"""Launching kernels: the array module, streams, the compile-once kernel cache, CuPy RawModule loading.

Every launch runs on a CuPy stream: the one given, else CuPy's current stream, so ``with stream:`` (or a stream
under CUDA-graph capture) takes every impnb op along. Numba kernels go onto that same stream through
``numba.cuda.external_stream(stream.ptr)``, with CuPy arrays wrapped without a synchronisation (a sync inside a
graph capture is illegal). Under the Numba simulator (``NUMBA_ENABLE_CUDASIM=1``) arrays are NumPy arrays, there
are no streams, and CuPy RawKernels cannot run (``require_gpu`` says so).

Compile once: a RawModule is built once per .cu file with all its instantiations and kept (``raw_function``); Numba
dispatchers compile once per argument-type signature. ``compile_counts()`` lets tests check nothing recompiles.
"""
from __future__ import annotations

import contextlib
import functools
import importlib.resources
import warnings

import numpy as np

from . import _runtime as runtime

_NVRTC_OPTIONS = ("--std=c++17",)  # never --use_fast_math (IEEE division); CuPy itself appends -ftz=true
_raw_builds = {"modules": 0}
# Small ops launch small grids on purpose (one token, one row); Numba's low-occupancy warning says nothing useful
# there and floods the output of every CLI run.
warnings.filterwarnings("ignore", message=r".*Grid size .* will likely result in GPU under-utilization")


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
HEADER = "impnb.cuh"


def kernel_source(filename: str) -> str:
    """The source of ``filename`` with ``#include "impnb.cuh"`` replaced by the header's text (one translation
    unit: NVRTC needs no include path)."""
    root = importlib.resources.files("impnb.cuda.kernels")
    text = root.joinpath(filename).read_text()
    return text.replace(f'#include "{HEADER}"', root.joinpath(HEADER).read_text(), 1)


@functools.lru_cache(maxsize=None)
def _module(filename: str, names: tuple[str, ...]):
    import cupy
    _raw_builds["modules"] += 1
    return cupy.RawModule(code=kernel_source(filename), options=_NVRTC_OPTIONS,
                          name_expressions=[n for n in names if "<" in n] or None)


@functools.lru_cache(maxsize=None)
def raw_function(filename: str, name: str):
    """The compiled kernel ``name`` (a plain extern "C" name or a template instantiation like ``k<4,1,16>``): one
    RawModule per file with every instantiation of impnb.cuda._kernels, compiled once per process (CuPy also keeps
    the binary in its disk cache); a name outside that list gets a module of its own."""
    from ._kernels import instantiations
    known = tuple(instantiations(filename))
    return _module(filename, known if name in known else (name,)).get_function(name)


_recording: list | None = None


@contextlib.contextmanager
def recorded_launches():
    """Within the block, CUDA C launches are recorded, not run: yields the list of (filename, name, grid, block,
    args, shared_mem) (tools/bench_generate.py replays each alone to time it)."""
    global _recording
    previous, _recording = _recording, []
    try:
        yield _recording
    finally:
        _recording = previous


def launch_raw(filename: str, name: str, grid, block, args, *, stream=None, shared_mem: int = 0) -> None:
    if _recording is not None:
        _recording.append((filename, name, grid, block, args, shared_mem))
        return
    fn = raw_function(filename, name)
    if shared_mem > 48 * 1024 and fn.max_dynamic_shared_size_bytes < shared_mem:
        fn.max_dynamic_shared_size_bytes = shared_mem
    with current_stream(stream):
        fn(_dims(grid), _dims(block), tuple(kernel_arg(a) for a in args), shared_mem=int(shared_mem))


def _dims(d) -> tuple:
    return tuple(int(v) for v in d) if isinstance(d, (tuple, list)) else (int(d),)


def kernel_arg(a):
    """A kernel argument: None -> a null pointer, bool / int -> int32, float -> float32, arrays as they are."""
    if a is None:
        return np.uint64(0)
    if isinstance(a, (bool, np.bool_)):
        return np.int32(int(a))
    if isinstance(a, (int, np.integer)) and not isinstance(a, (np.int64, np.uint64)):
        return np.int32(a)
    if isinstance(a, (float, np.floating)):
        return np.float32(a)
    return a


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


@functools.lru_cache(maxsize=1)
def sm_count() -> int:
    """Streaming multiprocessors of the current device (grid sizes of the engine's kernels)."""
    import cupy
    return int(cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)["multiProcessorCount"])
