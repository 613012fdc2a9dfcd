"""The conformance cases catch realistic bugs: every mutant in impnb.conformance.mutants fails on its own op and on
no other, through the runner, and the mutants' switchable copies with no switch turned pass every op; every
optional argument of every op is set by some case to a value that changes the reference's output."""
from __future__ import annotations

import copy
import inspect
import re
import warnings
from pathlib import Path

import pytest

from impnb import ops, tolerances
from impnb.conformance import run
from impnb.conformance.cases import load_all as load_cases
from impnb.conformance.mutants import CopiesImpl, MutantImpl, load_all
from impnb.conformance.runner import case_rng
from impnb.errors import CrossCheckError

MUTANTS = load_all()

# Optional arguments that must NOT change the result: the chunked delta rule is the recurrent map for any chunk size
# (its cases use several sizes; tests/test_linear_attention.py checks the equality).
RESULT_INVARIANT = {("gated_delta_rule_chunked", "chunk_size")}


def test_the_suite_is_large_and_covers_every_op_and_family():
    assert len(MUTANTS) >= 150
    assert {m.op for m in MUTANTS.values()} == set(ops.OPS)
    families = {ops.OPS[m.op].family for m in MUTANTS.values()}
    assert families == {spec.family for spec in ops.OPS.values()}


def test_the_readme_states_the_suite_as_it_is():
    text = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    assert re.search(rf"holds {len(MUTANTS)} mutants, at least one for\s+each of the {len(ops.OPS)} registered ops", text)
    assert f"all {len(MUTANTS)} fail on their own op" in text


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


def _optional_parameters():
    for op in ops.OPS:
        for name, p in inspect.signature(ops.reference_impl(op)).parameters.items():
            if p.default is not inspect.Parameter.empty and (op, name) not in RESULT_INVARIANT:
                yield op, name


def _with_default(op, name, args, kwargs):
    """(args, kwargs) with ``name`` back at its default, or None when the case leaves it there."""
    sig = inspect.signature(ops.reference_impl(op))
    default = sig.parameters[name].default
    positional = [n for n, p in sig.parameters.items() if p.kind is p.POSITIONAL_OR_KEYWORD]
    args, kwargs = list(args), dict(kwargs)
    if name in kwargs:
        value = kwargs.pop(name)
    elif name in positional and positional.index(name) < len(args):
        value, args[positional.index(name)] = args[positional.index(name)], default
    else:
        return None
    if value is default or (isinstance(value, (bool, int, float, str)) and value == default):
        return None
    return tuple(args), kwargs


def _changes_the_result(case, name) -> bool:
    args, kwargs = case.make(case_rng(case, 0), "tiny")
    reset = _with_default(case.op, name, args, kwargs)
    if reset is None:
        return False
    fn = ops.reference_impl(case.op)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        want = fn(*copy.deepcopy(args), **copy.deepcopy(kwargs))
        try:
            other = fn(*reset[0], **reset[1])
        except (ValueError, TypeError, IndexError):  # the inputs only fit the given value (e.g. k_eq_v's layout)
            return True
    try:
        tolerances.assert_close(case.op, want, other, args=args, kwargs=kwargs)
    except CrossCheckError:
        return True
    return False


@pytest.mark.parametrize("op,name", sorted(_optional_parameters()))
def test_every_optional_argument_is_set_by_a_case_to_a_value_that_changes_the_result(op, name):
    """A bug that ignores an argument is only caught when some case needs it: resetting the argument to its
    default must move the reference's output outside the op's own tolerance in at least one case."""
    assert any(_changes_the_result(c, name) for c in load_cases()[op]), f"{op}: no case needs {name}"
