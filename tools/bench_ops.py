"""Benchmark the NVFP4 GEMV / GEMM fast path on a GPU against the copy bandwidth and torch fp16 (cuBLAS).

    python tools/bench_ops.py [--out DIR] [--commit HASH] [--quick]

Dimension legend: N = rows of W (output features), K = columns, M = activation rows.
For each GEMV shape: the median time per call of a CUDA graph that replays many calls (CUDA events), with the
inputs rotated over enough weight copies to exceed the L2 several times ("us", cold), and the same with one copy
("us_l2": the weights may sit in L2, labelled as such); effective GB/s = (packed + scales + x + y bytes) / time;
% of the device-to-device copy bandwidth measured in this run (bytes read + written); the ratio of torch's fp16
GEMV (cuBLAS, same shape, same rotation, graph-replayed) time to ours. For nvfp4_gemm at M = 16, 128, 512: the
same against torch fp16 and bf16 matmul. Prints a table; writes ops-<device>.json into --out.
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import re
import statistics
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

GEMV_SHAPES = [(4096, 4096), (14336, 4096), (4096, 14336), (8192, 8192), (704, 2816), (2816, 704), (262144, 640)]
GEMM_SHAPES = [(4096, 4096), (14336, 4096)]
GEMM_M = [16, 128, 512]
ROTATE_BYTES = 512 << 20  # rotate over at least this many weight bytes (~10x the H100/H200 L2)
MAX_SETS = 64


def event_median_us(run, reps: int, calls_per_rep: int, stream) -> float:
    import cupy
    times = []
    for _ in range(reps):
        start, end = cupy.cuda.Event(), cupy.cuda.Event()
        start.record(stream)
        run()
        end.record(stream)
        end.synchronize()
        times.append(cupy.cuda.get_elapsed_time(start, end) * 1e3 / calls_per_rep)
    return statistics.median(times)


def copy_bandwidth_gbps(stream) -> float:
    """Device-to-device copy of 1 GiB: (read + written bytes) / median time."""
    import cupy
    n = 1 << 30
    src, dst = cupy.empty(n, cupy.uint8), cupy.empty(n, cupy.uint8)
    src[...] = 1

    def run():
        cupy.cuda.runtime.memcpyAsync(dst.data.ptr, src.data.ptr, n, cupy.cuda.runtime.memcpyDeviceToDevice,
                                      stream.ptr)
    run()
    us = event_median_us(run, 20, 1, stream)
    return 2 * n / (us * 1e-6) / 1e9


def graph_of(calls, stream):
    """Capture ``calls`` (a list of thunks) in one CUDA graph on ``stream`` (after one warm pass)."""
    for call in calls[:2]:
        call()
    stream.synchronize()
    keep = []
    stream.begin_capture()
    try:
        for call in calls:
            keep.append(call())
    except BaseException:
        try:
            stream.end_capture()
        finally:
            raise
    graph = stream.end_capture()
    return graph, keep


def random_nvfp4(rng, n, k, layout="compressed-tensors"):
    import cupy
    from impnb.formats import NVFP4Tensor
    packed = cupy.asarray(rng.integers(0, 256, (n, k // 2), dtype=np.uint8))
    scales = cupy.asarray(rng.integers(0x28, 0x48, (n, k // 16), dtype=np.uint8))  # ~0.03 .. 2, no NaN
    return NVFP4Tensor(packed, scales, 448.0 * 6 / 3.0, layout)


def n_sets(bytes_per_set: int, rotate: bool) -> int:
    return max(1, min(MAX_SETS, math.ceil(ROTATE_BYTES / bytes_per_set))) if rotate else 1


def time_ours_gemv(rng, n, k, rotate, stream, calls=64):
    import cupy
    from impnb.cuda.nvfp4 import nvfp4_gemv
    sets = n_sets(n * k // 2 + n * k // 16, rotate)
    ts = [random_nvfp4(rng, n, k) for _ in range(sets)]
    xs = [cupy.asarray(rng.standard_normal(k).astype(np.float32)) for _ in range(sets)]
    with stream:
        graph, _ = graph_of([lambda i=i: nvfp4_gemv(ts[i % sets], xs[i % sets]) for i in range(calls)], stream)
        us = event_median_us(lambda: graph.launch(stream), 15, calls, stream)
    return us, sets


def time_torch_gemv(n, k, rotate, calls=64):
    import torch
    sets = n_sets(n * k * 2, rotate)
    ws = [torch.randn(n, k, dtype=torch.float16, device="cuda") for _ in range(sets)]
    xs = [torch.randn(k, dtype=torch.float16, device="cuda") for _ in range(sets)]
    return _torch_graph_us([lambda i=i: torch.mv(ws[i % sets], xs[i % sets]) for i in range(calls)], calls), sets


def _torch_graph_us(calls, n_calls):
    import torch
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for c in calls[:3]:
            c()
    torch.cuda.current_stream().wait_stream(s)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        outs = [c() for c in calls]
    times = []
    for _ in range(15):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        graph.replay()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) * 1e3 / n_calls)
    del outs
    return statistics.median(times)


def time_ours_gemm(rng, n, k, m, stream, calls=8):
    """nvfp4_gemm: graph replay when it captures (cuBLAS may refuse), else back-to-back calls on the stream."""
    import cupy
    from impnb.cuda.nvfp4 import nvfp4_gemm
    sets = n_sets(n * k // 2 + n * k // 16, True)
    ts = [random_nvfp4(rng, n, k) for _ in range(min(sets, 8))]
    xs = [cupy.asarray(rng.standard_normal((m, k)).astype(np.float32)) for _ in ts]
    thunks = [lambda i=i: nvfp4_gemm(ts[i % len(ts)], xs[i % len(ts)]) for i in range(calls)]
    with stream:
        try:
            graph, _ = graph_of(thunks, stream)
            return event_median_us(lambda: graph.launch(stream), 10, calls, stream), "graph"
        except Exception as exc:  # noqa: BLE001 - report and fall back, labelled
            print(f"  (gemm M={m}: graph capture failed: {type(exc).__name__}: {exc}; timing stream launches)")
            stream.synchronize()
            return event_median_us(lambda: [t() for t in thunks], 10, calls, stream), "stream"


def time_torch_mm(n, k, m, dtype, calls=8):
    import torch
    sets = min(n_sets(n * k * 2, True), 8)
    ws = [torch.randn(n, k, dtype=dtype, device="cuda") for _ in range(sets)]
    xs = [torch.randn(m, k, dtype=dtype, device="cuda") for _ in range(sets)]
    return _torch_graph_us([lambda i=i: torch.matmul(xs[i % sets], ws[i % sets].T) for i in range(calls)], calls)


def gemv_rows(rng, copy_gbps, stream, quick):
    from impnb.cuda.linear import gemv_rows_per_warp
    rows = []
    for n, k in (GEMV_SHAPES[:2] + GEMV_SHAPES[4:6] if quick else GEMV_SHAPES):
        nbytes = n * k // 2 + n * k // 16 + 4 * k + 4 * n
        us, sets = time_ours_gemv(rng, n, k, True, stream)
        us_l2, _ = time_ours_gemv(rng, n, k, False, stream)
        torch_us, torch_sets = time_torch_gemv(n, k, True)
        gbps = nbytes / (us * 1e-6) / 1e9
        rows.append({"op": "nvfp4_gemv", "shape": f"{n}x{k}", "us": round(us, 3), "gbps": round(gbps, 1),
                     "pct_copy_bw": round(100 * gbps / copy_gbps, 1), "ratio_vs_torch_fp16": round(torch_us / us, 2),
                     "torch_fp16_us": round(torch_us, 3), "us_l2": round(us_l2, 3), "weight_sets": sets,
                     "torch_weight_sets": torch_sets, "bytes": nbytes, "timing": "graph",
                     "plan": f"gemv_nvfp4<{gemv_rows_per_warp(n)}>"})  # the engine's GEMV
        print(_fmt(rows[-1]), flush=True)
    return rows


def gemm_rows(rng, copy_gbps, stream, quick):
    import torch
    rows = []
    for n, k in GEMM_SHAPES[:1] if quick else GEMM_SHAPES:
        for m in GEMM_M:
            nbytes = n * k // 2 + n * k // 16 + 4 * m * k + 4 * m * n
            us, how = time_ours_gemm(rng, n, k, m, stream)
            fp16 = time_torch_mm(n, k, m, torch.float16)
            bf16 = time_torch_mm(n, k, m, torch.bfloat16)
            gbps = nbytes / (us * 1e-6) / 1e9
            rows.append({"op": "nvfp4_gemm", "shape": f"M{m} {n}x{k}", "us": round(us, 3), "gbps": round(gbps, 1),
                         "pct_copy_bw": round(100 * gbps / copy_gbps, 1), "ratio_vs_torch_fp16": round(fp16 / us, 3),
                         "torch_fp16_us": round(fp16, 3), "torch_bf16_us": round(bf16, 3),
                         "tflops": round(2 * m * n * k / (us * 1e-6) / 1e12, 2), "bytes": nbytes, "timing": how})
            print(_fmt(rows[-1]), flush=True)
    return rows


SWEEP_SHAPES = [(4096, 4096), (14336, 4096), (4096, 14336), (8192, 8192), (262144, 640)]


def sweep(rng, stream, out_dir) -> None:
    """Time GEMV geometries per shape (the candidates _gemv_plan chooses among)."""
    import cupy
    from impnb.cuda.nvfp4 import _small_m
    results = []
    for n, k in SWEEP_SHAPES:
        sets = n_sets(n * k // 2 + n * k // 16, True)
        ts = [random_nvfp4(rng, n, k) for _ in range(sets)]
        xs = [cupy.asarray(rng.standard_normal((1, k)).astype(np.float32)) for _ in range(sets)]
        plans = [("tile", 32, 8, 4, 2), ("tile", 32, 8, 4, 1), ("tile", 64, 4, 4, 2)]
        for plan in plans:
            calls = [lambda i=i, g=plan: _small_m(ts[i % sets], xs[i % sets], "sweep", g) for i in range(48)]
            with stream:
                graph, _ = graph_of(calls, stream)
                us = event_median_us(lambda: graph.launch(stream), 7, 48, stream)
            gbps = (n * k // 2 + n * k // 16 + 4 * k + 4 * n) / (us * 1e-6) / 1e9
            results.append({"shape": f"{n}x{k}", "plan": list(plan), "us": round(us, 3), "gbps": round(gbps, 1)})
        mine = sorted((r for r in results if r["shape"] == f"{n}x{k}"), key=lambda r: r["us"])
        print(f"{n}x{k}: "
              + "; ".join(f"{r['plan']} {r['us']:.2f}us {r['gbps']:.0f}GB/s" for r in mine[:4]), flush=True)
        del ts, xs
    with open(os.path.join(out_dir, "gemv-sweep.json"), "w") as f:
        json.dump(results, f, indent=0)


def _fmt(r) -> str:
    extra = f"L2-hot {r['us_l2']:8.2f} us" if "us_l2" in r else f"{r.get('tflops', 0):6.1f} TFLOP/s"
    return (f"{r['op']:11s} {r['shape']:>16s} {r['us']:10.2f} us {r['gbps']:8.0f} GB/s {r['pct_copy_bw']:6.1f}% copy "
            f"torch fp16 {r['torch_fp16_us']:9.2f} us  x{r['ratio_vs_torch_fp16']:<6} {extra}  [{r['timing']}]")


def device_slug(name: str) -> str:
    m = re.search(r"(H100|H200|A100|L40S|B200|GH200)", name)
    return (m.group(1) if m else re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-")).lower()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.environ.get("OUT", "bench/results"))
    parser.add_argument("--commit", default="unknown")
    parser.add_argument("--quick", action="store_true", help="fewer shapes (a smoke run)")
    parser.add_argument("--sweep", action="store_true", help="time the GEMV geometry candidates, then stop")
    args = parser.parse_args(argv)
    import cupy
    name = cupy.cuda.runtime.getDeviceProperties(0)["name"].decode()
    stream = cupy.cuda.Stream(non_blocking=True)
    rng = np.random.default_rng(0)
    if args.sweep:
        os.makedirs(args.out, exist_ok=True)
        sweep(rng, stream, args.out)
        return 0
    copy_gbps = copy_bandwidth_gbps(stream)
    print(f"device {name}; D2D copy {copy_gbps:.0f} GB/s (read + write)", flush=True)
    rows = gemv_rows(rng, copy_gbps, stream, args.quick) + gemm_rows(rng, copy_gbps, stream, args.quick)
    result = {"device": name, "commit": args.commit,
              "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "copy_gbps": round(copy_gbps, 1), "rows": rows}
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, f"ops-{device_slug(name)}.json")
    with open(path, "w") as f:
        json.dump(result, f, indent=1)
    print(f"\nwrote {path}")
    for r in rows:
        print(_fmt(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
