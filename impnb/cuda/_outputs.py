"""Outputs of the CuPy-expression ops (model ops' CUDA paths) inside ``impnb.cuda._alloc.guarded_allocations()``:
copied into guarded allocations, so the cross-check tests' canaries guard them like every other CUDA-path output.
Outside that test context ``guarded`` returns the value itself (no copy on the production path)."""
from __future__ import annotations

from . import _alloc


def guarded(value, label: str):
    """``value`` (a CuPy array, or a tuple of them), in buffers from ``_alloc.empty`` while guards are active."""
    if not _alloc.guards_active():
        return value
    if isinstance(value, tuple):
        return tuple(guarded(v, f"{label}[{i}]") for i, v in enumerate(value))
    out = _alloc.empty(value.shape, value.dtype, label=label)
    out[...] = value
    return out
