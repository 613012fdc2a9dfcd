"""The machine a benchmark runs on (tools/bench_generate.py): the GPU's name, the result file's device name, the
commit, the host, and how busy its CPUs were (Linux PSI), since other work slows every engine measured here."""
from __future__ import annotations

import os
import platform
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def gpu_name() -> str | None:
    """The first GPU's name from nvidia-smi, or None without a usable one."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    names = [line.strip() for line in out.stdout.splitlines() if line.strip()]
    return names[0] if out.returncode == 0 and names else None


def device_slug(name: str | None) -> str:
    if name is None:
        return "cpu"
    low = name.lower()
    chip = next((c for c in ("h200", "h100", "b200", "a100", "l40s", "l4") if c in low), None)
    return chip or "".join(c if c.isalnum() else "-" for c in low).strip("-")


def commit() -> str:
    """$IMPNB_COMMIT, else the checkout's short HEAD (+ "-dirty" with uncommitted changes to tracked files)."""
    if os.environ.get("IMPNB_COMMIT"):
        return os.environ["IMPNB_COMMIT"]
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True)
    except OSError:
        return "unknown"
    if head.returncode:
        return "unknown"
    return head.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def host_info() -> dict:
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(), "numpy": np.__version__,
            "load_average_start": list(os.getloadavg()), "cpu_pressure_start": cpu_pressure()}


def cpu_pressure() -> dict | None:
    """Linux PSI (/proc/pressure/cpu, "some" line): the share of time runnable work waited for a CPU, in percent
    over the last 10 / 60 / 300 s: other work on the machine, which slows every engine here."""
    try:
        with open("/proc/pressure/cpu") as f:
            line = next(line for line in f if line.startswith("some"))
    except (OSError, StopIteration):
        return None
    fields = dict(kv.split("=") for kv in line.split()[1:])
    return {k: float(fields[k]) for k in ("avg10", "avg60", "avg300", "total")}  # total: us stalled so far


def pressure_share(start: dict | None, end: dict | None, seconds: float) -> float | None:
    """Percent of the run's wall time in which some runnable task waited for a CPU (PSI totals)."""
    if not start or not end or seconds <= 0:
        return None
    return 100.0 * (end["total"] - start["total"]) / 1e6 / seconds


def wait_for_quiet(max_pct: float, max_s: float) -> None:
    """Wait until runnable work waited for a CPU less than ``max_pct`` % of the time over the last 10 s and over
    the last minute (PSI avg10, avg60: a pause between another job's steps is not quiet), at most ``max_s``
    seconds; returns at once without PSI."""
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < max_s:
        p = cpu_pressure()
        if p is None or max(p["avg10"], p["avg60"]) < max_pct:
            return
        print(f"  waiting for a quiet machine (CPU wait {p['avg10']:.0f}% over the last 10 s, {p['avg60']:.0f}% "
              f"over the last minute)", file=sys.stderr, flush=True)
        time.sleep(10)
