"""The GPU-only extras of tools/bench_generate.py (``--random-weights PRESETS``): random-weight models with the
exact architectures of SmolLM2-135M, Gemma-3-270M and a Qwen3-30B-A3B-style MoE stack (``--moe-layers`` of its 48
layers) built ON the device (tools/random_models.py), run on impnb's CUDA engine directly (NVFP4 and bf16 weights,
the engine's own greedy loop, not the user path) against HF transformers bf16 (eager, and static cache +
torch.compile for the ``--compile`` presets); ``qwen3.5-9b`` is the hybrid linear-attention stack of
tools/bench_hybrid.py, run op by op. Per row: prefill tokens/s, decode tokens/s (greedy, after the prompt),
kernels launched per decode token (impnb: counted at graph capture; HF: torch.profiler over one step), and for impnb
the weight bytes one decode step reads, the achieved GB/s and its share of the device-to-device copy bandwidth
measured in the same run, plus the per-kernel breakdown of one decode step (``kernel_profile``).

``qwen3.5-9b`` is the Qwen3.5-9B text geometry (transformers' Qwen3_5TextConfig defaults: hidden 4096, 16 query /
4 KV heads x 256 with the output gate, linear layers of 16 key heads x 128 and 32 value heads x 128, conv 4, MLP
12288, vocabulary 248320), ``--hybrid-layers`` of its 32 layers (default 8: 6 gated-DeltaNet + 2 full-attention
layers, two periods of the 3:1 pattern), float32 random weights resident on the GPU. The fused CUDA engine does
not run these layers: impnb's row is the model run op by op on the registry's CUDA ops (Numba kernels for the
linear-attention ops), the HF row is transformers eager in bf16 (its torch fallbacks of the delta rule).
"""
from __future__ import annotations

import gc
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_hybrid import HYBRID_ARCHS, timed  # noqa: E402  (the hybrid linear-attention presets)

# Row names of the earlier result files -> the engine names of bench/results/generate-<device>.json.
ENGINES = {"impnb-cuda-graph": ("impnb", "Engine.replay_greedy (random weights)"),
           "impnb-cuda-op-by-op": ("impnb", "Model op by op (random weights)"),
           "hf-transformers-eager": ("hf-eager", "model forward per token (random weights)"),
           "hf-static-cache-torch.compile": ("hf-compile", "generate, static cache (random weights)")}


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
        prefill.append(timed(lambda: eng.prefill(prompt), sync))
    decode = []
    for _ in range(3):
        eng.reset()
        eng.prefill(prompt)
        eng.first_token()
        decode.append(timed(lambda: eng.replay_greedy(n_decode), sync))
    tps = n_decode / float(np.median(decode))
    step_bytes = decode_bytes(eng)
    eng.reset()
    eng.prefill(prompt)
    eng.first_token()
    prof = kernel_profile(eng)
    print(f"  {name}/{fmt} one step = {1e6 / tps:.0f} us; graph-node us per kernel name, summed over the step "
          f"(total {sum(prof.values()):.0f}): " + ", ".join(f"{k} {v:.0f}" for k, v in prof.items()), flush=True)
    row = dict(model=name, weights=fmt, engine="impnb-cuda-graph",
               prefill_tok_s=len(prompt) / float(np.median(prefill)), decode_tok_s=tps,
               kernels_per_token=eng.kernels_per_step[True], layers=cfg.n_layers,
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
        prefill = [timed(lambda: model(ids, use_cache=True), sync) for _ in range(3)]
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
        t = timed(lambda: [step() for _ in range(n_decode)], sync)
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
    t_pre = timed(lambda: model.generate(ids, max_new_tokens=1, min_new_tokens=1, **kw), sync)
    t_all = timed(lambda: model.generate(ids, max_new_tokens=n_decode, min_new_tokens=n_decode, **kw), sync)
    return dict(model=name, weights="bf16", engine="hf-static-cache-torch.compile", prefill_tok_s=ids.shape[1] / t_pre,
                decode_tok_s=(n_decode - 1) / max(t_all - t_pre, 1e-9), kernels_per_token=None)


def _bench_hybrid(name, args, rng) -> list:
    from bench_hybrid import bench_impnb_op_by_op, hybrid_config
    cfg, cfg_dict = hybrid_config(name, args.hybrid_layers)
    prompt = rng.integers(0, cfg.vocab_size, size=args.prompt_tokens).tolist()
    rows = [_safe(lambda: bench_impnb_op_by_op(name, cfg, prompt, args.decode_tokens), name, "fp32",
                  "impnb-cuda-op-by-op")]
    if not args.no_hf:
        rows.append(_safe(lambda: bench_hf(name, cfg_dict, None, prompt, args.hf_decode), name, "bf16",
                          "hf-transformers-eager"))
    return rows


def _safe(fn, name, fmt, engine):
    try:
        row = fn()
    except Exception as exc:  # a failing engine must not hide the other rows; the error is recorded in the JSON
        import traceback
        traceback.print_exc()
        row = dict(model=name, weights=fmt, engine=engine, error=f"{type(exc).__name__}: {exc}"[:400],
                   prefill_tok_s=None, decode_tok_s=None, kernels_per_token=None)
    _print_row(row)
    return row


def _fmt(v, spec):
    return format(v, spec) if isinstance(v, (int, float)) else "-"


def _print_row(r):
    print(f"{r['model']:14s} {r['weights']:6s} {r['engine']:30s} prefill {_fmt(r['prefill_tok_s'], '10.0f')} tok/s  "
          f"decode {_fmt(r['decode_tok_s'], '8.1f')} tok/s  kernels/token {_fmt(r['kernels_per_token'], '5d')}  "
          f"{_fmt(r.get('achieved_gbps'), '7.0f')} GB/s ({_fmt(r.get('pct_copy_bw'), '4.1f')}% of copy)"
          + (f"  ERROR {r['error']}" if r.get("error") else ""), flush=True)

def run_random(args, copy_gbps: float) -> list[dict]:
    """Every preset of ``args.random_weights`` (comma-separated), as before the user-path benchmark existed."""
    from tools.random_models import ARCHS, config_for
    rows = []
    rng = np.random.default_rng(0)
    for name in args.random_weights.split(","):
        if name in HYBRID_ARCHS:  # tools/bench_hybrid.py
            rows.extend(_bench_hybrid(name, args, rng))
            continue
        moe = name.startswith("qwen3")
        layers = args.moe_layers if moe else None
        cfg = config_for(name, **({"num_hidden_layers": layers} if layers else {}))
        prompt = rng.integers(0, cfg.vocab_size, size=args.prompt_tokens).tolist()
        for fmt in ("nvfp4", "bf16"):
            rows.append(_safe(lambda: bench_impnb(name, fmt, cfg, prompt, args.decode_tokens, copy_gbps), name, fmt,
                              "impnb-cuda-graph"))
        if not args.no_hf:
            n_dec = args.hf_decode
            rows.append(_safe(lambda: bench_hf(name, ARCHS[name], layers, prompt, n_dec), name, "bf16",
                              "hf-transformers-eager"))
            if name in args.compile.split(","):
                rows.append(_safe(lambda: bench_hf(name, ARCHS[name], layers, prompt, args.decode_tokens, True),
                                  name, "bf16", "hf-static-cache-torch.compile"))
    return [_normalise(r, args) for r in rows]


def _normalise(row: dict, args) -> dict:
    """A random-weight row in the result file's row schema (its own extra fields kept)."""
    engine, path = ENGINES[row["engine"]]
    out = dict(row, engine=engine, path=path, random_weights=True, file=None, backend="cuda",
               prompt_tokens=args.prompt_tokens, cold=False, load_s=None,
               decode_tokens=args.hf_decode if engine == "hf-eager" else args.decode_tokens)
    if "error" in row:
        out["reason"] = out.pop("error")
    out.setdefault("reason", None)
    return out


def summary(rows: list[dict]) -> None:
    """The random-weight rows as the Markdown table of earlier result files (decode vs HF eager)."""
    print("\n| model | weights | engine | prefill tok/s | decode tok/s | kernels/token | GB/s (% copy) | vs HF eager |")
    print("|---|---|---|---:|---:|---:|---:|---:|")
    for r in rows:
        hf = next((h for h in rows if h["model"] == r["model"] and h["engine"] == "hf-eager"), None)
        ratio = (r["decode_tok_s"] / hf["decode_tok_s"]) if hf and hf.get("decode_tok_s") and r.get("decode_tok_s") \
            else None
        gb = f"{_fmt(r.get('achieved_gbps'), '.0f')} ({_fmt(r.get('pct_copy_bw'), '.1f')}%)" if r.get(
            "achieved_gbps") else "-"
        print(f"| {r['model']} | {r['weights']} | {r['engine']} | {_fmt(r['prefill_tok_s'], '.0f')} | "
              f"{_fmt(r['decode_tok_s'], '.1f')} | {_fmt(r.get('kernels_per_token'), 'd')} | {gb} | "
              f"{_fmt(ratio, '.1f')}x |")
