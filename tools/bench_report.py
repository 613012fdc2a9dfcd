"""The result file of tools/bench_generate.py: its row schema, the impnb / peer ratios, the printed table and the
Markdown table for the README (``--readme``).

Ratios are impnb's figure over the peer's on the same file: against llama.cpp's row (llama-bench warms up by
itself, so its row is a warm one, for impnb's cold row too) and against the HF eager row with the same ``cold``
flag. A ratio above 1 means impnb is faster.
"""
from __future__ import annotations

# Every row has these keys (null where an engine does not report the figure, or did not run: then "reason" says
# why); engines add their own fields beside them.
ROW_KEYS = ("model", "file", "weights", "engine", "path", "backend", "prompt_tokens", "decode_tokens",
            "prefill_tok_s", "decode_tok_s", "cold", "load_s", "reason")
ENGINES = ("impnb", "llama.cpp", "hf-eager", "hf-compile")


def new_row(base: dict, **fields) -> dict:
    """A row with every ROW_KEYS entry present (None unless given)."""
    row = {k: None for k in ROW_KEYS}
    row.update(base)
    row.update(fields)
    return row


def _ratio(a, b):
    return a / b if isinstance(a, (int, float)) and isinstance(b, (int, float)) and b > 0 else None


def _peer(rows: list[dict], row: dict, engine: str, cold: bool | None) -> dict | None:
    for r in rows:
        if r["engine"] == engine and r["file"] == row["file"] and r["model"] == row["model"] and \
                (cold is None or r["cold"] == cold) and not r.get("random_weights"):
            return r
    return None


def add_ratios(rows: list[dict]) -> None:
    """Set ``vs_llama_cpp`` and ``vs_hf_eager`` ({"prefill", "decode"} or None) on every user-path impnb row."""
    for row in rows:
        if row["engine"] != "impnb" or row.get("random_weights"):
            continue
        for key, engine, cold in (("vs_llama_cpp", "llama.cpp", None), ("vs_hf_eager", "hf-eager", row["cold"])):
            peer = _peer(rows, row, engine, cold)
            row[key] = None if peer is None else {
                "prefill": _ratio(row["prefill_tok_s"], peer["prefill_tok_s"]),
                "decode": _ratio(row["decode_tok_s"], peer["decode_tok_s"])}


def _num(v, spec: str) -> str:
    return format(v, spec) if isinstance(v, (int, float)) else "-"


def _tok_s(v) -> str:
    if not isinstance(v, (int, float)):
        return "-"
    return format(v, ".0f") if v >= 100 else format(v, ".1f")


def _ratios(row: dict, key: str) -> str:
    r = row.get(key)
    if not r:
        return "-"
    return f"{_num(r['prefill'], '.2f')}x / {_num(r['decode'], '.2f')}x"


TABLE_HEAD = ("model", "weights", "engine", "backend", "run", "load s", "prefill tok/s", "decode tok/s",
              "impnb / llama.cpp (prefill / decode)", "impnb / HF eager (prefill / decode)")


def table_cells(rows: list[dict]) -> list[list[str]]:
    """One list of cells per user-path row (random-weight rows are tabled by tools/bench_random.py)."""
    cells = []
    for r in rows:
        if r.get("random_weights"):
            continue
        run = "cold" if r["cold"] else "warm"
        if r["engine"] == "llama.cpp":
            run = "warm (llama-bench)"
        weights = r["weights"] + (" (zero)" if r.get("zero_weights") else "")
        reason = f"not run: {r['reason']}" if r.get("reason") else None
        numbers = [reason, "", ""] if reason else [_num(r["load_s"], ".2f"), _tok_s(r["prefill_tok_s"]),
                                                   _tok_s(r["decode_tok_s"])]
        cells.append([r["model"], weights, r["engine"], str(r["backend"] or "-"), run, *numbers,
                      _ratios(r, "vs_llama_cpp"), _ratios(r, "vs_hf_eager")])
    return cells


def print_table(rows: list[dict]) -> None:
    cells = table_cells(rows)
    widths = [max([len(h)] + [len(c[i]) for c in cells if not c[5].startswith("not run")]) for i, h in
              enumerate(TABLE_HEAD)]
    print("  ".join(h.ljust(w) for h, w in zip(TABLE_HEAD, widths)))
    for c in cells:
        print("  ".join(v.ljust(w) for v, w in zip(c, widths)).rstrip())


def markdown(doc: dict) -> str:
    """The README table: a caption line (device, date, commit, settings) and one Markdown row per result row."""
    host = doc.get("host") or {}
    where = doc["device_name"] if doc["device"] != "cpu" else \
        f"CPU machine ({host.get('cpu', '?')}, {host.get('cores', '?')} cores)"
    busy = ""
    if host.get("load_average_start") and host.get("load_average_end"):
        busy = f"; 1-minute load average {host['load_average_start'][0]:.1f} at the start, " \
               f"{host['load_average_end'][0]:.1f} at the end"
    if isinstance(host.get("cpu_wait_pct"), (int, float)):
        busy += f", runnable work waited for a CPU {host['cpu_wait_pct']:.0f}% of the time (Linux PSI)"
    lines = [f"Measured on the {where}, {doc['date'][:10]}, commit {doc['commit']}: {doc['prompt_tokens']}-token "
             f"prompt (the same ids for every engine), {doc['decode_tokens']} greedy tokens, warm figures are the "
             f"median of {doc['repeats']} runs{busy} (`{doc['command']}`).", "",
             "| " + " | ".join(TABLE_HEAD) + " |",
             "|" + "|".join("---" if i < 5 else "---:" for i in range(len(TABLE_HEAD))) + "|"]
    for c in table_cells(doc["rows"]):
        if c[5].startswith("not run"):
            c = c[:5] + [c[5]] + ["", ""] + c[8:]
        lines.append("| " + " | ".join(v.replace("|", "\\|") for v in c) + " |")
    return "\n".join(lines)
