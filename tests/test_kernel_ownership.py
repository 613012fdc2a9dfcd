"""Nothing runs that is not registered: every CUDA kernel under impnb/ (each ``__global__`` entry point of the .cu /
.cuh files, each Numba ``@cuda.jit`` kernel) is listed in exactly one op's ``OpSpec.kernels``, every listed kernel
exists, and every CUDA C launch in impnb/ names a kernel of the file it loads with as many arguments as the kernel
takes (a CPU check of the GPU plumbing: the kernels themselves only run on a GPU)."""
from __future__ import annotations

import ast
import json
import pathlib
import re
import subprocess
import sys

import pytest

from impnb import ops
from impnb.cuda import _kernels

ROOT = pathlib.Path(__file__).resolve().parent.parent / "impnb"
KERNEL_DIR = ROOT / "cuda" / "kernels"
_GLOBAL = re.compile(r"__global__\s+void\s+(?:__launch_bounds__\((?:[^()]|\([^()]*\))*\)\s*)?(\w+)\s*\(")


def cuda_c_kernels() -> dict[str, tuple[str, int]]:
    """entry point -> (file, number of parameters), from every .cu / .cuh file under impnb/."""
    found = {}
    for path in sorted(list(ROOT.rglob("*.cu")) + list(ROOT.rglob("*.cuh"))):
        text = path.read_text()
        for m in _GLOBAL.finditer(text):
            assert m.group(1) not in found, f"kernel {m.group(1)} defined twice"
            found[m.group(1)] = (path.name, _n_params(text, m.end()))
    return found


def _n_params(text: str, start: int) -> int:
    depth, i, commas = 1, start, 0
    while depth:
        ch = text[i]
        depth += ch == "("
        depth -= ch == ")"
        commas += ch == "," and depth == 1
        i += 1
    return commas + 1 if text[start:i - 1].strip() else 0


def numba_kernels() -> set[str]:
    names = set()
    for path in ROOT.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef) and any(_is_kernel_jit(d) for d in node.decorator_list):
                names.add(node.name)
    return names


def _is_kernel_jit(dec) -> bool:
    target = dec.func if isinstance(dec, ast.Call) else dec
    if not (isinstance(target, ast.Attribute) and target.attr == "jit"):
        return False
    return not (isinstance(dec, ast.Call) and any(k.arg == "device" for k in dec.keywords))


def owners() -> dict[str, list[str]]:
    table: dict[str, list[str]] = {}
    for spec in ops.OPS.values():
        for k in spec.kernels:
            table.setdefault(k, []).append(spec.name)
    return table


def test_every_kernel_belongs_to_exactly_one_op():
    kernels = set(cuda_c_kernels()) | numba_kernels()
    table = owners()
    assert kernels, "no kernels found"
    unowned = sorted(kernels - set(table))
    assert not unowned, f"kernels no op owns (list them in an OpSpec.kernels): {unowned}"
    shared = {k: v for k, v in table.items() if len(v) > 1}
    assert not shared, f"kernels owned by more than one op: {shared}"
    missing = sorted(set(table) - kernels)
    assert not missing, f"OpSpec.kernels names that are no kernel under impnb/: {missing}"


def test_each_ops_kernels_live_in_its_familys_file():
    kernels = cuda_c_kernels()
    for spec in ops.OPS.values():
        for k in spec.kernels:
            if k in kernels:
                assert kernels[k][0] == f"{spec.family}.cu", f"{spec.name} owns {k} of {kernels[k][0]}"


def test_every_instantiation_is_a_kernel_of_its_file():
    kernels = cuda_c_kernels()
    for filename in _kernels.files():
        for name in _kernels.instantiations(filename):
            entry = _kernels.entry_point(name)
            assert kernels.get(entry, ("?",))[0] == filename, f"{name} is not a kernel of {filename}"


def _launch_sites():
    """(file, kernel entry point or None, number of args or None, where) for every launch_raw call in impnb/."""
    for path in ROOT.rglob("*.py"):
        tree = ast.parse(path.read_text())
        consts = {t.id: n.value.value for n in ast.walk(tree) if isinstance(n, ast.Assign)
                  for t in n.targets if isinstance(t, ast.Name) and isinstance(n.value, ast.Constant)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "launch_raw" and len(node.args) >= 5:
                file_arg, name_arg, args = node.args[0], node.args[1], node.args[4]
                filename = file_arg.value if isinstance(file_arg, ast.Constant) else consts.get(
                    getattr(file_arg, "id", None))
                yield filename, _entry(name_arg), len(args.elts) if isinstance(args, ast.Tuple) else None, \
                    f"{path.name}:{node.lineno}"


def _entry(node):
    if isinstance(node, ast.Constant):
        return _kernels.entry_point(node.value)
    if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "gemv_name":
        return node.args[0].value
    if isinstance(node, ast.JoinedStr) and isinstance(node.values[0], ast.Constant):
        return _kernels.entry_point(node.values[0].value)
    return None


def test_every_launch_names_a_kernel_of_its_file_with_its_argument_count():
    kernels = cuda_c_kernels()
    checked = 0
    for filename, entry, n_args, where in _launch_sites():
        if filename is None or entry is None:
            continue  # the generic launchers (a name passed in): their callers are checked below
        assert entry in kernels and kernels[entry][0] == filename, f"{where}: {entry} is not a kernel of {filename}"
        if n_args is not None:
            assert n_args == kernels[entry][1], f"{where}: {entry} takes {kernels[entry][1]} args, {n_args} given"
        checked += 1
    assert checked >= 15
    gemv_signature = kernels["rms_norm_gemv"][1]
    for name in ("gated_gemv", "gemv_nvfp4"):
        assert kernels[name][1] == gemv_signature == 13, "launch_gemv passes the 13 GEMV arguments"


def test_ops_json_lists_kernels_and_case_counts():
    out = subprocess.run([sys.executable, "-m", "impnb.ops", "--json"], capture_output=True, text=True, check=True)
    table = {row["name"]: row for row in json.loads(out.stdout)["ops"]}
    assert set(table) == set(ops.OPS)
    assert table["rms_norm_linear"]["kernels"] == ["rms_norm_gemv"]
    assert table["nvfp4_gemv"]["kernels"] == ["gemv_nvfp4"]
    for row in table.values():
        assert {"name", "family", "exact", "kernels", "cases"} <= set(row)
        assert row["cases"] >= 1, f"{row['name']} has no cross-check case"


@pytest.mark.parametrize("name", sorted(n for n, s in ops.OPS.items() if s.kernels))
def test_ops_with_kernels_have_real_shape_cases(name):
    from impnb.conformance.cases import load_all
    import numpy as np
    cases = load_all()[name]
    assert cases and all(callable(c.make) for c in cases)
    args, _ = cases[0].make(np.random.default_rng(0), "tiny")
    assert args, f"{name}: a case with no inputs"
