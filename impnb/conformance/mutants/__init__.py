"""Mutants: realistic implementation bugs that the conformance cases must catch.

Each mutant is a copy of one reference op with ONE plausible mistake (the kind that real engines have shipped: an
FP8 clamp at 0x77 = 240, a reciprocal global scale, ring-slot mask coordinates, softcap after the mask, ...).
``MutantImpl(m)`` is a whole implementation: the mutant for its op, the reference for every other op. Run through
the conformance runner, a mutant must fail on its own op and nowhere else, and the reference must pass everything:
``tests/test_conformance_mutants.py`` checks both.

The copies are written once per family with keyword switches whose defaults reproduce the reference exactly (a
test runs every copy with its defaults through the runner too); a mutant is one switch turned.
"""
from __future__ import annotations

import functools
import importlib
from dataclasses import dataclass
from typing import Callable

_FAMILIES = ("formats", "model", "moe", "sampling", "fused", "linear_attention")


@dataclass(frozen=True)
class Mutant:
    op: str
    name: str
    bug: str  # one sentence: what the implementation gets wrong
    fn: Callable

    def __str__(self):
        return f"{self.op}:{self.name}"


MUTANTS: dict[str, Mutant] = {}
COPIES: dict[str, Callable] = {}  # op -> the switchable copy with reference defaults


def copy_of(op: str):
    """Register ``fn`` as the switchable copy of ``op`` (defaults = the reference)."""
    def register(fn):
        COPIES[op] = fn
        return fn
    return register


def mutant(op: str, name: str, bug: str, fn: Callable, **switches) -> None:
    """Register ``fn`` with ``switches`` turned as the mutant ``op:name``."""
    key = f"{op}:{name}"
    if key in MUTANTS:
        raise RuntimeError(f"duplicate mutant {key}")
    MUTANTS[key] = Mutant(op, name, bug, functools.partial(fn, **switches) if switches else fn)


def load_all() -> dict[str, Mutant]:
    for family in _FAMILIES:
        importlib.import_module(f"{__name__}.{family}")
    return MUTANTS


class MutantImpl:
    """An implementation of every op: ``mutant.fn`` for its op, the reference elsewhere."""

    def __init__(self, mutant: Mutant):
        self.mutant = mutant
        self.name = f"mutant {mutant}"

    def resolve(self, op: str):
        from ... import ops
        return self.mutant.fn if op == self.mutant.op else ops.reference_impl(op)


class CopiesImpl:
    """Every switchable copy with its defaults (the reference elsewhere): must pass every op."""
    name = "mutant copies, no switch turned"

    def resolve(self, op: str):
        from ... import ops
        load_all()
        return COPIES.get(op) or ops.reference_impl(op)
