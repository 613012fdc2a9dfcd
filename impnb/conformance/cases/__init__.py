"""Cross-check cases for every registered op: ``CASES[op] -> [Case]``.

One module per op family (``impnb/conformance/cases/<family>.py``) registers its cases with ``@case(op, id)``. A case
builds fresh random inputs from a seeded generator at a size class: "tiny" (the Numba simulator in CI) or "real"
(a GPU). Never only zeros: awkward shapes, real-model shapes (labelled) and the edge cases of the format.
"""
from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass
from typing import Callable

import numpy as np


@dataclass(frozen=True)
class Case:
    op: str
    id: str
    make: Callable[[np.random.Generator, str], tuple[tuple, dict]]  # (rng, size) -> (args, kwargs)

    def __str__(self):
        return f"{self.op}[{self.id}]"


CASES: dict[str, list[Case]] = {}


def case(op: str, case_id: str):
    """Register ``make(rng, size) -> (args, kwargs)`` as a cross-check case of ``op``."""
    def register(make):
        entries = CASES.setdefault(op, [])
        if any(c.id == case_id for c in entries):
            raise RuntimeError(f"duplicate case {op}[{case_id}]")
        entries.append(Case(op, case_id, make))
        return make
    return register


def load_all() -> dict[str, list[Case]]:
    for info in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{info.name}")
    return CASES
