"""The registry is complete: every op has a reference, a tolerance rule and cross-check cases; CUDA paths match
the reference signature; the pending list is exact."""
import importlib
import inspect

import pytest

from impnb import ops, tolerances
from impnb.conformance.cases import load_all

CASES = load_all()


@pytest.mark.parametrize("name", sorted(ops.OPS))
def test_op_has_reference_with_math_docstring(name):
    fn = ops.reference_impl(name)
    assert callable(fn)
    assert fn.__doc__ and len(fn.__doc__.strip()) > 40, f"reference {name} must state its math in a docstring"


@pytest.mark.parametrize("name", sorted(ops.OPS))
def test_op_has_tolerance_entry(name):
    assert name in tolerances.TOLERANCES, f"{name} has no entry in impnb/tolerances.py"
    for rule in tolerances.TOLERANCES[name].values():
        assert rule.why.strip(), f"tolerance of {name} must say why"


@pytest.mark.parametrize("name", sorted(ops.OPS))
def test_op_has_crosscheck_cases(name):
    assert CASES.get(name), f"{name} has no cases in impnb/conformance/cases/{ops.OPS[name].family}.py"


def _cuda_function(name):
    spec = ops.OPS[name]
    try:
        module = importlib.import_module(f"impnb.cuda.{spec.family}")
    except ModuleNotFoundError as exc:
        if exc.name == f"impnb.cuda.{spec.family}":
            return None
        raise
    return getattr(module, name, None)


@pytest.mark.parametrize("name", sorted(ops.OPS))
def test_cuda_path_exists_unless_listed_pending(name):
    fn = _cuda_function(name)
    if name in ops.CUDA_PENDING:
        assert fn is None, f"{name} has a CUDA path: remove it from ops.CUDA_PENDING"
    else:
        assert fn is not None, f"{name} has no impnb/cuda/{ops.OPS[name].family}.py:{name}; list it in CUDA_PENDING"
        ref_sig = inspect.signature(ops.reference_impl(name))
        assert inspect.signature(fn) == ref_sig, f"{name}: CUDA signature {inspect.signature(fn)} != {ref_sig}"


def test_unknown_backend_and_op_are_clear_errors():
    with pytest.raises(KeyError, match="unknown op"):
        ops.call("no_such_op")
    name = sorted(ops.OPS)[0]
    with pytest.raises(ValueError, match="backend"):
        ops.call(name, backend="fastest")


def test_coverage_command_lists_every_op():
    table = ops.coverage_table()
    for name in ops.OPS:
        assert name in table


def test_registered_backend_runs_and_check_mode_compares_it_with_the_reference():
    import numpy as np
    from impnb.errors import BackendUnavailable, CrossCheckError
    from impnb.reference.activations import silu

    def wrong_silu(x):
        return silu(x) * np.float32(1.001)

    x = np.linspace(-3, 3, 7, dtype=np.float32)
    ops.register_backend("mine", {"silu": wrong_silu})
    try:
        assert np.array_equal(ops.call("silu", x, backend="mine"), wrong_silu(x))
        with pytest.raises(CrossCheckError, match="silu"):
            ops.call("silu", x, backend="check:mine")
        with pytest.raises(BackendUnavailable, match="no implementation of op 'gelu_tanh'"):
            ops.call("gelu_tanh", x, backend="mine")
        ops.register_backend("mine", lambda op: silu if op == "silu" else None)
        assert np.array_equal(ops.call("silu", x, backend="check:mine"), silu(x))
    finally:
        ops.unregister_backend("mine")
    with pytest.raises(ValueError, match="backend"):
        ops.call("silu", x, backend="mine")
    with pytest.raises(ValueError, match="identifier"):
        ops.register_backend("check", {})
