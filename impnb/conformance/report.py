"""The runner's report as text: a per-op table, then the first failure of each failing op."""
from __future__ import annotations

from .runner import OpResult, Report

_UNITS = {"ulp": "ulp", "bits": "bits", "bound": "of bound"}


def worst_text(result: OpResult) -> str:
    """e.g. "3 ulp", "0.41 of bound, 0 bits", "-" (skipped or no comparable output)."""
    if not result.worst:
        return "-"
    parts = []
    for metric in ("ulp", "bits", "bound"):
        if metric in result.worst:
            v = result.worst[metric]
            parts.append(f"{v:.3g} {_UNITS[metric]}" if metric == "bound" else f"{v:g} {_UNITS[metric]}")
    return ", ".join(parts)


def format_report(report: Report) -> str:
    lines = [f"impnb conformance: impl={report.impl} size={report.size} seed={report.seed} inputs={report.inputs}",
             f"{'op':32s} {'status':6s} {'cases':>5s} {'passed':>6s} {'failed':>6s}  worst",]
    for name, r in report.ops.items():
        if r.status == "skip":
            lines.append(f"{name:32s} {'skip':6s} {'':>5s} {'':>6s} {'':>6s}  (not provided)")
            continue
        lines.append(f"{name:32s} {r.status.upper():6s} {r.cases:5d} {r.passed:6d} {r.failed:6d}  {worst_text(r)}")
    failing = [r for r in report.ops.values() if r.status == "fail"]
    if failing:
        lines.append("")
        lines.append("first failure of each failing op:")
        for r in failing:
            first = r.failures[0]
            more = f" (+{r.failed - 1} more failing case{'s' if r.failed > 2 else ''})" if r.failed > 1 else ""
            lines.append(f"  {first.case}{more}: {first.mismatch.describe()}")
    lines.append("")
    lines.append(summary_line(report))
    return "\n".join(lines)


def summary_line(report: Report) -> str:
    ran = [r for r in report.ops.values() if r.status != "skip"]
    failed = [r.op for r in ran if r.status == "fail"]
    skipped = len(report.ops) - len(ran)
    if not ran:
        return f"no op provided by {report.impl} ({skipped} skipped)"
    verdict = f"FAIL: {', '.join(failed)}" if failed else "all pass"
    return (f"{len(ran)} ops checked ({sum(r.cases for r in ran)} cases), {len(ran) - len(failed)} pass, "
            f"{len(failed)} fail, {skipped} skipped: {verdict}")
