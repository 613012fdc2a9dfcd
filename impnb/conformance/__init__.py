"""Conformance: check any implementation of impnb's ops against the reference.

    python -m impnb.conformance --impl MODULE:ATTR [--ops a,b] [--size tiny|real] [--json FILE]
    report = impnb.conformance.run({"silu": my_silu, ...}); print(report.ok, report.failing_ops())

The cross-check cases of every registered op (``impnb.conformance.cases``) ship with the package, so an installed
impnb can check an implementation; ``impnb.conformance.mutants`` holds realistic bugs that the cases must catch.
``REFERENCE`` and ``CUDA`` are ready-made implementations (impnb's own two paths).
"""
from __future__ import annotations

from .runner import Report, UsageError, load_impl, run


class _Backend:
    """impnb's own path ``backend`` ("reference" or "cuda") as an implementation: resolve(op) -> callable."""

    def __init__(self, backend: str):
        self.name = f"impnb {backend}"
        self.backend = backend

    def resolve(self, op: str):
        """The op's function; None where this machine cannot run it (no CUDA path yet, or a CuPy RawKernel under
        the Numba simulator). Raises BackendUnavailable when CUDA cannot run here at all."""
        from .. import ops
        if self.backend == "reference":
            return ops.reference_impl(op)
        if op in ops.CUDA_PENDING:
            return None
        fn = ops.cuda_impl(op)
        from ..cuda import _runtime
        return None if (getattr(fn, "gpu_only", False) and _runtime.mode() != "gpu") else fn


REFERENCE = _Backend("reference")
CUDA = _Backend("cuda")

__all__ = ["run", "load_impl", "Report", "UsageError", "REFERENCE", "CUDA"]
