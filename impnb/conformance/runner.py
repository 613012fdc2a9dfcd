"""Run every case of every op an implementation provides against the reference, through the tolerance table.

    report = run(impl, ops=None, size="tiny", seed=0, inputs="numpy")

``impl`` is a mapping op name -> callable, an object with ``resolve(op_name) -> callable | None``, or a function
op name -> callable | None; the callables take the reference's signature (impnb/reference/<family>.py). Ops it
does not provide are skipped. Each case builds its inputs from a generator seeded by (seed, case name), so a run
is reproducible and another ``seed`` gives fresh random inputs. An exception raised by the implementation fails
that case (with its message); it never stops the run.
"""
from __future__ import annotations

import importlib
import warnings
import zlib
from dataclasses import dataclass, field

import numpy as np

from .. import ops as registry
from ..errors import BackendUnavailable
from . import arrays
from .cases import Case, load_all
from .compare import Mismatch, compare

SIZES = ("tiny", "real")


class UsageError(ValueError):
    """The command line or the implementation spec is wrong (the CLI prints one line and exits 2)."""


@dataclass
class CaseFailure:
    case: str
    mismatch: Mismatch

    def to_json(self) -> dict:
        m = self.mismatch
        out = {"case": self.case, "output": m.output, "message": m.message or m.describe()}
        if m.index is not None:
            out.update({"index": list(m.index), "reference": _jsonable(m.reference), "got": _jsonable(m.got),
                        "reference_bits": m.reference_bits, "got_bits": m.got_bits, "bad": m.bad,
                        "total": m.total, "rule": m.rule})
            if m.input:
                out["input"] = {"value": _jsonable(m.input["value"]), "bits": m.input["bits"]}
        return out


@dataclass
class OpResult:
    op: str
    status: str  # "pass" | "fail" | "skip"
    cases: int = 0
    passed: int = 0
    worst: dict[str, float] = field(default_factory=dict)  # metric ("ulp" | "bits" | "bound") -> worst score
    failures: list[CaseFailure] = field(default_factory=list)

    @property
    def failed(self) -> int:
        return len(self.failures)

    def to_json(self) -> dict:
        return {"status": self.status, "cases": self.cases, "passed": self.passed, "failed": self.failed,
                "worst": {k: _jsonable(v) for k, v in self.worst.items()},
                "first_failure": self.failures[0].to_json() if self.failures else None,
                "failed_cases": [f.case for f in self.failures]}


@dataclass
class Report:
    impl: str
    size: str
    seed: int
    inputs: str
    ops: dict[str, OpResult]

    @property
    def ok(self) -> bool:
        """True when every provided op passed (and at least one was provided)."""
        ran = [r for r in self.ops.values() if r.status != "skip"]
        return bool(ran) and all(r.status == "pass" for r in ran)

    def failing_ops(self) -> list[str]:
        return [name for name, r in self.ops.items() if r.status == "fail"]

    def to_json(self) -> dict:
        return {"impl": self.impl, "size": self.size, "seed": self.seed, "inputs": self.inputs,
                "ops": {name: r.to_json() for name, r in self.ops.items()}}


def as_resolver(impl):
    """op name -> callable | None, from a mapping, an object with resolve(), or a function."""
    if hasattr(impl, "resolve") and callable(impl.resolve):
        return impl.resolve
    if hasattr(impl, "get") and hasattr(impl, "__getitem__"):
        return impl.get
    if callable(impl):
        return impl
    raise UsageError(f"the implementation must be a mapping op name -> callable, an object with resolve(op), or a "
                     f"function op -> callable; got {type(impl).__name__}")


def load_impl(spec: str):
    """The object named by ``MODULE:ATTR`` (ATTR may be dotted); UsageError says what is wrong in one line."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise UsageError(f"--impl {spec!r}: expected MODULE:ATTR, e.g. mykernels.impnb_ops:OPS")
    try:
        obj = importlib.import_module(module_name)
    except Exception as exc:  # any failure while importing the user's module is a usage error, not a crash
        raise UsageError(f"cannot import module {module_name!r}: {type(exc).__name__}: {exc}") from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise UsageError(f"module {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    as_resolver(obj)
    return obj


def check_ops(names) -> list[str]:
    unknown = [n for n in names if n not in registry.OPS]
    if unknown:
        raise UsageError(f"unknown op(s) {', '.join(unknown)}; `python -m impnb.ops` lists the {len(registry.OPS)} ops")
    return list(names)


def run(impl, ops=None, *, size: str = "tiny", seed: int = 0, inputs: str | None = None, name: str = "") -> Report:
    """Check ``impl`` on every case of ``ops`` (default: all registered ops); see the module docstring."""
    if size not in SIZES:
        raise UsageError(f"--size {size!r}: expected one of {', '.join(SIZES)}")
    resolve = as_resolver(impl)
    kind = arrays.check_kind(inputs or getattr(impl, "inputs", None) or "numpy")
    selected = check_ops(ops) if ops is not None else list(registry.OPS)
    cases = load_all()
    results = {}
    for op in selected:
        try:
            fn = resolve(op)
        except BackendUnavailable as exc:  # the implementation cannot run on this machine at all
            raise UsageError(str(exc)) from None
        except Exception as exc:
            fn = _raiser(f"resolve({op!r}) raised {type(exc).__name__}: {exc}")
        results[op] = OpResult(op, "skip") if fn is None else run_op(op, fn, cases.get(op, []), size, seed, kind)
    return Report(name or _describe(impl), size, seed, kind, results)


def run_op(op: str, fn, cases: list[Case], size: str, seed: int, kind: str) -> OpResult:
    result = OpResult(op, "pass", cases=len(cases))
    if not callable(fn):
        fn = _raiser(f"the implementation of {op} is a {type(fn).__name__}, not a callable")
    for case in cases:
        scores, mismatch = run_case(case, fn, size, seed, kind)
        for metric, score in scores.items():
            result.worst[metric] = max(result.worst.get(metric, 0.0), score)
        if mismatch is None:
            result.passed += 1
        else:
            result.failures.append(CaseFailure(str(case), mismatch))
    result.status = "fail" if result.failures else "pass"
    return result


def case_rng(case: Case, seed: int) -> np.random.Generator:
    """The generator of one case: seeded by (seed, crc32 of the case name), independent of case order."""
    return np.random.default_rng([int(seed), zlib.crc32(str(case).encode())])


_PREPARED: dict = {}  # (case, seed) -> (args, kwargs, reference output) of "tiny" cases, built once per process


def prepare(case: Case, size: str, seed: int) -> tuple[tuple, dict, object]:
    """(args, kwargs, the reference's output) of one case. Tiny cases are kept after their first build (a mutant
    suite runs every case once per mutant); nothing writes into them: implementations get private copies."""
    key = (case, seed)
    if size == "tiny" and key in _PREPARED:
        return _PREPARED[key]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # unusable-global-scale cases warn by design
        args, kwargs = case.make(case_rng(case, seed), size)
        reference = registry.reference_impl(case.op)(*arrays.convert(args, "numpy"),
                                                     **arrays.convert(kwargs, "numpy"))
    if size == "tiny":
        _PREPARED[key] = (args, kwargs, reference)
    return args, kwargs, reference


def run_case(case: Case, fn, size: str, seed: int, kind: str) -> tuple[dict, Mismatch | None]:
    """(scores by metric, the Mismatch or None) of ``fn`` on one case."""
    args, kwargs, reference = prepare(case, size, seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        try:
            got = arrays.host(fn(*arrays.convert(args, kind), **arrays.convert(kwargs, kind)))
        except Exception as exc:
            return {}, Mismatch("", f"raised {type(exc).__name__}: {_first_line(exc)}")
        try:
            comparison = compare(case.op, reference, got, args, kwargs)
        except Exception as exc:  # an output the comparison cannot even read
            return {}, Mismatch("", f"output not comparable: {type(exc).__name__}: {_first_line(exc)}")
    return comparison.scores, comparison.mismatch


def _raiser(message: str):
    def fail(*args, **kwargs):
        raise TypeError(message)
    return fail


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else "")[:300]


def _describe(impl) -> str:
    return getattr(impl, "name", None) or type(impl).__name__


def _jsonable(v):
    if isinstance(v, (bool, int, str)) or v is None:
        return v
    if isinstance(v, float):
        return v if np.isfinite(v) else repr(v)
    return repr(v)
