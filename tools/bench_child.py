"""One engine's measurement in a fresh process, for tools/bench_generate.py (so a "cold" figure is really the first
load / the first generation of a process, and one engine's threads, caches and memory never reach another's).

    python tools/bench_child.py impnb|hf SPEC.json RESULT.json

SPEC holds ``file``, ``prompt_ids`` (the exact prompt every engine gets), ``decode_tokens``, ``repeats``, and per
engine: impnb ``backend``, ``warm`` (false: the cold run; true: an untimed run, then ``repeats`` timed ones) and
``kernel_profile``; hf ``device``, ``dtype``, ``compile``. RESULT receives a JSON object: the measured fields, or
``{"reason": "..."}`` (the one-line reason the engine could not run).

impnb: ``impnb.load_model(file, backend=...)`` then ``impnb.generate(model, prompt_ids, max_new_tokens=N,
temperature=0, ignore_eos=True)``, taking the result's own ``timings``: ``prefill_s`` is the forward over the prompt
(logits of its last position copied to the host), ``decode_s`` runs from there to the last token: choosing every
token (greedy argmax, the text decoded for streaming) and the N - 1 single-token forwards between them, so the decode
rate counts ``decode_tokens`` = N - 1 tokens. ``untimed_s`` is what the call took outside both clocks (the cache
set-up and the result), to show that nothing large escapes them.

hf: ``AutoModelForCausalLM.from_pretrained(dir, gguf_file=...)`` (eager attention; float32 on the CPU, bf16 on a
GPU), one untimed generate (the cold figures), then ``repeats`` timed prefills (one forward over the prompt with
``use_cache``, logits of the last position only, as generate computes them) and ``repeats`` generates with
``min_new_tokens = max_new_tokens``, greedy, whose decode is timed from the first generated token to the last by a
streamer (generate hands each token to it as a host copy, so on a GPU every stamp follows a synchronisation): N - 1
decode steps, the prefill excluded. ``compile``: static cache + torch.compile of the decode step through generate's
own ``compile_config`` (its prefill runs eager); the first generates compile and are left out.
"""
from __future__ import annotations

import json
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "tools")]


class CpuWait:
    """The share of a measured window (percent of its wall time) in which some runnable task on the machine waited
    for a CPU (Linux PSI, /proc/pressure/cpu "some" total): other work slowing the engine down. None without PSI."""

    def __init__(self):
        self.waited, self.wall = 0.0, 0.0

    @staticmethod
    def _total() -> float | None:
        try:
            with open("/proc/pressure/cpu") as f:
                line = next(line for line in f if line.startswith("some"))
        except (OSError, StopIteration):
            return None
        return float(line.rsplit("total=", 1)[1]) / 1e6

    def measure(self, fn):
        start, t0 = self._total(), time.perf_counter()
        value = fn()
        end = self._total()
        self.wall += time.perf_counter() - t0
        self.waited = None if start is None or end is None or self.waited is None else self.waited + end - start
        return value

    def pct(self) -> float | None:
        return None if self.waited is None or self.wall <= 0 else 100.0 * self.waited / self.wall


def median(values: list[float]) -> float:
    s = sorted(values)
    n = len(s)
    return s[n // 2] if n % 2 else 0.5 * (s[n // 2 - 1] + s[n // 2])


# ----------------------------------------------------------------------------------------------------------- impnb

def impnb_generate(impnb, model, spec: dict) -> dict:
    """One timed ``impnb.generate``; its own timings, checked to cover the prompt and N - 1 decode steps."""
    n, prompt = spec["decode_tokens"], spec["prompt_ids"]
    t0 = time.perf_counter()
    out = impnb.generate(model, prompt, max_new_tokens=n, temperature=0, ignore_eos=True)
    wall = time.perf_counter() - t0
    t = out.timings
    if (len(out.ids), t.prefill_tokens, t.decode_tokens) != (n, len(prompt), n - 1):
        raise RuntimeError(f"impnb.generate made {len(out.ids)} tokens ({t.prefill_tokens} prefilled, "
                           f"{t.decode_tokens} decoded); expected {n} ({len(prompt)}, {n - 1})")
    return {"prefill_s": t.prefill_s, "decode_s": t.decode_s, "prefill_tok_s": t.prefill_tps,
            "decode_tok_s": t.decode_tps, "decode_timed_tokens": t.decode_tokens, "wall_s": wall,
            "untimed_s": wall - t.prefill_s - t.decode_s, "first_ids": out.ids[:8]}


def run_impnb(spec: dict) -> dict:
    """impnb's cold (first load, first generation) or warm (load, untimed generation, timed ones) figures."""
    wait = CpuWait()
    t0 = time.perf_counter()
    import impnb
    import_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    model = wait.measure(lambda: impnb.load_model(spec["file"], backend=spec["backend"]))
    result = {"import_s": import_s, "load_s": time.perf_counter() - t1,
              "model_class": f"{type(model.model).__module__}.{type(model.model).__name__}"}
    if not spec["warm"]:
        return dict(result, **wait.measure(lambda: impnb_generate(impnb, model, spec)), cpu_wait_pct=wait.pct())
    impnb_generate(impnb, model, spec)  # untimed warm-up
    runs = wait.measure(lambda: [impnb_generate(impnb, model, spec) for _ in range(spec["repeats"])])
    result.update(_median_of(runs), runs=len(runs), first_ids=runs[0]["first_ids"], cpu_wait_pct=wait.pct(),
                  prefill_samples_tok_s=[r["prefill_tok_s"] for r in runs],
                  decode_samples_tok_s=[r["decode_tok_s"] for r in runs])
    if spec.get("kernel_profile"):
        result["graph_node_us_by_kernel"] = _kernel_profile(model, spec["prompt_ids"])
    return result


def _median_of(runs: list[dict]) -> dict:
    keys = ("prefill_s", "decode_s", "wall_s", "untimed_s")
    out = {k: median([r[k] for r in runs]) for k in keys}
    out["decode_timed_tokens"] = runs[0]["decode_timed_tokens"]
    out["prefill_tok_s"] = median([r["prefill_tok_s"] for r in runs])
    out["decode_tok_s"] = median([r["decode_tok_s"] for r in runs])
    return out


def _kernel_profile(model, prompt_ids) -> dict | str:
    """The per-kernel time of one decode step of the loaded model's CUDA engine (tools/bench_random.py)."""
    engine = getattr(getattr(model, "model", None), "engine", None)
    if engine is None:
        return f"no CUDA engine to profile ({type(model.model).__name__})"
    from bench_random import kernel_profile
    engine.reset()
    engine.prefill(list(prompt_ids))
    engine.first_token()
    prof = kernel_profile(engine)
    print("one decode step, graph-node us per kernel name (total %.0f): %s" % (
        sum(prof.values()), ", ".join(f"{k} {v:.1f}" for k, v in prof.items())), file=sys.stderr, flush=True)
    return {k: round(v, 1) for k, v in prof.items()}


# -------------------------------------------------------------------------------------------------------------- hf

class _TokenClock:
    """A generate streamer that stamps each generated token (the first put is the prompt, before the prefill)."""

    def __init__(self):
        self.stamps: list[float] = []

    def put(self, value):
        self.stamps.append(time.perf_counter())

    def end(self):
        pass


def run_hf(spec: dict) -> dict:
    t0 = time.perf_counter()
    import torch
    from transformers import AutoModelForCausalLM
    import_s = time.perf_counter() - t0
    dtype = getattr(torch, spec["dtype"])
    t1 = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(os.path.dirname(os.path.abspath(spec["file"])),
                                                 gguf_file=os.path.basename(spec["file"]), dtype=dtype,
                                                 attn_implementation="eager").to(spec["device"]).eval()
    sync = torch.cuda.synchronize if spec["device"].startswith("cuda") else (lambda: None)
    sync()
    result = {"import_s": import_s, "load_s": time.perf_counter() - t1, "threads": torch.get_num_threads(),
              "torch": torch.__version__, "dtype": spec["dtype"]}
    ids = torch.tensor([spec["prompt_ids"]], device=spec["device"])
    cold_wait, wait = CpuWait(), CpuWait()
    with torch.inference_mode():
        gen = _hf_generate_fn(model, ids, spec)
        cold = cold_wait.measure(gen)
        if spec["compile"]:
            gen()  # the compile runs: static cache + torch.compile needs more than one call to settle
            if not hasattr(model, "_compiled_call"):
                raise RuntimeError("generate did not compile the decode step (no compiled call was made)")
        prefill = wait.measure(lambda: _hf_prefill(model, ids, spec, sync)) if not spec["compile"] else None
        runs = wait.measure(lambda: [gen() for _ in range(spec["repeats"])])
    result["cold"] = dict(cold, cpu_wait_pct=cold_wait.pct())
    result["cpu_wait_pct"] = wait.pct()
    result["decode_tok_s"] = median([r["decode_tok_s"] for r in runs])
    result["decode_samples_tok_s"] = [r["decode_tok_s"] for r in runs]
    result["decode_timed_tokens"] = runs[0]["decode_timed_tokens"]
    result["first_ids"] = runs[0]["first_ids"]
    if prefill is None:  # compiled: generate's own prefill
        result["prefill_samples_tok_s"] = [r["prefill_tok_s"] for r in runs]
    else:
        result["prefill_samples_tok_s"] = prefill
        result["prefill_in_generate_tok_s"] = median([r["prefill_tok_s"] for r in runs])
    result["prefill_tok_s"] = median(result["prefill_samples_tok_s"])
    return result


def _hf_generate_fn(model, ids, spec: dict):
    """A function running one greedy generate of exactly N tokens; its prefill and decode rates from the stamps."""
    import torch
    n = spec["decode_tokens"]
    kw = dict(max_new_tokens=n, min_new_tokens=n, do_sample=False, attention_mask=torch.ones_like(ids),
              pad_token_id=_pad_id(model.generation_config))
    if spec["compile"]:
        from transformers import CompileConfig
        config = CompileConfig(fullgraph=True, mode="reduce-overhead" if spec["device"].startswith("cuda")
                               else "default")
        config._compile_all_devices = True  # generate compiles only on accelerators unless told
        kw.update(cache_implementation="static", compile_config=config)

    def gen() -> dict:
        clock = _TokenClock()
        out = model.generate(ids, streamer=clock, **kw)
        made = out.shape[1] - ids.shape[1]
        if made != n or len(clock.stamps) != n + 1:
            raise RuntimeError(f"HF generate made {made} tokens ({len(clock.stamps) - 1} streamed), expected {n}")
        prompt_at, first_at, last_at = clock.stamps[0], clock.stamps[1], clock.stamps[-1]
        return {"prefill_tok_s": ids.shape[1] / (first_at - prompt_at), "decode_tok_s": (n - 1) / (last_at - first_at),
                "decode_timed_tokens": n - 1, "first_ids": out[0, ids.shape[1]:ids.shape[1] + 8].tolist()}
    return gen


def _pad_id(config) -> int:
    """The generation config's pad id, else its (first) EOS id, else 0 (generate warns without one)."""
    for value in (config.pad_token_id, config.eos_token_id):
        if isinstance(value, (list, tuple)):
            value = value[0] if value else None
        if value is not None:
            return int(value)
    return 0


def _hf_prefill(model, ids, spec: dict, sync) -> list[float]:
    """Tokens/s of ``repeats`` forwards over the prompt with use_cache (a fresh cache each), logits of the last
    position only."""
    rates = []
    for _ in range(spec["repeats"]):
        sync()
        t0 = time.perf_counter()
        model(ids, use_cache=True, logits_to_keep=1)
        sync()
        rates.append(ids.shape[1] / (time.perf_counter() - t0))
    return rates


RUNNERS = {"impnb": run_impnb, "hf": run_hf}


def main(argv: list[str]) -> int:
    engine, spec_path, out_path = argv
    with open(spec_path) as f:
        spec = json.load(f)
    try:
        result = RUNNERS[engine](spec)
    except Exception as exc:  # the parent turns this into a row with the reason; the traceback goes to stderr
        import traceback
        traceback.print_exc()
        result = {"reason": f"{type(exc).__name__}: {exc}".splitlines()[0][:400]}
    with open(out_path, "w") as f:
        json.dump(result, f)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
