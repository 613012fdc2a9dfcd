"""``impnb.generate``: prefill a prompt, then decode token by token with a Sampler, streaming text as it comes.

Dimension legend: T = prompt tokens, V = vocabulary size, n = generated tokens.

The model is anything with ``forward(ids, cache, last_only=False) -> float32 [T, V]`` ([1, V] with last_only),
``new_cache(max_tokens)``, ``tokenizer`` (``encode(str) -> ids``, ``decode(ids) -> str``), ``config.vocab_size``
and ``stop_ids`` (EOS, EOT and the chat template's end-of-turn), e.g. what ``impnb.load_model`` returns. Every
call builds a fresh cache: nothing from one generation (or a warm-up) can leak into the next.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Sequence

import numpy as np

from .cuda._runtime import to_host
from .reasoning import split_reasoning
from .sampling import Sampler, SamplingParams


@dataclass
class Timings:
    prefill_tokens: int = 0
    prefill_s: float = 0.0
    decode_tokens: int = 0  # tokens produced by a decode step (every generated token after the first)
    decode_s: float = 0.0

    @property
    def prefill_tps(self) -> float:
        return self.prefill_tokens / self.prefill_s if self.prefill_s > 0 else 0.0

    @property
    def decode_tps(self) -> float:
        return self.decode_tokens / self.decode_s if self.decode_s > 0 else 0.0

    def summary(self) -> str:
        return (f"prefill {self.prefill_tokens} tokens at {self.prefill_tps:.1f} tok/s, "
                f"decode {self.decode_tokens} tokens at {self.decode_tps:.1f} tok/s")


@dataclass
class GenerationResult:
    """``ids``: the generated ids (prompt excluded; a final stop token is included, as in HF). ``text``: their
    text without the stop token / stop string. ``stop_reason``: "eos" (a stop token), "stop" (a stop string) or
    "length". ``logits``: float32 [n, V] of each step (only with ``return_logits=True``)."""
    ids: list[int]
    text: str
    prompt_ids: list[int]
    stop_reason: str
    seed: int
    timings: Timings = field(default_factory=Timings)
    logits: np.ndarray | None = None

    @property
    def reasoning(self) -> str:
        """The reasoning channel(s) of a channel-trained model's reply ("" if none; impnb.reasoning)."""
        return split_reasoning(self.text)[0]

    @property
    def content(self) -> str:
        """The user-facing answer: ``text`` without reasoning channels and channel markers."""
        return split_reasoning(self.text)[1]

    def to_json(self) -> dict:
        t = self.timings
        return {"prompt_ids": self.prompt_ids, "ids": self.ids, "text": self.text, "content": self.content,
                "reasoning": self.reasoning, "stop_reason": self.stop_reason, "seed": self.seed,
                "timings": {**asdict(t), "prefill_tps": t.prefill_tps, "decode_tps": t.decode_tps}}


def generate(model, prompt: str | Sequence[int], *, max_new_tokens: int, temperature: float = 0.0,
             ignore_eos: bool = False, top_k: int = 0, top_p: float = 1.0, min_p: float = 0.0,
             repetition_penalty: float = 1.0, seed: int | None = None, stop: Sequence[str | int] | None = None,
             banned_tokens: Sequence[int] | None = None, stream: Callable[[str], None] | None = None,
             return_logits: bool = False, sampler_backend: str | None = None) -> GenerationResult:
    """Generate up to ``max_new_tokens`` after ``prompt``: a string (encoded as is), a list of token ids, or a list
    of chat messages ({"role", "content"} dicts, rendered with the model's chat template).

    temperature 0 is greedy. ``stop``: extra stop strings (the text is cut before them) and/or stop token ids.
    ``ignore_eos`` keeps going through the model's own stop tokens (EOS / EOT / end-of-turn). ``banned_tokens``
    are never generated, greedy included. ``stream(piece)`` receives the text as it is decided.
    ``sampler_backend``: backend of the sampling ops (None: impnb.ops' default per op).
    """
    if not (isinstance(max_new_tokens, (int, np.integer)) and max_new_tokens >= 0):
        raise ValueError(f"max_new_tokens must be an integer >= 0, got {max_new_tokens!r}")
    for name, value in (("temperature", temperature), ("top_p", top_p), ("min_p", min_p),
                        ("repetition_penalty", repetition_penalty)):
        if not (isinstance(value, (int, float, np.integer, np.floating)) and math.isfinite(value)):
            raise ValueError(f"{name} must be a finite number, got {value!r}")
    params = SamplingParams(temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p,
                            repetition_penalty=repetition_penalty, seed=seed, banned_tokens=tuple(banned_tokens or ()))
    prompt_ids = _checked_prompt_ids(model, prompt)
    stop_ids, stop_strings = _stops(model, stop, ignore_eos)
    sampler = Sampler(params, model.config.vocab_size, backend=sampler_backend, history=prompt_ids)
    run = _Run(model, sampler, stop_ids, stop_strings, stream, return_logits)
    chat = isinstance(prompt, (list, tuple)) and bool(prompt) and isinstance(prompt[0], dict)
    run.prefill_and_decode(prompt_ids, _fit_context(model, len(prompt_ids), max_new_tokens, chat))
    return run.result(prompt_ids)


def check_text(text: str, what: str = "the prompt") -> str:
    """Text must be valid Unicode: a lone surrogate is what non-UTF-8 bytes on a command line become."""
    if not isinstance(text, str):
        raise ValueError(f"{what} must be a string, got {type(text).__name__}")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        bad = text[exc.start]
        byte = f" (the byte {ord(bad) - 0xDC00:#04x} is not UTF-8)" if 0xDC80 <= ord(bad) <= 0xDCFF else ""
        raise ValueError(f"{what} is not valid UTF-8 text: {bad!r} at position {exc.start}{byte}") from None
    return text


def prompt_ids(model, prompt) -> list[int]:
    """Token ids of a prompt: a string (encoded with the model's tokenizer), chat messages (rendered with its chat
    template), or token ids."""
    if isinstance(prompt, str):
        if getattr(model, "tokenizer", None) is None:
            raise ValueError("this model has no tokenizer (no tokenizer.json / GGUF vocabulary): give the prompt as "
                             "token ids")
        return _in_vocabulary(model, list(model.tokenizer.encode(check_text(prompt))), "the prompt")
    if isinstance(prompt, (list, tuple)) and prompt and isinstance(prompt[0], dict):  # chat messages
        for m in prompt:
            if isinstance(m, dict) and isinstance(m.get("content"), str):
                check_text(m["content"], "a message")
        return _in_vocabulary(model, list(model.chat_prompt(list(prompt))), "the chat conversation")
    try:
        return [_token_id(t) for t in prompt]
    except TypeError:
        raise ValueError(f"a prompt is a string, chat messages or token ids, got {type(prompt).__name__}") from None


def _in_vocabulary(model, ids: list[int], what: str) -> list[int]:
    """Encoded text must stay inside the model's embedding (a tokenizer may hold more tokens than the model)."""
    vocab = model.config.vocab_size
    bad = sorted({t for t in ids if not 0 <= t < vocab})
    if bad:
        raise ValueError(f"{what} encodes to token id(s) {bad[:8]} outside the model's vocabulary [0, {vocab}) "
                         f"(its tokenizer holds {getattr(model.tokenizer, 'vocab_size', 'more')} tokens)")
    return ids


def _token_id(t) -> int:
    if isinstance(t, (bool, np.bool_)) or not isinstance(t, (int, np.integer)):
        raise ValueError(f"token ids must be integers, got {t!r}")
    return int(t)


def _checked_prompt_ids(model, prompt) -> list[int]:
    ids = prompt_ids(model, prompt)
    if not ids:
        raise ValueError("the prompt is empty (no tokens); give at least one token")
    vocab = model.config.vocab_size
    bad = [t for t in ids if not 0 <= t < vocab]
    if bad:
        raise ValueError(f"prompt token id(s) {bad[:8]} outside the vocabulary [0, {vocab})")
    return ids


def _fit_context(model, n_prompt: int, max_new_tokens: int, chat: bool = False) -> int:
    """New tokens that fit the model's context after the prompt (generation then ends with "length"). A prompt
    that fills the context is ContextOverflow; a chat conversation whose rendering does, the chat template's
    TemplateBudgetError (a template can render far more than the messages hold)."""
    context = getattr(model.config, "max_position_embeddings", None)
    if context is None:
        return max_new_tokens
    if n_prompt >= context:
        message = (f"the prompt has {n_prompt} tokens; the model's context holds {context} positions "
                   f"(at least one must be left to generate)")
        if chat:
            from .errors import TemplateBudgetError
            raise TemplateBudgetError(f"the chat template rendered the conversation as {n_prompt} tokens; the "
                                      f"model's context holds {context} positions")
        from .kvcache import ContextOverflow
        raise ContextOverflow(message)
    return min(max_new_tokens, context - n_prompt)


def _stops(model, stop, ignore_eos: bool) -> tuple[set[int], list[str]]:
    ids = set() if ignore_eos else {int(t) for t in getattr(model, "stop_ids", ())}
    strings = []
    for s in stop or ():
        if isinstance(s, str):
            if not s:
                raise ValueError("an empty stop string would stop at once")
            if getattr(model, "tokenizer", None) is None:
                raise ValueError("stop strings need a tokenizer; this model has none (give stop token ids)")
            strings.append(check_text(s, "a stop string"))
        else:
            ids.add(_token_id(s))
    return ids, strings


class _Run:
    """One generation's state: the cache, the ids, the streamed text and the clocks."""

    def __init__(self, model, sampler, stop_ids, stop_strings, stream, keep_logits):
        self.model, self.sampler = model, sampler
        self.stop_ids, self.stop_strings, self.stream = stop_ids, stop_strings, stream
        self.keep_logits = keep_logits
        self.ids: list[int] = []
        self.step_logits: list[np.ndarray] = []
        self.emitted = 0          # characters of the text already streamed
        self.text = ""
        self.stop_reason = "length"
        self.timings = Timings()

    def prefill_and_decode(self, prompt_ids: list[int], max_new_tokens: int) -> None:
        if max_new_tokens == 0:
            return
        cache = self.model.new_cache(len(prompt_ids) + max_new_tokens)
        t0 = time.perf_counter()
        logits = self.model.forward(np.asarray(prompt_ids, dtype=np.int64), cache, last_only=True)[-1]  # [V]
        self.timings.prefill_tokens, self.timings.prefill_s = len(prompt_ids), time.perf_counter() - t0
        t1 = time.perf_counter()
        while not self.take(logits) and len(self.ids) < max_new_tokens:
            logits = self.model.forward(np.asarray(self.ids[-1:], dtype=np.int64), cache, last_only=True)[-1]
        self.timings.decode_tokens, self.timings.decode_s = len(self.ids) - 1, time.perf_counter() - t1
        self.flush()

    def take(self, logits) -> bool:
        """Choose the next token from ``logits`` [V]; True when generation must stop."""
        logits = np.asarray(to_host(logits), dtype=np.float32)  # [V]; a CuPy row from an op-by-op CUDA model
        if self.keep_logits:
            self.step_logits.append(logits.copy())
        token = self.sampler.next_token(logits)
        self.ids.append(token)
        if token in self.stop_ids:
            self.stop_reason = "eos"
            return True
        if self.model.tokenizer is None:   # a checkpoint without a tokenizer: ids only
            return False
        self.text = self.model.tokenizer.decode(self.ids)
        cut = _first_stop(self.text, self.stop_strings)
        if cut is not None:
            self.text, self.stop_reason = self.text[:cut], "stop"
            return True
        self.emit(_safe_length(self.text, self.stop_strings))
        return False

    def emit(self, upto: int) -> None:
        if self.stream and upto > self.emitted:
            self.stream(self.text[self.emitted:upto])
        self.emitted = max(self.emitted, upto)

    def flush(self) -> None:
        self.emit(len(self.text))

    def result(self, prompt_ids) -> GenerationResult:
        logits = np.stack(self.step_logits) if self.keep_logits and self.step_logits else None
        return GenerationResult(ids=self.ids, text=self.text, prompt_ids=list(prompt_ids), stop_reason=self.stop_reason,
                                seed=self.sampler.seed, timings=self.timings, logits=logits)


def _first_stop(text: str, stops: list[str]) -> int | None:
    hits = [i for i in (text.find(s) for s in stops) if i >= 0]
    return min(hits) if hits else None


def _safe_length(text: str, stops: list[str]) -> int:
    """How much of ``text`` can be streamed: hold back an unfinished UTF-8 character (decoded as U+FFFD) and any
    tail that could still grow into a stop string."""
    n = len(text)
    while n and text[n - 1] == "\ufffd":
        n -= 1
    hold = max((k for s in stops for k in range(1, min(len(s) - 1, n) + 1) if text[n - k:n] == s[:k]), default=0)
    return n - hold
