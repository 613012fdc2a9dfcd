"""Write golden/: language-neutral conformance vectors of every registered op (raw little-endian .bin + JSON).

    python tools/make_golden.py            # (re)write golden/manifest.json and golden/vectors/
    python tools/make_golden.py --check    # compare a fresh build with golden/; exit 1 on any difference

One vector per conformance case (impnb/conformance/cases, size "tiny"): the case's inputs, built from a generator
seeded by (SEED, case name) exactly as ``python -m impnb.conformance --seed SEED`` builds them, and the reference's
outputs. golden/README.md says how an engine in any language reads them; golden/harness/ is a C reader and checker.
"""
from __future__ import annotations

import argparse
import copy
import math
import warnings
import hashlib
import inspect
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from impnb import ops, tolerances  # noqa: E402
from impnb.conformance.cases import load_all  # noqa: E402
from impnb.conformance.runner import case_rng  # noqa: E402
from impnb.formats import NVFP4Tensor  # noqa: E402

FORMAT_VERSION = 2
SEED = 20261122
SIZE = "tiny"
GOLDEN_DIR = ROOT / "golden"
DTYPES = ("float32", "float64", "uint8", "int32", "int64", "bool")

def _rel(path: Path) -> str:
    return path.relative_to(GOLDEN_DIR).as_posix()


def _array_entry(files: dict, stem: Path, name: str, a) -> dict:
    """Store array ``a`` as <stem>.<name>.bin (little-endian) and describe it."""
    a = np.asarray(a)
    dtype = a.dtype.name
    if dtype not in DTYPES:
        raise TypeError(f"{stem}.{name}: dtype {dtype} has no golden encoding")
    data = np.ascontiguousarray(a).astype(a.dtype.newbyteorder("<")).tobytes()
    path = stem.parent / f"{stem.name}.{name}.bin"
    files[_rel(path)] = data
    return {"file": path.name, "dtype": dtype, "shape": list(a.shape), "sha256": hashlib.sha256(data).hexdigest()}


def _value_entry(files: dict, stem: Path, name: str, value) -> dict:
    """An input value: an array, an NVFP4Tensor, a scalar or None."""
    if isinstance(value, NVFP4Tensor):
        return {"kind": "nvfp4", "layout": value.layout, "global_scale": _json_float(value.global_scale),
                "global_scale_float32_bits": f"0x{np.float32(value.global_scale).view(np.uint32):08x}",
                "packed": _array_entry(files, stem, f"{name}.packed", value.packed),
                "scales": _array_entry(files, stem, f"{name}.scales", value.scales)}
    if isinstance(value, np.ndarray):
        return {"kind": "array", **_array_entry(files, stem, name, value)}
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return {"kind": "scalar", "value": _json_float(value)}
    if value is None or isinstance(value, (bool, int, str)):
        return {"kind": "scalar", "value": value}
    raise TypeError(f"{stem}: cannot store input {name} of type {type(value).__name__}")


def _json_float(v: float):
    """A finite float as a JSON number (Python's repr: exact round trip); inf / -inf / nan as those strings."""
    return v if math.isfinite(v) else repr(v)


def _outputs(ref) -> list[tuple[str, np.ndarray]]:
    """(name, array) of every output leaf: "out", "out.0", "out.1" (tuples), "out.packed", ... (NVFP4Tensor)."""
    if isinstance(ref, tuple):
        return [(f"out.{i}", np.asarray(r)) for i, r in enumerate(ref)]
    if isinstance(ref, NVFP4Tensor):
        return [("out.packed", ref.packed), ("out.scales", ref.scales),
                ("out.global_scale", np.array([ref.global_scale], np.float32))]
    return [("out", np.asarray(ref))]


def _tolerance(files, stem, op, name, ref_leaf, args, kwargs) -> dict:
    rule = tolerances.rule_for(op, ref_leaf.dtype)
    if isinstance(rule, tolerances.Exact) or ref_leaf.dtype.kind in "biu":
        return {"rule": "exact", "check": "the bytes of got equal the bytes of expected (NaN payloads and the "
                                          "sign of zero included)"}
    r = np.abs(ref_leaf.astype(np.float64))
    if isinstance(rule, tolerances.AllClose):
        bound = rule.atol + rule.rtol * r
        formula = f"atol + rtol * |expected|, atol = {rule.atol!r}, rtol = {rule.rtol!r}"
    else:
        bound = rule.bound * np.broadcast_to(np.asarray(rule.scale(args, kwargs), np.float64), r.shape)
        formula = f"{rule.bound!r} * ({rule.formula})"  # the rule states its own scale (impnb/tolerances.py)
    bound = np.where(np.isfinite(ref_leaf), bound, 0.0).astype(np.float64)
    return {"rule": "bound", "formula": formula,
            "check": "where expected is finite: got is finite and |got - expected| <= bound (in float64); "
                     "where expected is NaN or +-inf: got is the same (NaN: any NaN; inf: same sign)",
            "bound": _array_entry(files, stem, f"{name}.bound", bound)}


def describe_vector(files: dict, case) -> dict:
    """Build one case's inputs, run the reference, store every array; return the vector's manifest."""
    op = case.op
    args, kwargs = case.make(case_rng(case, SEED), SIZE)
    ref = ops.reference_impl(op)(*copy.deepcopy(args), **copy.deepcopy(kwargs))
    stem = GOLDEN_DIR / "vectors" / op / case.id
    params = list(inspect.signature(ops.reference_impl(op)).parameters)
    inputs = [{"name": params[i], "position": i, **_value_entry(files, stem, f"in.{params[i]}", a)}
              for i, a in enumerate(args)]
    inputs += [{"name": k, "keyword": True, **_value_entry(files, stem, f"in.{k}", v)} for k, v in kwargs.items()]
    outputs = []
    for name, leaf in _outputs(ref):
        outputs.append({"name": name, **_array_entry(files, stem, name, leaf),
                        "tolerance": _tolerance(files, stem, op, name, leaf, args, kwargs)})
    if isinstance(ref, NVFP4Tensor):
        outputs.append({"name": "out.layout", "value": ref.layout})
    spec = ops.OPS[op]
    return {"format_version": FORMAT_VERSION, "op": op, "case": case.id, "family": spec.family,
            "exact": spec.exact, "summary": spec.summary,
            "reference": f"impnb/reference/{spec.family}.py:{op}", "signature": f"{op}{_signature(op)}",
            "inputs": inputs, "outputs": outputs}


def _signature(op: str) -> str:
    return str(inspect.signature(ops.reference_impl(op)))


def build() -> dict[str, bytes]:
    """Every file of golden/ that this tool owns: relative path -> bytes (deterministic)."""
    files: dict[str, bytes] = {}
    index = []
    for op, cases in sorted(load_all().items(), key=lambda kv: list(ops.OPS).index(kv[0])):
        for case in cases:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # unusable-global-scale cases warn by design
                manifest = describe_vector(files, case)
            path = f"vectors/{op}/{case.id}.json"
            files[path] = (json.dumps(manifest, indent=1, allow_nan=False) + "\n").encode()
            index.append({"op": op, "case": case.id, "manifest": path,
                          "sha256": hashlib.sha256(files[path]).hexdigest()})
    top = {"format_version": FORMAT_VERSION, "generator": "python tools/make_golden.py", "seed": SEED,
           "size": SIZE, "byte_order": "little", "ops": sorted({v["op"] for v in index}),
           "layout": "vectors/<op>/<case>.json describes one call of <op>; its arrays are raw little-endian "
                     "files beside it (<case>.in.<name>.bin, <case>.out.bin, ...); see README.md",
           "vectors": index}
    files["manifest.json"] = (json.dumps(top, indent=1, allow_nan=False) + "\n").encode()
    return files


def owned(directory: Path) -> set[str]:
    """Relative paths of the files under ``directory`` that this tool writes (manifest.json and vectors/)."""
    found = {p.relative_to(directory).as_posix() for p in (directory / "vectors").rglob("*") if p.is_file()}
    if (directory / "manifest.json").exists():
        found.add("manifest.json")
    return found


def write(directory: Path = GOLDEN_DIR) -> None:
    files = build()
    for stale in owned(directory) - set(files):
        (directory / stale).unlink()
    for rel, data in files.items():
        path = directory / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists() or path.read_bytes() != data:
            path.write_bytes(data)
    total = sum(len(d) for d in files.values())
    print(f"wrote {len(files)} files ({total / 1e6:.2f} MB) for {sum(1 for f in files if f.endswith('.json')) - 1} "
          f"vectors to {directory}")


def differences(directory: Path = GOLDEN_DIR) -> list[str]:
    """Files whose fresh build differs from the committed one, or that are missing or stale."""
    files = build()
    present = owned(directory)
    diff = [rel for rel, data in files.items() if rel not in present or (directory / rel).read_bytes() != data]
    return sorted(diff + [f"{rel} (stale)" for rel in present - set(files)])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare with golden/ instead of writing")
    args = parser.parse_args(argv)
    if not args.check:
        write()
        return 0
    diff = differences()
    print("golden vectors match" if not diff else f"{len(diff)} files differ: {', '.join(diff[:20])}")
    return 1 if diff else 0


if __name__ == "__main__":
    sys.exit(main())
