"""The array kind an implementation takes: case inputs converted from NumPy, outputs brought back to NumPy.

    "numpy"        NumPy arrays (a private copy per call, so an implementation that writes into its inputs cannot
                   change what the reference sees)
    "torch"        torch CPU tensors;  "torch:cuda", "torch:cuda:1", ...: torch tensors on that device
    "cupy"         CuPy arrays on the current GPU
NVFP4Tensor inputs keep the dataclass: CuPy fields for "cupy", NumPy fields otherwise (the dataclass checks NumPy
dtypes; a torch implementation takes ``torch.from_numpy(t.packed)``). Scalars, strings and None pass unchanged.
Outputs of any kind (NumPy, CuPy, Numba, torch on any device, tuples, NVFP4Tensor) come back through
``impnb.cuda._runtime.to_host``.
"""
from __future__ import annotations

import copy
import dataclasses

import numpy as np

from ..cuda._runtime import to_host
from ..formats import NVFP4Tensor

KINDS = ("numpy", "torch", "cupy")  # plus "torch:<device>"


def check_kind(kind: str) -> str:
    """``kind`` if it names an array kind, else ValueError (a usage error)."""
    if kind in KINDS or kind.startswith("torch:"):
        return kind
    raise ValueError(f"--inputs {kind!r}: expected numpy, torch, torch:<device> (e.g. torch:cuda) or cupy")


def convert(obj, kind: str):
    """A copy of case arguments ``obj`` (args tuple, kwargs dict, or one value) as ``kind`` arrays."""
    if kind == "numpy":
        return copy.deepcopy(obj)
    if isinstance(obj, tuple):
        return tuple(convert(o, kind) for o in obj)
    if isinstance(obj, list):
        return [convert(o, kind) for o in obj]
    if isinstance(obj, dict):
        return {k: convert(v, kind) for k, v in obj.items()}
    if isinstance(obj, NVFP4Tensor):
        if kind != "cupy":
            return copy.deepcopy(obj)
        return dataclasses.replace(obj, packed=_cupy(obj.packed), scales=_cupy(obj.scales))
    if isinstance(obj, np.ndarray):
        return _cupy(obj) if kind == "cupy" else _torch(obj, kind)
    return obj


def _torch(a: np.ndarray, kind: str):
    import torch
    device = kind.partition(":")[2] or "cpu"
    return torch.from_numpy(np.ascontiguousarray(a).copy()).to(device)


def _cupy(a: np.ndarray):
    import cupy
    return cupy.asarray(a)


def host(obj):
    """NumPy version of an implementation's output, recursively through tuples and lists."""
    if isinstance(obj, tuple):
        return tuple(host(o) for o in obj)
    if isinstance(obj, list):
        return [host(o) for o in obj]
    return to_host(obj)
