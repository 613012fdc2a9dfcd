"""Batch-1 generation benchmark on the GPU: impnb's CUDA engine (NVFP4 and bf16 weights) against HF transformers
bf16 (eager, and static cache + torch.compile where it runs), in the same run.

Models: the exact architectures of SmolLM2-135M, Gemma-3-270M and a Qwen3-30B-A3B-style MoE stack (``--moe-layers``
of its 48 layers), random weights built ON the device (impnb.cuda._random_models; real files cannot travel).
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
    from impnb.cuda import _engine_kernels as K
    recorded, original = [], K.launch
    K.launch = lambda *a, **kw: recorded.append((a, kw))
    try:
        with eng._stream:
            eng._step(True)
    finally:
        K.launch = original
    out = {}
    s = eng._stream
    for args, kw in recorded:
        name = args[0]
        if name == "argmax_final":  # advances the position: not repeatable
            continue
        with s:
            s.begin_capture()
            for _ in range(repeats):
                original(*args, **kw)
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
    from impnb.cuda._engine import Engine, decode_bytes
    from impnb.cuda._random_models import device_tensors
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


# Qwen3.5-9B text model (config.json of Qwen/Qwen3.5-9B = transformers' Qwen3_5TextConfig defaults)
HYBRID_ARCHS = {
    "qwen3.5-9b": dict(model_type="qwen3_5_text", vocab_size=248320, hidden_size=4096, intermediate_size=12288,
                       num_hidden_layers=32, num_attention_heads=16, num_key_value_heads=4, head_dim=256,
                       linear_num_key_heads=16, linear_num_value_heads=32, linear_key_head_dim=128,
                       linear_value_head_dim=128, linear_conv_kernel_dim=4, rms_norm_eps=1e-6,
                       max_position_embeddings=262144, tie_word_embeddings=False, hidden_act="silu",
                       rope_parameters={"rope_type": "default", "rope_theta": 1e7, "partial_rotary_factor": 0.25,
                                        "mrope_interleaved": True, "mrope_section": [11, 11, 10]}),
}


def hybrid_config(name: str, n_layers: int):
    """ModelConfig of a HYBRID_ARCHS entry cut to ``n_layers`` (its 3:1 linear / full pattern kept)."""
    from impnb.config import ModelConfig
    d = dict(HYBRID_ARCHS[name], num_hidden_layers=n_layers)
    d["layer_types"] = ["linear_attention" if (i + 1) % 4 else "full_attention" for i in range(n_layers)]
    return ModelConfig.from_hf(d), d


def hybrid_host_tensors(cfg, seed: int = 0) -> dict:
    """Random float32 weights of a dense (non-MoE) hybrid model under HF names: N(0, 0.02) matrices, norms near their
    init, A_log = log U(1, 16), dt_bias ~ 1 (the layer's own init ranges)."""
    rng = np.random.default_rng(seed)
    lin, h, f32 = cfg.linear_attention, cfg.hidden_size, np.float32

    def mat(n, k):
        return (rng.standard_normal((n, k), dtype=f32) * f32(0.02))

    def near(n, centre):
        return (centre + 0.05 * rng.standard_normal(n)).astype(f32)

    t = {"model.embed_tokens.weight": mat(cfg.vocab_size, h), "model.norm.weight": near(h, 0.0),
         "lm_head.weight": mat(cfg.vocab_size, h)}
    for lc in cfg.layers:
        p = f"model.layers.{lc.index}."
        t.update({p + "input_layernorm.weight": near(h, 0.0), p + "post_attention_layernorm.weight": near(h, 0.0),
                  p + "mlp.gate_proj.weight": mat(lc.intermediate_size, h),
                  p + "mlp.up_proj.weight": mat(lc.intermediate_size, h),
                  p + "mlp.down_proj.weight": mat(h, lc.intermediate_size)})
        if lc.kind == "linear":
            a = p + "linear_attn."
            t.update({a + "in_proj_qkv.weight": mat(lin.conv_channels, h), a + "in_proj_z.weight": mat(lin.value_dim, h),
                      a + "in_proj_b.weight": mat(lin.n_value_heads, h),
                      a + "in_proj_a.weight": mat(lin.n_value_heads, h),
                      a + "conv1d.weight": (0.3 * rng.standard_normal((lin.conv_channels, 1, lin.conv_kernel))).astype(f32),
                      a + "A_log": np.log(rng.uniform(1, 16, lin.n_value_heads)).astype(f32),
                      a + "dt_bias": near(lin.n_value_heads, 1.0), a + "norm.weight": near(lin.value_head_dim, 1.0),
                      a + "out_proj.weight": mat(h, lin.value_dim)})
        else:
            s, d = p + "self_attn.", lc.head_dim
            t.update({s + "q_proj.weight": mat(2 * lc.n_heads * d, h), s + "k_proj.weight": mat(lc.n_kv_heads * d, h),
                      s + "v_proj.weight": mat(lc.n_kv_heads * d, h), s + "o_proj.weight": mat(h, lc.n_heads * d),
                      s + "q_norm.weight": near(d, 0.0), s + "k_norm.weight": near(d, 0.0)})
    return t


def _to_device(obj):
    """NumPy arrays inside the model's weight dicts -> CuPy (the op-by-op CUDA model then reads no host weights)."""
    import cupy as cp
    if isinstance(obj, dict):
        return {k: _to_device(v) for k, v in obj.items()}
    return cp.asarray(obj) if isinstance(obj, np.ndarray) else obj


def bench_impnb_op_by_op(name, cfg, prompt, n_decode):
    """The hybrid model op by op on the CUDA ops (backend "cuda"), weights on the device, greedy decode."""
    import cupy as cp
    from impnb.model import Model
    model = Model(cfg, hybrid_host_tensors(cfg), backend="cuda")
    model.layers = [_to_device(w) for w in model.layers]
    model.embed, model.final_norm = cp.asarray(model.embed), cp.asarray(model.final_norm)
    model.lm_head = cp.asarray(model.lm_head)
    sync = cp.cuda.get_current_stream().synchronize

    def run(n_new):
        cache = model.new_cache(len(prompt) + n_new + 8)
        logits = model.forward(prompt, cache, last_only=True)
        for _ in range(n_new):
            logits = model.forward([int(logits[-1].argmax())], cache, last_only=True)

    run(4)  # compile the Numba kernels, warm cuBLAS
    prefill = [_timed(lambda: run(0), sync) for _ in range(3)]
    total = [_timed(lambda: run(n_decode), sync) for _ in range(2)]
    t_pre = float(np.median(prefill))
    decode_s = max(float(np.min(total)) - t_pre, 1e-9)
    row = dict(model=name, weights="fp32", engine="impnb-cuda-op-by-op", prefill_tok_s=len(prompt) / t_pre,
               decode_tok_s=n_decode / decode_s, kernels_per_token=None, layers=cfg.n_layers,
               weights_gb=sum(int(np.prod(v.shape)) * 4 for w in model.layers for v in _arrays(w)) / 1e9)
    del model
    gc.collect()
    cp.get_default_memory_pool().free_all_blocks()
    return row


def _arrays(w):
    for v in w.values():
        if isinstance(v, dict):
            yield from _arrays(v)
        elif hasattr(v, "shape") and getattr(v, "ndim", 0):
            yield v


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
    from impnb.cuda._random_models import ARCHS, config_for
    props = cp.cuda.runtime.getDeviceProperties(cp.cuda.Device().id)
    device = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
    copy_gbps = copy_bandwidth_gbps()
    print(f"device {device}; device-to-device copy {copy_gbps:.0f} GB/s (read + write)", flush=True)
    rows = []
    rng = np.random.default_rng(0)
    for name in args.models.split(","):
        if name in HYBRID_ARCHS:
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
