"""The conformance cases catch realistic bugs: every mutant in impnb.conformance.mutants fails on its own op and on
no other, through the runner, and the mutants' switchable copies with no switch turned pass every op."""
from __future__ import annotations

import pytest

from impnb import ops
from impnb.conformance import run
from impnb.conformance.mutants import CopiesImpl, MutantImpl, load_all

MUTANTS = load_all()


def test_the_suite_is_large_and_covers_every_family():
    assert len(MUTANTS) >= 40
    families = {ops.OPS[m.op].family for m in MUTANTS.values()}
    assert families == {spec.family for spec in ops.OPS.values()}


def test_copies_with_no_switch_turned_pass_every_op():
    report = run(CopiesImpl())
    assert report.ok, report.failing_ops()


@pytest.mark.parametrize("key", sorted(MUTANTS))
def test_mutant_fails_on_its_own_op_only(key):
    m = MUTANTS[key]
    report = run(MutantImpl(m))
    assert report.failing_ops() == [m.op], f"{m}: {m.bug}"
    for f in report.ops[m.op].failures:  # a readable failure: index and bits, or the exception it raised
        assert f.mismatch.describe() and "not comparable" not in f.mismatch.describe(), f.mismatch.describe()


@pytest.mark.parametrize("seed", [1, 2])
def test_caught_on_fresh_inputs_too(seed):
    missed = [str(m) for m in MUTANTS.values() if run(MutantImpl(m), [m.op], seed=seed).ok]
    assert not missed
