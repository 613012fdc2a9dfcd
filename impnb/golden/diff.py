"""Diff two golden dumps tap by tap, in graph order: full tensors, or what a partial dump (llama.cpp's printed
corners and sums) holds. The first tap beyond the tolerance is where two engines start to disagree."""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np


@dataclass
class TapDiff:
    key: str
    max_abs: float
    max_rel: float  # max |a - b| / max |a|: relative to the tap's scale, robust to elements near zero
    cosine: float  # NaN where only corners were compared
    shape: tuple
    compared: str = "all"  # "all" elements, or "corners" (+ "sum") of a partial dump
    sum_rel: float = math.nan  # |sum a - sum b| / sum |a| (partial dumps), NaN where not compared

    def within(self, tol: float) -> bool:
        ok = bool(np.isfinite(self.max_rel) and self.max_rel <= tol)
        return ok and (math.isnan(self.sum_rel) or self.sum_rel <= tol)

    @property
    def worst(self) -> float:
        """The larger of max_rel and sum_rel (what ``within`` holds against the tolerance)."""
        return self.max_rel if math.isnan(self.sum_rel) else max(self.max_rel, self.sum_rel)


def compare(a, b) -> list[TapDiff]:
    """Per-tap errors of B against A, in A's graph order, over the taps both dumps hold."""
    ids_a, ids_b = a.manifest.get("token_ids"), b.manifest.get("token_ids")
    if ids_a is not None and ids_b is not None and list(ids_a) != list(ids_b):
        raise ValueError("the dumps were made from different token ids; compare dumps of the same prompt")
    rows = []
    for key in a.taps:
        if not b.has(key):
            continue
        if key in a.tensors and key in b.tensors:
            x, y = a.tensors[key].astype(np.float64), b.tensors[key].astype(np.float64)
            if x.shape != y.shape:
                raise ValueError(f"tap {key}: shape {x.shape} in A but {y.shape} in B")
            rows.append(_diff(key, x, y))
        elif key in a.tensors:
            rows.append(_diff_full_corners(key, a.tensors[key], b.partial[key]))
        elif key in b.tensors:
            rows.append(_diff_full_corners(key, b.tensors[key], a.partial[key]))
        else:
            rows.append(_diff_corners(key, a.partial[key], b.partial[key]))
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


def align(full: np.ndarray, shape, key: str) -> np.ndarray:
    """``full`` cut to a partial tap's ``shape``: leading axes of 1 are added, and a partial tap that holds only
    the last tokens (llama.cpp computes only the output token in the last layer) meets the last rows."""
    want = tuple(shape)
    want = (1,) * (full.ndim - len(want)) + want
    if len(want) == full.ndim and want[1:] == full.shape[1:] and want[0] <= full.shape[0]:
        return full[full.shape[0] - want[0]:]
    raise ValueError(f"tap {key}: shape {list(full.shape)} does not hold the partial tap's {list(shape)}")


def _pairs_error(x: np.ndarray, v: np.ndarray) -> np.ndarray:
    both_nan = np.isnan(x) & np.isnan(v)
    err = np.abs(x - v)
    return np.where(both_nan, 0.0, np.where(np.isnan(err), np.inf, err))


def _diff_full_corners(key: str, full: np.ndarray, c) -> TapDiff:
    x = align(full.astype(np.float64), c.shape, key)
    index = np.asarray(c.index, np.int64)
    index = np.concatenate([np.zeros((index.shape[0], x.ndim - index.shape[1]), np.int64), index], axis=1)
    err = np.maximum(_pairs_error(x[tuple(index.T)], np.asarray(c.values, np.float64)) - c.print_abs, 0.0)
    finite = x[np.isfinite(x)]
    scale = float(np.max(np.abs(finite))) if finite.size else 0.0
    max_abs = float(err.max()) if err.size else 0.0
    max_rel = max_abs / scale if scale > 0 else (0.0 if max_abs == 0 else math.inf)
    sum_rel, compared = math.nan, "corners"
    if c.total is not None:
        l1 = float(np.sum(np.abs(finite))) or 1.0
        sum_rel = max(abs(float(np.sum(x)) - c.total) - c.sum_print_abs, 0.0) / l1
        sum_rel = math.inf if math.isnan(sum_rel) else sum_rel
        compared = "corners+sum"
    return TapDiff(key, max_abs, max_rel, math.nan, tuple(c.shape), compared, sum_rel)


def _diff_corners(key: str, a, b) -> TapDiff:
    """Two partial dumps: the indices both printed, and the two sums (relative to the larger sum)."""
    where = {tuple(i): k for k, i in enumerate(np.asarray(a.index).tolist())}
    pairs = [(where[tuple(i)], k) for k, i in enumerate(np.asarray(b.index).tolist()) if tuple(i) in where]
    va = np.array([a.values[i] for i, _ in pairs], np.float64)
    vb = np.array([b.values[k] for _, k in pairs], np.float64)
    err = np.maximum(_pairs_error(va, vb) - a.print_abs - b.print_abs, 0.0)
    scale = float(np.max(np.abs(va[np.isfinite(va)]))) if np.isfinite(va).any() else 0.0
    max_abs = float(err.max()) if err.size else 0.0
    max_rel = max_abs / scale if scale > 0 else (0.0 if max_abs == 0 else math.inf)
    sum_rel = math.nan
    if a.total is not None and b.total is not None:
        sum_rel = abs(a.total - b.total) / (max(abs(a.total), abs(b.total)) or 1.0)
    return TapDiff(key, max_abs, max_rel, math.nan, tuple(a.shape), "corners" + ("+sum" if not math.isnan(sum_rel)
                                                                                 else ""), sum_rel)


def _fmt(v: float, width: int, spec: str) -> str:
    return f"{'-':>{width}s}" if math.isnan(v) else f"{v:{width}{spec}}"


def format_table(rows: list[TapDiff], tol: float) -> tuple[str, TapDiff | None]:
    partial = any(r.compared != "all" for r in rows)
    head = f"{'tap':28s} {'shape':>18s} {'max abs':>11s} {'max rel':>11s}"
    head += f" {'compared':>11s} {'sum rel':>11s}" if partial else ""
    lines = [head + f" {'cosine':>12s}"]
    first_bad = next((r for r in rows if not r.within(tol)), None)
    for r in rows:
        line = f"{r.key:28s} {str(list(r.shape)):>18s} {r.max_abs:11.3e} {r.max_rel:11.3e}"
        if partial:
            line += f" {r.compared:>11s} {_fmt(r.sum_rel, 11, '.3e')}"
        line += f" {_fmt(r.cosine, 12, '.9f')}"
        lines.append(line + ("  <-- first beyond tolerance" if r is first_bad else ""))
    verdict = (f"first tap beyond max rel {tol:g}: {first_bad.key}" if first_bad
               else f"all {len(rows)} taps within max rel {tol:g}")
    return "\n".join(lines + [verdict]), first_bad


def growth_series(rows: list[TapDiff]) -> dict[str, list[tuple[int, float]]]:
    """Per-layer tap name -> [(layer, worst relative error)], from the rows of per-layer taps."""
    series: dict[str, list[tuple[int, float]]] = {}
    for r in rows:
        m = re.fullmatch(r"blk\.(\d+)\.(.+)", r.key)
        if m:
            series.setdefault(m.group(2), []).append((int(m.group(1)), r.worst))
    return {name: sorted(points) for name, points in series.items()}


def growth_figure(rows: list[TapDiff], tol: float | None = None):
    """The error-growth figure: one line per per-layer tap, log scale, the tolerance as a dashed line. The y range
    comes from the measured nonzero errors; exact zeros sit on its floor as hollow markers (not at an arbitrary
    1e-12 that would squash every real difference to the bottom), infinities on its ceiling."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    series = growth_series(rows)
    values = [v for pts in series.values() for _, v in pts if np.isfinite(v) and v > 0]
    low = min(values + ([tol] if tol else [])) if values or tol else 1e-7
    high = max(values + ([tol] if tol else [])) if values or tol else 1e-6
    floor, ceiling = low / 4, high * 4
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for name, pts in series.items():
        layers = [p[0] for p in pts]
        shown = [min(max(v, floor), ceiling) if np.isfinite(v) else ceiling for _, v in pts]
        line, = ax.plot(layers, shown, marker=".", label=name)
        zeros = [(i, floor) for i, v in pts if v == 0]
        if zeros:
            ax.plot(*zip(*zeros), linestyle="none", marker="o", mfc="none", color=line.get_color())
    if tol:
        ax.axhline(tol, color="red", linestyle="--", linewidth=1, label=f"tolerance {tol:g}")
    ax.set(yscale="log", ylim=(floor / 1.5, ceiling * 1.5), xlabel="layer", ylabel="relative error (TapDiff.worst)",
           title="error growth per layer (hollow markers on the floor: exactly 0)")
    ax.legend(fontsize="small", ncol=2)
    fig.tight_layout()
    return fig


def plot_growth(rows: list[TapDiff], out: str, tol: float | None = None) -> None:
    """Save ``growth_figure(rows, tol)`` to ``out``."""
    try:
        import matplotlib  # noqa: F401
    except ImportError as exc:
        raise SystemExit(f"--plot needs matplotlib: pip install 'impnb[plot]' ({exc})")
    growth_figure(rows, tol).savefig(out, dpi=120)
