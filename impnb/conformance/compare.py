"""One case's output against the reference's, through the tolerance table, with a score per element.

Outputs are compared leaf by leaf (a tuple's items, an NVFP4Tensor's fields, a plain array). The pass/fail verdict
of a leaf is the tolerance table's own (``impnb.tolerances``: the same test as ``backend="check"``); the score says
how far off it is, in the op's own metric:
    "ulp"   Exact rule, float leaf: distance in units in the last place (-0.0 and +0.0 are 1 apart; a NaN against
            anything with other bits is inf)
    "bits"  integer / bool leaf (codes, ids, masks): the most bits that differ in one element
    "bound" AllClose / ScaledError leaf: |got - ref| / allowed; a leaf fails above 1 (a NaN or inf mismatch is inf)
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields, is_dataclass

import numpy as np

from .. import tolerances


@dataclass
class Mismatch:
    """Where one case went wrong: the worst element of the first failing output leaf, or a message."""
    output: str  # the leaf: "value", "[1]" (tuple item), ".scales" (field)
    message: str = ""
    index: tuple | None = None
    reference: object = None
    got: object = None
    reference_bits: str = ""
    got_bits: str = ""
    bad: int = 0
    total: int = 0
    rule: str = ""
    input: dict = field(default_factory=dict)  # the first argument at that index, when it has the output's shape

    def describe(self) -> str:
        if self.index is None:
            return f"output {self.output}: {self.message}" if self.output else self.message
        text = (f"output {self.output}: {self.bad}/{self.total} elements outside {self.rule}; worst at index "
                f"{list(self.index)}: reference={self.reference!r} ({self.reference_bits}) "
                f"got={self.got!r} ({self.got_bits})")
        if self.input:
            text += f"; input there: {self.input['value']!r} ({self.input['bits']})"
        return text


@dataclass
class Comparison:
    scores: dict[str, float]  # metric -> worst score over the leaves
    mismatch: Mismatch | None


def compare(op: str, reference, got, args: tuple, kwargs: dict) -> Comparison:
    """Compare ``got`` (host NumPy) with ``reference`` leaf by leaf; the first failing leaf is reported."""
    scores: dict[str, float] = {}
    mismatch = None
    for path, ref_leaf, got_leaf in _leaves(reference, got, "value"):
        if isinstance(got_leaf, Mismatch):
            return Comparison(scores, got_leaf)
        metric, score, bad, leaf_mismatch = _compare_leaf(op, path, ref_leaf, got_leaf, args, kwargs)
        if metric:
            scores[metric] = max(scores.get(metric, 0.0), score)
        if mismatch is None and leaf_mismatch is not None:
            mismatch = leaf_mismatch
    return Comparison(scores, mismatch)


def _leaves(ref, got, path):
    """Yield (path, ref leaf, got leaf); a structural mismatch is yielded as a Mismatch in the got slot."""
    if isinstance(ref, tuple):
        if not isinstance(got, (tuple, list)) or len(got) != len(ref):
            yield path, ref, Mismatch(path, f"expected a tuple of {len(ref)}, got {_kind(got)}")
            return
        for i, (r, g) in enumerate(zip(ref, got)):
            yield from _leaves(r, g, f"[{i}]")
    elif is_dataclass(ref):
        if type(got) is not type(ref):
            yield path, ref, Mismatch(path, f"expected {type(ref).__name__}, got {_kind(got)}")
            return
        for fld in fields(ref):
            r, g = getattr(ref, fld.name), getattr(got, fld.name)
            if isinstance(r, str) or r is None:
                if r != g:
                    yield path, ref, Mismatch(f".{fld.name}", f"expected {r!r}, got {g!r}")
                continue
            yield from _leaves(np.asarray(r), np.asarray(g), f".{fld.name}")
    else:
        yield path, np.asarray(ref), got


def _kind(obj) -> str:
    if isinstance(obj, (tuple, list)):
        return f"a {type(obj).__name__} of {len(obj)}"
    return type(obj).__name__


def _compare_leaf(op, path, ref, got, args, kwargs):
    """(metric, worst score, bad count, Mismatch or None) of one leaf."""
    try:
        got = np.asarray(got)
    except Exception as exc:  # an object NumPy cannot take
        return "", 0.0, 1, Mismatch(path, f"not an array: {type(got).__name__} ({exc})")
    if got.shape != ref.shape or got.dtype != ref.dtype:
        return "", 0.0, 1, Mismatch(path, f"shape {list(got.shape)} {got.dtype}, expected {list(ref.shape)} "
                                          f"{ref.dtype}")
    rule = tolerances.rule_for(op, ref.dtype)
    if ref.ndim == 0:  # a scalar (e.g. an NVFP4 global scale): compared as one element at index [0]
        ref, got = ref.reshape(1), got.reshape(1)
    bad = np.asarray(tolerances.violations(rule, ref, got, args, kwargs), dtype=bool)  # the table's own verdict
    metric, score = _scores(rule, ref, got, args, kwargs)
    worst = float(np.max(score)) if score.size else 0.0
    if not bad.any():
        return metric, worst, 0, None
    flat = int(np.argmax(np.where(bad.ravel(), score.ravel(), -1.0)))
    index = tuple(int(i) for i in np.unravel_index(flat, ref.shape))
    mismatch = Mismatch(path, index=index, reference=_item(ref, index), got=_item(got, index),
                        reference_bits=_hex(ref, index), got_bits=_hex(got, index), bad=int(bad.sum()),
                        total=int(ref.size), rule=str(rule), input=_input_at(args, ref.shape, index))
    return metric, worst, int(bad.sum()), mismatch


def _scores(rule, ref, got, args, kwargs) -> tuple[str, np.ndarray]:
    if ref.dtype.kind in "biu":
        return "bits", _bit_distance(ref, got)
    if isinstance(rule, tolerances.Exact):
        return "ulp", _ulp_distance(ref, got)
    return "bound", _bound_fraction(rule, ref, got, args, kwargs)


def _bit_distance(ref, got) -> np.ndarray:
    width = ref.dtype.itemsize * 8
    x = tolerances.bit_patterns(ref).astype(np.uint64) ^ tolerances.bit_patterns(got).astype(np.uint64)
    return np.unpackbits(x.view(np.uint8).reshape(x.shape + (8,)), axis=-1)[..., :width].sum(-1).astype(float)


def _ordered(a: np.ndarray) -> np.ndarray:
    """Float bit patterns mapped to integers in value order (-0.0 -> -1, +0.0 -> 0), as float64 for distances."""
    bits = tolerances.bit_patterns(a).astype(np.int64)
    width = a.dtype.itemsize * 8
    magnitude = bits & ((1 << (width - 1)) - 1)
    negative = (bits >> (width - 1)) & 1
    return np.where(negative == 1, -magnitude - 1, magnitude).astype(np.float64)


def _ulp_distance(ref, got) -> np.ndarray:
    if ref.dtype.itemsize > 8 or ref.dtype.kind != "f":
        return np.where(tolerances.bit_patterns(ref) != tolerances.bit_patterns(got), np.inf, 0.0)
    same = tolerances.bit_patterns(ref) == tolerances.bit_patterns(got)
    nan = np.isnan(ref.astype(np.float64)) | np.isnan(got.astype(np.float64))
    dist = np.abs(_ordered(ref) - _ordered(got))
    return np.where(same, 0.0, np.where(nan, np.inf, dist))


def _bound_fraction(rule, ref, got, args, kwargs) -> np.ndarray:
    r, g = ref.astype(np.float64), got.astype(np.float64)
    if isinstance(rule, tolerances.AllClose):
        limit = rule.atol + rule.rtol * np.abs(r)
    else:
        limit = rule.bound * np.broadcast_to(np.asarray(rule.scale(args, kwargs), np.float64), r.shape)
    finite = np.isfinite(r) & np.isfinite(g)
    same_special = (r == g) | (np.isnan(r) & np.isnan(g))
    with np.errstate(divide="ignore", invalid="ignore"):
        err = np.abs(g - r)
        fraction = np.where(err == 0, 0.0, err / limit)
    return np.where(finite, fraction, np.where(same_special, 0.0, np.inf))


def _item(a: np.ndarray, index):
    v = a[index] if a.ndim else a[()]
    return v.item()


def _hex(a: np.ndarray, index) -> str:
    return tolerances.hex_bits(a, index)


def _input_at(args, shape, index) -> dict:
    """The first argument's element at ``index`` when that argument is an array of the output's shape."""
    if not args or not index:
        return {}
    first = args[0]
    if not isinstance(first, np.ndarray) or first.shape != shape or first.dtype.kind not in "fiub":
        return {}
    return {"value": _item(first, index), "bits": _hex(first, index)}
