"""llama.cpp's ``llama-bench`` as a peer of tools/bench_generate.py: find a build, run it on the same GGUF file,
turn its JSON into benchmark rows.

llama-bench times a ``-p N`` prompt (one batch of N tokens from an empty context: prefill) and ``-n M`` generated
tokens (M single-token decodes, from an empty context unless ``-d D`` puts D tokens in the context first), each
after its own untimed warm-up run, ``-r`` repetitions; its JSON holds one object per test with ``n_prompt``,
``n_gen``, ``n_depth``, ``avg_ts`` (tokens/s, mean over the repetitions), ``stddev_ts`` and ``samples_ts``.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess

from bench_report import new_row

# Where the peers notes build llama.cpp on the GPU machine (``cmake --build build --target llama-bench``).
BUILD_GUESSES = ("~/lcpp/llama.cpp/build/bin/llama-bench",)


def find_llama_bench(explicit: str | None) -> tuple[str | None, str]:
    """(path, "") of the llama-bench to run, or (None, why none): ``--llama-bench PATH``, then $LLAMA_BENCH,
    then ``llama-bench`` on PATH, then the build folder of the peers notes."""
    for source, candidate in (("--llama-bench", explicit), ("$LLAMA_BENCH", os.environ.get("LLAMA_BENCH"))):
        if candidate:
            path = os.path.expanduser(candidate)
            if os.path.isfile(path) and os.access(path, os.X_OK):
                return path, ""
            return None, f"{source} {candidate}: not an executable file"
    found = shutil.which("llama-bench")
    if found:
        return found, ""
    for guess in BUILD_GUESSES:
        path = os.path.expanduser(guess)
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path, ""
    return None, "no llama-bench build found (give --llama-bench PATH or set $LLAMA_BENCH)"


def bench_args(gguf: str, prompt: int, decode: int, repeats: int, gpu: bool, threads: int) -> list[str]:
    """The command-line arguments after the executable: ``-ngl 99 -fa 1`` on a GPU, ``-t <threads>`` on the CPU."""
    device = ["-ngl", "99", "-fa", "1"] if gpu else ["-t", str(threads)]
    return ["-m", gguf, "-p", str(prompt), "-n", str(decode), "-r", str(repeats), "-o", "json", *device]


def run_llama_bench(exe: str, args: list[str], timeout: float) -> list[dict]:
    """Run llama-bench and return its parsed JSON tests; RuntimeError with a one-line reason on any failure."""
    try:
        proc = subprocess.run([exe, *args], capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"llama-bench timed out after {timeout:.0f} s") from None
    except OSError as exc:
        raise RuntimeError(f"llama-bench could not start: {exc}") from None
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        raise RuntimeError(f"llama-bench exited with status {proc.returncode}: {tail[0][:300]}")
    try:
        tests = json.loads(proc.stdout)
    except json.JSONDecodeError as exc:
        raise RuntimeError(f"llama-bench printed no JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(tests, list) or not all(isinstance(t, dict) for t in tests):
        raise RuntimeError("llama-bench's JSON is not a list of test objects")
    return tests


def pick(tests: list[dict], *, prompt: int, decode: int, depth: int = 0) -> dict:
    """The one test with these n_prompt / n_gen / n_depth; RuntimeError if it is missing or has no avg_ts."""
    for t in tests:
        if (t.get("n_prompt"), t.get("n_gen"), t.get("n_depth", 0)) == (prompt, decode, depth):
            if not isinstance(t.get("avg_ts"), (int, float)):
                raise RuntimeError(f"llama-bench test pp{prompt} tg{decode} d{depth} has no avg_ts")
            return t
    raise RuntimeError(f"llama-bench's JSON has no test with n_prompt={prompt}, n_gen={decode}, n_depth={depth}")


def llama_row(base: dict, exe: str | None, missing: str, *, prompt: int, decode: int, repeats: int, gpu: bool,
              threads: int, timeout: float) -> dict:
    """The llama.cpp row for one file: pp<prompt> and tg<decode> from one llama-bench run, plus tg<decode> after a
    <prompt>-token context (``-d``) from a second run when it works (impnb and HF decode after the prompt)."""
    row = new_row(base, engine="llama.cpp", path="llama-bench", cold=False, llama_bench=exe)
    if exe is None:
        return dict(row, reason=missing)
    args = bench_args(base["file_path"], prompt, decode, repeats, gpu, threads)
    try:
        tests = run_llama_bench(exe, args, timeout)
        pp, tg = pick(tests, prompt=prompt, decode=0), pick(tests, prompt=0, decode=decode)
    except RuntimeError as exc:
        return dict(row, reason=str(exc), command=[exe, *args])
    row.update(prefill_tok_s=float(pp["avg_ts"]), decode_tok_s=float(tg["avg_ts"]), command=[exe, *args],
               prefill_samples_tok_s=pp.get("samples_ts"), decode_samples_tok_s=tg.get("samples_ts"),
               backend=pp.get("backends"), threads=pp.get("n_threads"), n_gpu_layers=pp.get("n_gpu_layers"),
               flash_attn=pp.get("flash_attn"), build_commit=pp.get("build_commit"), decode_depth=0,
               gpu_info=pp.get("gpu_info") or None, cpu_info=pp.get("cpu_info") or None)
    deep = bench_args(base["file_path"], 0, decode, repeats, gpu, threads) + ["-d", str(prompt)]
    try:
        row["decode_tok_s_after_prompt"] = float(pick(run_llama_bench(exe, deep, timeout), prompt=0,
                                                      decode=decode, depth=prompt)["avg_ts"])
    except RuntimeError as exc:
        row["decode_tok_s_after_prompt"], row["decode_after_prompt_reason"] = None, str(exc)
    return row
