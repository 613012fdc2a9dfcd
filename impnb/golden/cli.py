"""python -m impnb.golden: diff dumps, and import other engines' dumps of the same prompt.

    python -m impnb.golden diff A B [--tol 1e-3] [--plot out.png]
    python -m impnb.golden import-hf MODEL_OR_DIR (--prompt TEXT | --ids 1,2,3) OUT
    python -m impnb.golden import-llamacpp EVAL_CALLBACK_LOG OUT [--model FILE]

``diff`` prints per-tap errors of B against A in graph order and names the first tap beyond ``--tol`` (exit 1 if
there is one). Errors are one line on stderr, exit 2.
"""
from __future__ import annotations

import argparse
import sys


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise ValueError(message)


def _parser() -> argparse.ArgumentParser:
    ap = _Parser(prog="python -m impnb.golden", description="Golden activation dumps: diff and import.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("diff", help="per-tap error table of B against A, in graph order")
    d.add_argument("a"), d.add_argument("b")
    d.add_argument("--tol", type=float, default=1e-3, help="max rel beyond which a tap fails (default 1e-3)")
    d.add_argument("--plot", metavar="OUT.png", help="draw the error growth per layer (needs matplotlib)")
    h = sub.add_parser("import-hf", help="transformers' float32 taps of a GGUF file or HF checkpoint directory")
    h.add_argument("model", metavar="MODEL_OR_DIR", help="a .gguf file, a checkpoint directory or a model package")
    group = h.add_mutually_exclusive_group(required=True)
    group.add_argument("--prompt", help="text, tokenized by transformers' tokenizer of the same checkpoint")
    group.add_argument("--ids", help="comma-separated token ids (e.g. those of an impnb dump)")
    h.add_argument("out", metavar="OUT")
    lc = sub.add_parser("import-llamacpp", help="a llama-eval-callback log (text, .xz or .gz)")
    lc.add_argument("log", metavar="EVAL_CALLBACK_LOG")
    lc.add_argument("out", metavar="OUT")
    lc.add_argument("--model", default="", help="the GGUF file llama.cpp ran (recorded as the model hash)")
    return ap


def main(argv: list[str] | None = None) -> int:
    try:
        args = _parser().parse_args(argv)
        if args.cmd == "diff":
            return _diff(args)
        if args.cmd == "import-hf":
            from .hf import import_hf
            ids = _ids(args.ids) if args.ids else None
            manifest = import_hf(args.model, args.out, prompt=args.prompt, ids=ids)
        else:
            from .llamacpp import import_log
            manifest = import_log(args.log, args.out, model=args.model)
    except (ValueError, FileNotFoundError, ImportError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{args.out}: {len(manifest['taps'])} taps ({manifest['producer']}), token ids {manifest['token_ids']}")
    if manifest.get("left_out"):
        print(f"note: {len(manifest['left_out'])} q / k taps left out: their head order depends on the architecture; "
              f"pass --model FILE.gguf to keep them", file=sys.stderr)
    return 0


def _ids(text: str) -> list[int]:
    try:
        return [int(t) for t in text.split(",")]
    except ValueError:
        raise ValueError(f"--ids {text!r}: expected comma-separated integers, e.g. 504,3575,282") from None


def _describe(path: str, manifest: dict) -> str:
    return f"{path} ({manifest.get('producer', 'impnb')}, {manifest.get('backend', '?')}, " \
           f"{manifest.get('commit') or 'no commit'})"


def _diff(args) -> int:
    from . import compare, format_table, load, plot_growth
    a, b = load(args.a), load(args.b)
    rows = compare(a, b)
    if not rows:
        raise ValueError("the dumps hold no tap in common")
    if a.manifest.get("model_hash") and b.manifest.get("model_hash") and \
            a.manifest["model_hash"] != b.manifest["model_hash"]:
        print("warning: the dumps come from different model files (model_hash differs)", file=sys.stderr)
    for label, dump in (("A", a), ("B", b)):
        if dump.manifest.get("token_ids") is None:
            print(f"warning: {label} records no token ids; make sure both ran the same prompt", file=sys.stderr)
    table, first_bad = format_table(rows, args.tol)
    print(f"A: {_describe(args.a, a.manifest)}  B: {_describe(args.b, b.manifest)}")
    print(table)
    if args.plot:
        plot_growth(rows, args.plot, args.tol)
        print(f"plot written to {args.plot}")
    return 1 if first_bad else 0
