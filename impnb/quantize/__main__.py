"""``python -m impnb.quantize``: see impnb/quantize/__init__.py and the README's "Quantize" section."""
from __future__ import annotations

import argparse
import math
import re
import sys
from pathlib import Path

from ..errors import ImpnbError
from .convert import quantize_checkpoint


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m impnb.quantize",
                                description="Convert a GGUF / HF checkpoint into an NVFP4 checkpoint directory.")
    p.add_argument("--model", required=True, help="GGUF file, HF checkpoint directory, or installed model package")
    p.add_argument("--out", required=True, help="output directory (created; earlier weights, shard index and "
                                                 "hf_quant_config.json in it are removed, other files replaced)")
    p.add_argument("--layout", choices=("compressed-tensors", "modelopt"), default="compressed-tensors")
    p.add_argument("--ignore", nargs="*", default=[], metavar="MODULE",
                   help="Linear modules to keep in high precision: names, fnmatch globs, or re:<regex>")
    p.add_argument("--quantize-lm-head", action="store_true",
                   help="quantize lm_head too (a tied head becomes an untied NVFP4 copy of the embedding)")
    p.add_argument("--w4a4", action="store_true",
                   help="also calibrate and write input global scales (NVFP4 W4A4 preset / ModelOpt NVFP4)")
    p.add_argument("--calibration", metavar="FILE",
                   help="W4A4 calibration prompts, one per line (default: a few built-in prompts)")
    p.add_argument("--dtype", choices=("bfloat16", "float16", "float32"), default="bfloat16",
                   help="dtype of the tensors left unquantized (default bfloat16)")
    p.add_argument("--backend", choices=("reference", "cuda", "check"), default=None,
                   help="where nvfp4_quantize runs (default: CUDA when a GPU is usable); the bytes are identical")
    p.add_argument("--max-shard-gb", type=float, default=5.0,
                   help="shard the weights above this size (GB, default 5, as transformers)")
    p.add_argument("--eval", action="store_true",
                   help="then report perplexity on impnb/data/eval.txt for source and result, and top-1 agreement")
    p.add_argument("--eval-tokens", type=int, default=512, help="tokens of the eval text to score (default 512)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p.parse_args(argv)


MIN_SHARD_GB = 0.001   # 1 MB: smaller shards only multiply files


def check_arguments(args) -> tuple[Path, list | None]:
    """Everything the command line can get wrong, before any model file is read: -> (model path, prompts)."""
    from ..api import resolve_model_path
    if not (math.isfinite(args.max_shard_gb) and args.max_shard_gb >= MIN_SHARD_GB):
        raise ValueError(f"--max-shard-gb must be a number >= {MIN_SHARD_GB}, got {args.max_shard_gb}")
    if args.eval_tokens < 2:
        raise ValueError(f"--eval-tokens must be at least 2, got {args.eval_tokens}")
    for pattern in args.ignore:
        if pattern.startswith("re:"):
            try:
                re.compile(pattern[3:])
            except re.error as exc:
                raise ValueError(f"--ignore {pattern!r} is not a valid regex ({exc})") from None
    source = resolve_model_path(args.model)
    if source.is_file() and source.stat().st_size == 0:
        raise ValueError(f"--model {source} is an empty file")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} exists and is not a directory")
    if out.resolve() == (source if source.is_dir() else source.parent).resolve():
        raise ValueError(f"--out {out} is the source checkpoint's own directory; its weight files would be replaced")
    return source, _calibration_prompts(args.calibration)


def _calibration_prompts(path) -> list | None:
    if not path:
        return None
    try:
        with open(path, encoding="utf-8") as f:
            prompts = [line.rstrip("\n") for line in f if line.strip()]
    except UnicodeDecodeError as exc:
        raise ValueError(f"--calibration {path} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    if not prompts:
        raise ValueError(f"--calibration {path} holds no prompt (one per line)")
    return prompts


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        source, prompts = check_arguments(args)
        report = quantize_checkpoint(str(source), args.out, layout=args.layout, ignore=args.ignore,
                                     quantize_lm_head=args.quantize_lm_head, w4a4=args.w4a4, calibration=prompts,
                                     dtype=args.dtype, progress=not args.quiet, backend=args.backend,
                                     max_shard_bytes=int(args.max_shard_gb * 1e9))
        print(report.summary(), file=sys.stderr)
        if args.eval:
            from ..eval import compare_models
            result = compare_models(args.model, args.out, n_tokens=args.eval_tokens, w4a4=args.w4a4,
                                    progress=not args.quiet)
            print(result.table())
    except (ImpnbError, OSError, ValueError) as exc:
        print(f"error: {' '.join(str(exc).split())[:2000]}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
