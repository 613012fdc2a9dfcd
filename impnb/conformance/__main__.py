"""``python -m impnb.conformance --impl MODULE:ATTR [--ops a,b] [--size tiny|real] [--json FILE]``.

Exit status: 0 every provided op passes, 1 an op fails, 2 usage error (one line on stderr).
"""
from __future__ import annotations

import argparse
import json
import sys

from . import arrays
from .report import format_report
from .runner import SIZES, UsageError, load_impl, run


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2 (argparse would print the whole usage first)
        raise UsageError(message)


def _parser() -> argparse.ArgumentParser:
    ap = _Parser(prog="python -m impnb.conformance",
                 description="Check another implementation of impnb's ops against the reference, case by case.")
    ap.add_argument("--impl", required=True, metavar="MODULE:ATTR",
                    help="a mapping op name -> callable, or an object with resolve(op) -> callable | None "
                         "(built in: impnb.conformance:REFERENCE, impnb.conformance:CUDA)")
    ap.add_argument("--ops", help="comma-separated op names (default: every registered op)")
    ap.add_argument("--size", default="tiny", help="case sizes: tiny (default) or real (GPU-sized shapes)")
    ap.add_argument("--seed", type=int, default=0, help="input seed (default 0; another seed: fresh inputs)")
    ap.add_argument("--inputs", help="array kind the implementation takes: numpy (default), torch, torch:cuda, "
                                     "cupy (default: the implementation's `inputs` attribute, else numpy)")
    ap.add_argument("--json", metavar="FILE", help="also write the report as JSON")
    return ap


def main(argv: list[str] | None = None) -> int:
    try:
        args = _parser().parse_args(argv)
        if args.size not in SIZES:
            raise UsageError(f"--size {args.size!r}: expected one of {', '.join(SIZES)}")
        if args.inputs:
            arrays.check_kind(args.inputs)
        ops = [o.strip() for o in args.ops.split(",") if o.strip()] if args.ops else None
        impl = load_impl(args.impl)
        report = run(impl, ops, size=args.size, seed=args.seed, inputs=args.inputs, name=args.impl)
    except (UsageError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(format_report(report))
    if args.json:
        try:
            with open(args.json, "w") as fh:
                json.dump(report.to_json(), fh, indent=1)
        except OSError as exc:
            print(f"error: cannot write {args.json}: {exc}", file=sys.stderr)
            return 2
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
