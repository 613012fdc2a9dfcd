"""The one allocation helper for CUDA-path outputs, with canaries for tests.

``empty(shape, dtype)`` is how every op in impnb/cuda allocates its outputs (and scratch). Normally it is the array
module's ``empty``. Inside ``guarded_allocations()`` each allocation is carved out of a larger buffer: POISON-filled
guard regions of ``GUARD_BYTES`` before and after, and the payload itself poisoned too (so an element the kernel
never wrote cannot pass for a right answer by luck of zeroed memory). ``check()`` (and leaving the context) reads the
guards back and raises ``GuardViolation`` naming the allocation, the side and the first clobbered byte: an
out-of-bounds write (a packed-FP4 store one byte too far, a tail block indexed past N) is caught even when the
values inside the output are right. Op signatures do not change: tests just wrap calls in the context.
"""
from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass, field

import numpy as np

GUARD_BYTES = 256  # keeps the payload 256-byte aligned, as CuPy's own allocations are
POISON = 0xA5

_active = threading.local()


class GuardViolation(AssertionError):
    """A kernel wrote outside its output: a guard region around an allocation was changed."""


@dataclass
class _Allocation:
    buffer: object  # uint8 [GUARD + padded payload + GUARD]
    nbytes: int
    label: str


@dataclass
class GuardedAllocations:
    allocations: list = field(default_factory=list)

    def check(self) -> int:
        """Raise GuardViolation if any guard changed; return how many allocations were checked."""
        from ._runtime import to_host
        for a in self.allocations:
            host = np.asarray(to_host(a.buffer))
            for side, region, base in (("before", host[:GUARD_BYTES], -GUARD_BYTES),
                                       ("after", host[GUARD_BYTES + a.nbytes:], a.nbytes)):
                bad = np.flatnonzero(region != POISON)
                if bad.size:
                    raise GuardViolation(
                        f"out-of-bounds write {side} {a.label}: {bad.size} guard bytes changed, first at byte offset "
                        f"{base + int(bad[0])} from the start of the {a.nbytes}-byte output (value 0x{int(region[bad[0]]):02x})")
        return len(self.allocations)


@contextlib.contextmanager
def guarded_allocations():
    """Within this context, every CUDA-path allocation gets poisoned guard regions; they are checked on exit."""
    previous = getattr(_active, "guards", None)
    guards = GuardedAllocations()
    _active.guards = guards
    try:
        yield guards
    finally:
        _active.guards = previous
    guards.check()


def guards_active() -> bool:
    """True inside ``guarded_allocations()`` (tests)."""
    return getattr(_active, "guards", None) is not None


def empty(shape, dtype, *, label: str = "output"):
    """An uninitialised array of the CUDA path (CuPy on a GPU, NumPy in the simulator), guarded in tests."""
    from ._launch import xp
    mod = xp()
    shape = tuple(int(s) for s in (shape if isinstance(shape, (tuple, list)) else (shape,)))
    dtype = np.dtype(dtype)
    guards = getattr(_active, "guards", None)
    if guards is None:
        return mod.empty(shape, dtype)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    padded = -(-nbytes // GUARD_BYTES) * GUARD_BYTES
    buffer = mod.full(GUARD_BYTES + padded + GUARD_BYTES, POISON, dtype=np.uint8)
    payload = buffer[GUARD_BYTES:GUARD_BYTES + nbytes].view(dtype).reshape(shape)
    guards.allocations.append(_Allocation(buffer, nbytes, f"{label} {shape} {dtype.name}"))
    return payload


def zeros(shape, dtype, *, label: str = "output"):
    out = empty(shape, dtype, label=label)
    out[...] = 0
    return out
