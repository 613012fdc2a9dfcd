"""Golden activation dumps: record every named tap of one forward pass, save it, and diff two dumps.

Dimension legend: T = tokens of the dumped forward pass; the other axes are the tap's own (e.g. [T, D], [T, H, Dh]).

Vocabulary (llama.cpp's ``cb(cur, name, il)``, stored as GGUF-style keys): ``embedding``; per layer i
``blk.{i}.attn_norm``, ``.q``, ``.k``, ``.v``, ``.attn_out``, ``.ffn_norm``, ``.router_logits``, ``.ffn_out``,
``.residual``; linear-attention layers also ``.delta_out``, ``.conv_state``, ``.recurrent_state`` (states with a
leading axis of 1, one per prefill chunk); then ``final_norm`` and ``logits``. The model calls ``taps.tap(name, layer, array)`` at each point.

File format: one safetensors file; tensors are float32 under their tap keys; the metadata entry ``impnb_golden``
holds the JSON manifest (format version, model hash, token ids, backend, commit, tap order). A dump of another
format version is refused with the command to regenerate it.

CLI: ``python -m impnb.golden diff A B [--tol 1e-3] [--plot out.png]``: per-tap max abs / max rel / cosine in
graph order and the first tap beyond the tolerance (exit 1 if there is one).
"""
from __future__ import annotations

import argparse
import fnmatch
import hashlib
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass

import numpy as np

FORMAT_VERSION = 1
_META_KEY = "impnb_golden"
REGENERATE_HINT = "regenerate it with: python -m impnb.generate --model MODEL --prompt PROMPT --dump-golden FILE"


class GoldenRecorder:
    """A ``taps`` object for ``model.forward``: keeps a float32 host copy of each tap, in call order.

    ``include``: glob patterns of tap keys to keep (default: all; env ``IMPNB_GOLDEN_INCLUDE``, comma-separated).
    """

    def __init__(self, include: list[str] | None = None):
        env = os.environ.get("IMPNB_GOLDEN_INCLUDE")
        self.include = include or ([p.strip() for p in env.split(",") if p.strip()] if env else None)
        self.tensors: dict[str, np.ndarray] = {}

    @staticmethod
    def key(name: str, layer: int | None) -> str:
        return name if layer is None else f"blk.{int(layer)}.{name}"

    def tap(self, name: str, layer: int | None, array) -> None:
        key = self.key(name, layer)
        if self.include and not any(fnmatch.fnmatchcase(key, p) for p in self.include):
            return
        from .cuda._runtime import to_host
        host = np.array(to_host(array), dtype=np.float32, copy=True)
        if key in self.tensors:  # a second forward (chunked prefill): append along the token axis
            host = np.concatenate([self.tensors[key], host], axis=0)
        self.tensors[key] = host


def model_hash(path: str) -> str:
    """sha256 fingerprint of a model file or directory: name, size, first and last MiB of each weight file."""
    files = [path] if os.path.isfile(path) else sorted(
        os.path.join(path, f) for f in os.listdir(path)
        if f.endswith((".gguf", ".safetensors", ".json", ".jinja")))
    h = hashlib.sha256()
    for f in files:
        size = os.path.getsize(f)
        h.update(f"{os.path.basename(f)}:{size}".encode())
        with open(f, "rb") as fh:
            h.update(fh.read(1 << 20))
            fh.seek(max(0, size - (1 << 20)))
            h.update(fh.read(1 << 20))
    return h.hexdigest()[:32]


def source_commit() -> str:
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        out = subprocess.run(["git", "-C", here, "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True,
                             timeout=5)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def save(file: str, recorder: GoldenRecorder, *, token_ids, backend: str, model: str = "", model_sha: str = "") -> dict:
    """Write the recorded taps and their manifest to ``file`` (safetensors). Returns the manifest."""
    from safetensors.numpy import save_file
    if not recorder.tensors:
        raise ValueError("no taps were recorded (does the model call taps.tap, and does --include match?)")
    manifest = {"format_version": FORMAT_VERSION, "producer": "impnb", "model": model, "model_hash": model_sha,
                "token_ids": [int(t) for t in token_ids], "backend": backend, "commit": source_commit(),
                "dtype": "float32", "taps": list(recorder.tensors)}
    tensors = {k: np.ascontiguousarray(v) for k, v in recorder.tensors.items()}
    save_file(tensors, file, metadata={_META_KEY: json.dumps(manifest)})
    return manifest


@dataclass
class Dump:
    manifest: dict
    tensors: dict[str, np.ndarray]


def load(file: str) -> Dump:
    from safetensors import safe_open
    if not os.path.isfile(file):
        raise FileNotFoundError(f"golden dump {file!r} does not exist")
    with safe_open(file, framework="numpy") as f:
        meta = (f.metadata() or {}).get(_META_KEY)
        if meta is None:
            raise ValueError(f"{file}: not an impnb golden dump (no '{_META_KEY}' manifest); {REGENERATE_HINT}")
        manifest = json.loads(meta)
        version = manifest.get("format_version")
        if version != FORMAT_VERSION:
            raise ValueError(f"{file}: golden format version {version}, this impnb reads version {FORMAT_VERSION}; "
                             f"{REGENERATE_HINT}")
        tensors = {k: f.get_tensor(k) for k in manifest["taps"]}
    return Dump(manifest, tensors)


@dataclass
class TapDiff:
    key: str
    max_abs: float
    max_rel: float  # max |a - b| / max |a|: relative to the tap's scale, robust to elements near zero
    cosine: float
    shape: tuple

    def within(self, tol: float) -> bool:
        return bool(np.isfinite(self.max_rel) and self.max_rel <= tol)


def compare(a: Dump, b: Dump) -> list[TapDiff]:
    """Per-tap errors of B against A, in A's graph order, over the taps both dumps hold."""
    if a.manifest["token_ids"] != b.manifest["token_ids"]:
        raise ValueError("the dumps were made from different token ids; compare dumps of the same prompt")
    rows = []
    for key in a.manifest["taps"]:
        if key not in b.tensors:
            continue
        x, y = a.tensors[key].astype(np.float64), b.tensors[key].astype(np.float64)
        if x.shape != y.shape:
            raise ValueError(f"tap {key}: shape {x.shape} in A but {y.shape} in B")
        rows.append(_diff(key, x, y))
    return rows


def _diff(key: str, x: np.ndarray, y: np.ndarray) -> TapDiff:
    finite = np.isfinite(x) & np.isfinite(y)
    same_nonfinite = (~np.isfinite(x) & (x == y)) | (np.isnan(x) & np.isnan(y))
    err = np.where(finite, np.abs(x - y), np.where(same_nonfinite, 0.0, np.inf))
    scale = np.max(np.abs(np.where(finite, x, 0.0))) if x.size else 0.0
    max_abs = float(np.max(err)) if err.size else 0.0
    max_rel = max_abs / scale if scale > 0 else (0.0 if max_abs == 0 else np.inf)
    xf, yf = np.where(finite, x, 0.0).ravel(), np.where(finite, y, 0.0).ravel()
    norm = np.linalg.norm(xf) * np.linalg.norm(yf)
    cosine = float(xf @ yf / norm) if norm > 0 else float(np.array_equal(xf, yf))
    return TapDiff(key, max_abs, float(max_rel), cosine, tuple(x.shape))


def format_table(rows: list[TapDiff], tol: float) -> tuple[str, TapDiff | None]:
    lines = [f"{'tap':28s} {'shape':>18s} {'max abs':>11s} {'max rel':>11s} {'cosine':>12s}"]
    first_bad = next((r for r in rows if not r.within(tol)), None)
    for r in rows:
        mark = "  <-- first beyond tolerance" if r is first_bad else ""
        lines.append(f"{r.key:28s} {str(list(r.shape)):>18s} {r.max_abs:11.3e} {r.max_rel:11.3e} "
                     f"{r.cosine:12.9f}{mark}")
    verdict = (f"first tap beyond max rel {tol:g}: {first_bad.key}" if first_bad
               else f"all {len(rows)} taps within max rel {tol:g}")
    return "\n".join(lines + [verdict]), first_bad


def plot_growth(rows: list[TapDiff], out: str) -> None:
    """Max rel error per layer, one line per per-layer tap name (log scale)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise SystemExit(f"--plot needs matplotlib: pip install 'impnb[plot]' ({exc})")
    series: dict[str, list[tuple[int, float]]] = {}
    for r in rows:
        m = re.fullmatch(r"blk\.(\d+)\.(.+)", r.key)
        if m:
            series.setdefault(m.group(2), []).append((int(m.group(1)), max(r.max_rel, 1e-12)))
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for name, pts in series.items():
        ax.plot(*zip(*sorted(pts)), marker=".", label=name)
    ax.set(yscale="log", xlabel="layer", ylabel="max |A-B| / max |A|", title="error growth per layer")
    ax.legend(fontsize="small", ncol=2)
    fig.tight_layout()
    fig.savefig(out, dpi=120)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m impnb.golden", description="Compare two golden activation dumps.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("diff", help="per-tap error table of B against A, in graph order")
    d.add_argument("a"), d.add_argument("b")
    d.add_argument("--tol", type=float, default=1e-3, help="max rel beyond which a tap fails (default 1e-3)")
    d.add_argument("--plot", metavar="OUT.png", help="draw the error growth per layer (needs matplotlib)")
    args = ap.parse_args(argv)
    try:
        a, b = load(args.a), load(args.b)
        rows = compare(a, b)
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if a.manifest.get("model_hash") != b.manifest.get("model_hash"):
        print("warning: the dumps come from different model files (model_hash differs)", file=sys.stderr)
    table, first_bad = format_table(rows, args.tol)
    print(f"A: {args.a} ({a.manifest['backend']}, {a.manifest['commit']})  "
          f"B: {args.b} ({b.manifest['backend']}, {b.manifest['commit']})")
    print(table)
    if args.plot:
        plot_growth(rows, args.plot)
        print(f"plot written to {args.plot}")
    return 1 if first_bad else 0


if __name__ == "__main__":
    sys.exit(main())
