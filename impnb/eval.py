"""Quantization quality report: perplexity of a source and a quantized model on a fixed text, and their agreement.

    python -m impnb.eval --model SRC --quantized DIR [--tokens 512] [--ctx 256] [--w4a4]
    (also run by ``python -m impnb.quantize ... --eval``)

The text is ``impnb/data/eval.txt``, shipped with the project: the United States Declaration of Independence (1776)
followed by Lincoln's Gettysburg Address (1863, the Bliss copy), both in the public domain. It is tokenized once
with the SOURCE model's tokenizer, its first ``tokens`` ids (BOS first where the tokenizer adds one) are split into
windows of ``ctx`` + 1 ids, and each window is one fresh forward (no context carried across windows), scoring
``ctx`` next-token predictions. Legend: T = scored tokens, V = vocab.

    perplexity = exp(-mean log p(token_t | tokens_<t))        (natural log, float64 sums)
    top-1 agreement = share of scored positions where both models' argmax next token is the same
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import dataclass, field
from importlib import resources

import numpy as np

from .quantize.progress import Progress

EVAL_TEXT = "eval.txt"
EVAL_SOURCE = ("United States Declaration of Independence (1776) and Lincoln's Gettysburg Address (1863); "
               "public domain")


def eval_text() -> str:
    return resources.files("impnb").joinpath("data", EVAL_TEXT).read_text(encoding="utf-8")


@dataclass
class Scores:
    label: str
    nll: float                 # summed negative log-likelihood (nats)
    count: int                 # scored tokens
    argmax: np.ndarray         # [T] predicted next-token ids

    @property
    def perplexity(self) -> float:
        return math.exp(self.nll / self.count)


@dataclass
class EvalResult:
    scores: list = field(default_factory=list)
    agreement: float = float("nan")
    tokens: int = 0
    ctx: int = 0
    seconds: float = 0.0

    def table(self) -> str:
        rows = ["| model | scored tokens | perplexity |", "| --- | ---: | ---: |"]
        rows += [f"| {s.label} | {s.count} | {s.perplexity:.3f} |" for s in self.scores]
        rows.append(f"\ntop-1 next-token agreement: {100 * self.agreement:.1f}% of {self.scores[0].count} positions "
                    f"(windows of {self.ctx} tokens; {self.seconds:.0f} s)")
        return "\n".join(rows)


def eval_ids(tokenizer, n_tokens: int) -> list[int]:
    ids = list(tokenizer.encode(eval_text()))
    if len(ids) < 2:
        raise ValueError("the eval text tokenized to fewer than 2 ids")
    return ids[:n_tokens]


def score(model, ids: list[int], ctx: int, label: str, bar: Progress | None = None) -> Scores:
    """Next-token NLL and argmax over ``ids`` in windows of ctx + 1 ids (each a fresh forward)."""
    nll, count, argmax = 0.0, 0, []
    for start in range(0, len(ids) - 1, ctx):
        window = np.asarray(ids[start:start + ctx + 1], dtype=np.int64)
        if window.size < 2:
            break
        logits = np.asarray(model.logits(window[:-1]), dtype=np.float64)  # [t, V]
        shifted = logits - logits.max(axis=-1, keepdims=True)
        log_z = np.log(np.exp(shifted).sum(axis=-1))  # [t]
        targets = window[1:]
        nll -= float(np.sum(shifted[np.arange(targets.size), targets] - log_z))
        count += int(targets.size)
        argmax.append(np.argmax(logits, axis=-1))
        if bar is not None:
            bar.step(label)
    return Scores(label, nll, count, np.concatenate(argmax))


def compare_models(source: str, quantized: str, *, n_tokens: int = 512, ctx: int = 256, w4a4: bool = False,
                   progress: bool = True, labels=None) -> EvalResult:
    """Perplexity of ``source`` and ``quantized`` on the eval text, and their top-1 agreement."""
    from .api import load_model
    start = time.perf_counter()
    src = load_model(source)
    ids = eval_ids(src.tokenizer, n_tokens)
    windows = math.ceil((len(ids) - 1) / ctx)
    bar = Progress(2 * windows, "eval", enabled=progress)
    labels = labels or ("source", "quantized (W4A4)" if w4a4 else "quantized")
    a = score(src, ids, ctx, labels[0], bar)
    del src
    quant = load_model(quantized, w4a4=w4a4)
    b = score(quant, ids, ctx, labels[1], bar)
    bar.close()
    agreement = float(np.mean(a.argmax == b.argmax))
    return EvalResult([a, b], agreement, len(ids), ctx, time.perf_counter() - start)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m impnb.eval", description=__doc__.split("\n")[0])
    p.add_argument("--model", required=True, help="source: GGUF file, HF directory or installed model package")
    p.add_argument("--quantized", required=True, help="the quantized checkpoint directory")
    p.add_argument("--tokens", type=int, default=512, help="ids of the eval text to use (default 512)")
    p.add_argument("--ctx", type=int, default=256, help="window length (default 256)")
    p.add_argument("--w4a4", action="store_true", help="run the quantized model with W4A4 activations")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    result = compare_models(args.model, args.quantized, n_tokens=args.tokens, ctx=args.ctx, w4a4=args.w4a4,
                            progress=not args.quiet)
    print(result.table())
    return 0


if __name__ == "__main__":
    sys.exit(main())
