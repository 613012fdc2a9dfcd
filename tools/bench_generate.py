"""Batch-1 generation benchmark on the GPU: impnb's CUDA engine (NVFP4 and bf16 weights) against HF transformers
bf16 (eager, and static cache + torch.compile where it runs), in the same run.

Models: the exact architectures of SmolLM2-135M, Gemma-3-270M and a Qwen3-30B-A3B-style MoE stack (``--moe-layers``
of its 48 layers), random weights built ON the device (tools/random_models.py; real files cannot travel).
Per row: prefill tokens/s (a ``--prompt``-token prompt), decode tokens/s (``--decode`` tokens, greedy, after that
prompt), kernels launched per decode token (impnb: counted at graph capture; HF: torch.profiler over one step),
and for impnb the weight bytes one decode step reads, the achieved GB/s and its share of the device-to-device copy
bandwidth measured in the same run.

    python tools/bench_generate.py [--models smollm2-135m,gemma3-270m,qwen3-30b-a3b] [--out FILE]
    python tools/bench_generate.py --models qwen3.5-9b --hybrid-layers 8     # hybrid linear-attention stack

``qwen3.5-9b`` is the Qwen3.5-9B text geometry (transformers' Qwen3_5TextConfig defaults: hidden 4096, 16 query /
4 KV heads x 256 with the output gate, linear layers of 16 key heads x 128 and 32 value heads x 128, conv 4, MLP
12288, vocabulary 248320), ``--hybrid-layers`` of its 32 layers (default 8: 6 gated-DeltaNet + 2 full-attention
layers, two periods of the 3:1 pattern), float32 random weights resident on the GPU. The fused CUDA engine does
not run these layers: impnb's row is the model run op by op on the registry's CUDA ops (Numba kernels for the
linear-attention ops), the HF row is transformers eager in bf16 (its torch fallbacks of the delta rule).

Writes a table to stdout and JSON {"device", "commit", "date", "copy_gbps", "rows": [...]} to
bench/results/generate-<device>.json (or --out).
"""
from __future__ import annotations

import argparse
import datetime
import gc
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_hybrid import HYBRID_ARCHS  # noqa: E402  (the hybrid linear-attention presets)


def copy_bandwidth_gbps() -> float:
    """Device-to-device copy of 1 GiB: bytes read + written over the median time of 20 copies (CUDA events)."""
    import cupy as cp
    a = cp.ones(1 << 28, cp.float32)
    b = cp.empty_like(a)
    times = []
    for _ in range(22):
        s, e = cp.cuda.Event(), cp.cuda.Event()
        s.record()
        b[...] = a
        e.record()
        e.synchronize()
        times.append(cp.cuda.get_elapsed_time(s, e) / 1e3)
    del a, b
    return 2 * (1 << 30) / float(np.median(times[2:])) / 1e9


def _timed(fn, sync):
    sync()
    t0 = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - t0


def kernel_profile(eng, repeats: int = 20) -> dict:
    """Where a decode step's time goes: every launch of one step is recorded (not run), then each is captured
    ``repeats`` times in a graph of its own and replayed; its graph-node time is the median replay / repeats.
    Summed per kernel name (us). Repeats find their weights warm in L2 (a lower bound for weights < 50 MB)."""
    import cupy as cp
    from impnb.cuda._launch import launch_raw, recorded_launches
    with recorded_launches() as recorded:
        with eng._stream:
            eng._step(True)
    out = {}
    s = eng._stream
    for filename, name, grid, block, args, smem in recorded:
        if name == "argmax_select":  # advances the position: not repeatable
            continue
        with s:
            s.begin_capture()
            for _ in range(repeats):
                launch_raw(filename, name, grid, block, args, shared_mem=smem)
            graph = s.end_capture()
            graph.launch(s)
            times = []
            for _ in range(5):
                a, b = cp.cuda.Event(), cp.cuda.Event()
                a.record(s)
                graph.launch(s)
                b.record(s)
                b.synchronize()
                times.append(cp.cuda.get_elapsed_time(a, b) * 1e3 / repeats)
        out[name] = out.get(name, 0.0) + float(np.median(times))
    eng.reset()
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def bench_impnb(name, fmt, cfg, prompt, n_decode, copy_gbps):
    import cupy as cp
    from impnb.engine.engine import Engine, decode_bytes
    from tools.random_models import device_tensors
    eng = Engine(cfg, device_tensors(cfg, fmt), weights="auto", max_context=len(prompt) + n_decode + 8,
                 prefill_chunk=len(prompt))
    eng.generate_greedy(prompt, 8)  # compile, capture the graphs, warm cuBLAS
    sync = eng.sync
    prefill = []
    for _ in range(3):
        eng.reset()
        prefill.append(_timed(lambda: eng.prefill(prompt), sync))
    decode = []
    for _ in range(3):
        eng.reset()
        eng.prefill(prompt)
        eng.first_token()
        decode.append(_timed(lambda: eng.replay_greedy(n_decode), sync))
    tps = n_decode / float(np.median(decode))
    step_bytes = decode_bytes(eng)
    eng.reset()
    eng.prefill(prompt)
    eng.first_token()
    prof = kernel_profile(eng)
    print(f"  {name}/{fmt} one step = {1e6 / tps:.0f} us; graph-node us per kernel name, summed over the step "
          f"(total {sum(prof.values()):.0f}): " + ", ".join(f"{k} {v:.0f}" for k, v in prof.items()), flush=True)
    row = dict(model=name, weights=fmt, engine="impnb-cuda-graph",
               prefill_tok_s=len(prompt) / float(np.median(prefill)), decode_tok_s=tps, kernels_per_token=eng.kernels_per_step[True], layers=cfg.n_layers,
               step_weight_mb=step_bytes / 1e6, achieved_gbps=step_bytes * tps / 1e9,
               pct_copy_bw=100.0 * step_bytes * tps / 1e9 / copy_gbps, weights_gb=eng.memory_bytes() / 1e9,
               step_us=1e6 / tps, graph_node_us_by_kernel={k: round(v, 1) for k, v in prof.items()})
    del eng
    gc.collect()
    cp.get_default_memory_pool().free_all_blocks()
    return row


def _hf_model(cfg_dict, n_layers):
    import torch
    import transformers as tf
    d = dict(cfg_dict)
    model_type = d.pop("model_type")
    if n_layers is not None:
        d["num_hidden_layers"] = n_layers
        if "layer_types" in d:
            d["layer_types"] = d["layer_types"][:n_layers]
    config = tf.AutoConfig.for_model(model_type, **d)
    with torch.device("cuda"):
        model = tf.AutoModelForCausalLM.from_config(config, torch_dtype=torch.bfloat16)
    return model.eval()


def _count_kernels(step):
    import torch
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        step()
        torch.cuda.synchronize()
    return sum(1 for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA)


def bench_hf(name, cfg_dict, n_layers, prompt, n_decode, compiled=False):
    import torch
    model = _hf_model(cfg_dict, n_layers)
    ids = torch.tensor([prompt], device="cuda")
    sync = torch.cuda.synchronize
    with torch.inference_mode():
        if compiled:
            return _bench_hf_compiled(name, model, ids, n_decode, sync)
        model(ids[:, :16], use_cache=True)  # warm-up
        prefill = [_timed(lambda: model(ids, use_cache=True), sync) for _ in range(3)]
        state = {}

        def start():
            out = model(ids, use_cache=True)
            state["past"], state["tok"] = out.past_key_values, out.logits[:, -1:].argmax(-1)

        def step():
            out = model(state["tok"], past_key_values=state["past"], use_cache=True)
            state["past"], state["tok"] = out.past_key_values, out.logits[:, -1:].argmax(-1)

        start()
        kernels = _count_kernels(step)
        start()
        t = _timed(lambda: [step() for _ in range(n_decode)], sync)
    row = dict(model=name, weights="bf16", engine="hf-transformers-eager", prefill_tok_s=ids.shape[1] / float(
        np.median(prefill)), decode_tok_s=n_decode / t, kernels_per_token=kernels)
    del model, state
    gc.collect()
    torch.cuda.empty_cache()
    return row


def _bench_hf_compiled(name, model, ids, n_decode, sync):
    import torch
    model.generation_config.cache_implementation = "static"
    model.forward = torch.compile(model.forward, mode="reduce-overhead", fullgraph=True)
    kw = dict(do_sample=False, pad_token_id=0)
    model.generate(ids, max_new_tokens=n_decode, min_new_tokens=n_decode, **kw)  # compile
    t_pre = _timed(lambda: model.generate(ids, max_new_tokens=1, min_new_tokens=1, **kw), sync)
    t_all = _timed(lambda: model.generate(ids, max_new_tokens=n_decode, min_new_tokens=n_decode, **kw), sync)
    return dict(model=name, weights="bf16", engine="hf-static-cache-torch.compile", prefill_tok_s=ids.shape[1] / t_pre,
                decode_tok_s=(n_decode - 1) / max(t_all - t_pre, 1e-9), kernels_per_token=None)


def device_slug(props_name: str) -> str:
    low = props_name.lower()
    for chip in ("h200", "h100", "b200", "a100", "l40s", "l4"):
        if chip in low:
            return chip
    return "".join(c if c.isalnum() else "-" for c in low).strip("-")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="smollm2-135m,gemma3-270m,qwen3-30b-a3b")
    ap.add_argument("--prompt", type=int, default=512)
    ap.add_argument("--decode", type=int, default=256)
    ap.add_argument("--moe-layers", type=int, default=8, help="MoE layers stacked (Qwen3-30B-A3B has 48)")
    ap.add_argument("--hybrid-layers", type=int, default=8, help="layers of a hybrid preset (Qwen3.5-9B has 32; "
                                                                 "every 4th is full attention)")
    ap.add_argument("--hf-decode", type=int, default=64, help="decode tokens timed for HF eager (its tok/s is "
                                                               "flat over the context lengths here)")
    ap.add_argument("--no-hf", action="store_true")
    ap.add_argument("--compile", default="smollm2-135m", help="models to also run with static cache + compile")
    ap.add_argument("--out")
    args = ap.parse_args(argv)
    import cupy as cp
    from tools.random_models import ARCHS, config_for
    props = cp.cuda.runtime.getDeviceProperties(cp.cuda.Device().id)
    device = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
    copy_gbps = copy_bandwidth_gbps()
    print(f"device {device}; device-to-device copy {copy_gbps:.0f} GB/s (read + write)", flush=True)
    rows = []
    rng = np.random.default_rng(0)
    for name in args.models.split(","):
        if name in HYBRID_ARCHS:  # tools/bench_hybrid.py
            rows.extend(_bench_hybrid(name, args, rng))
            continue
        moe = name.startswith("qwen3")
        layers = args.moe_layers if moe else None
        cfg = config_for(name, **({"num_hidden_layers": layers} if layers else {}))
        prompt = rng.integers(0, cfg.vocab_size, size=args.prompt).tolist()
        for fmt in ("nvfp4", "bf16"):
            rows.append(_safe(lambda: bench_impnb(name, fmt, cfg, prompt, args.decode, copy_gbps), name, fmt))
            _print_row(rows[-1])
        if not args.no_hf:
            n_dec = args.hf_decode
            rows.append(_safe(lambda: bench_hf(name, ARCHS[name], layers, prompt, n_dec), name, "bf16"))
            _print_row(rows[-1])
            if name in args.compile.split(","):
                rows.append(_safe(lambda: bench_hf(name, ARCHS[name], layers, prompt, args.decode, True), name, "bf16"))
                _print_row(rows[-1])
    _summary(rows)
    out = args.out or os.path.join(os.path.dirname(__file__), "..", "bench", "results",
                                   f"generate-{device_slug(device)}.json")
    doc = dict(device=device, commit=os.environ.get("IMPNB_COMMIT", "unknown"),
               date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"), copy_gbps=copy_gbps,
               prompt_tokens=args.prompt, decode_tokens=args.decode, hf_decode_tokens=args.hf_decode,
               moe_layers=args.moe_layers, hybrid_layers=args.hybrid_layers, rows=rows)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w") as f:
        json.dump(doc, f, indent=1)
    print(f"wrote {out}")
    return 0


def _bench_hybrid(name, args, rng) -> list:
    from bench_hybrid import bench_impnb_op_by_op, hybrid_config
    cfg, cfg_dict = hybrid_config(name, args.hybrid_layers)
    prompt = rng.integers(0, cfg.vocab_size, size=args.prompt).tolist()
    rows = [_safe(lambda: bench_impnb_op_by_op(name, cfg, prompt, args.decode), name, "fp32")]
    _print_row(rows[-1])
    if not args.no_hf:
        rows.append(_safe(lambda: bench_hf(name, cfg_dict, None, prompt, args.hf_decode), name, "bf16"))
        _print_row(rows[-1])
    return rows


def _safe(fn, name, fmt):
    try:
        return fn()
    except Exception as exc:  # a failing engine must not hide the other rows; the error is recorded in the JSON
        import traceback
        traceback.print_exc()
        return dict(model=name, weights=fmt, engine="error", error=f"{type(exc).__name__}: {exc}"[:400],
                    prefill_tok_s=None, decode_tok_s=None, kernels_per_token=None)


def _fmt(v, spec):
    return format(v, spec) if isinstance(v, (int, float)) else "-"


def _print_row(r):
    print(f"{r['model']:14s} {r['weights']:6s} {r['engine']:30s} prefill {_fmt(r['prefill_tok_s'], '10.0f')} tok/s  "
          f"decode {_fmt(r['decode_tok_s'], '8.1f')} tok/s  kernels/token {_fmt(r['kernels_per_token'], '5d')}  "
          f"{_fmt(r.get('achieved_gbps'), '7.0f')} GB/s ({_fmt(r.get('pct_copy_bw'), '4.1f')}% of copy)"
          + (f"  ERROR {r['error']}" if r.get("error") else ""), flush=True)


def _summary(rows):
    print("\n| model | weights | engine | prefill tok/s | decode tok/s | kernels/token | GB/s (% copy) | vs HF eager |")
    print("|---|---|---|---:|---:|---:|---:|---:|")
    for r in rows:
        hf = next((h for h in rows if h["model"] == r["model"] and h["engine"] == "hf-transformers-eager"), None)
        ratio = (r["decode_tok_s"] / hf["decode_tok_s"]) if hf and hf.get("decode_tok_s") and r.get("decode_tok_s") \
            else None
        gb = f"{_fmt(r.get('achieved_gbps'), '.0f')} ({_fmt(r.get('pct_copy_bw'), '.1f')}%)" if r.get(
            "achieved_gbps") else "-"
        print(f"| {r['model']} | {r['weights']} | {r['engine']} | {_fmt(r['prefill_tok_s'], '.0f')} | "
              f"{_fmt(r['decode_tok_s'], '.1f')} | {_fmt(r['kernels_per_token'], 'd')} | {gb} | "
              f"{_fmt(ratio, '.1f')}x |")


if __name__ == "__main__":
    sys.exit(main())
