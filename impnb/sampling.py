"""Choosing the next token: SamplingParams, and a Sampler that runs the registered sampling ops.

Dimension legend: V = vocabulary size.

Every choice goes through ``impnb.ops`` (``repetition_penalty`` -> ``ban_tokens`` -> ``argmax_token`` for greedy,
or -> ``filter_logits`` -> ``sample_token``), so the reference and the CUDA path make the same choice. Randomness
is a seeded ``numpy.random.Generator`` that draws one uniform u in [0, 1) per sampled token; the draw happens
whether or not the backend is a GPU, so a seed reproduces a run on any backend.

Banned tokens are applied on EVERY path, greedy included, and they are never treated as stop tokens.
"""
from __future__ import annotations

import secrets
from dataclasses import dataclass, field

import numpy as np

from . import ops
from .cuda._runtime import to_host


@dataclass(frozen=True)
class SamplingParams:
    """How to pick tokens. ``temperature == 0`` is greedy (argmax, lowest id on ties); the filters are then moot.

    top_k = 0, top_p = 1.0, min_p = 0.0 and repetition_penalty = 1.0 switch the corresponding step off.
    ``banned_tokens``: ids that can never be generated. ``seed``: None draws a fresh seed (recorded on the result).
    """
    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    seed: int | None = None
    banned_tokens: tuple[int, ...] = field(default_factory=tuple)

    def __post_init__(self):
        problems = []
        if not self.temperature >= 0:
            problems.append(f"temperature must be >= 0 (0 = greedy), got {self.temperature}")
        if not (isinstance(self.top_k, (int, np.integer)) and self.top_k >= 0):
            problems.append(f"top_k must be an integer >= 0 (0 = off), got {self.top_k!r}")
        if not 0.0 < self.top_p <= 1.0:
            problems.append(f"top_p must lie in (0, 1] (1 = off), got {self.top_p}")
        if not 0.0 <= self.min_p <= 1.0:
            problems.append(f"min_p must lie in [0, 1] (0 = off), got {self.min_p}")
        if not self.repetition_penalty > 0:
            problems.append(f"repetition_penalty must be > 0 (1 = off), got {self.repetition_penalty}")
        if problems:
            raise ValueError("; ".join(problems))
        object.__setattr__(self, "banned_tokens", tuple(sorted({int(t) for t in self.banned_tokens})))

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


class Sampler:
    """Stateful token chooser for one generation: holds the RNG and the ids seen so far (for the penalty).

    ``next_token(logits)`` takes float32 logits [V] of the last position and returns an int id.
    """

    def __init__(self, params: SamplingParams, vocab_size: int, *, backend: str | None = None,
                 history=()):
        self.params = params
        self.vocab_size = vocab_size
        self.backend = backend
        self.seed = params.seed if params.seed is not None else secrets.randbits(63)
        self._rng = np.random.default_rng(self.seed)
        self._seen = np.zeros(vocab_size, dtype=bool)  # [V]: ids in the prompt and generated so far
        bad = [t for t in params.banned_tokens if not 0 <= t < vocab_size]
        if bad:
            raise ValueError(f"banned token id(s) {bad} outside the vocabulary [0, {vocab_size})")
        self._banned = np.asarray(params.banned_tokens, dtype=np.int64)  # [N]
        self.observe(history)

    def observe(self, ids) -> None:
        """Record ids (prompt or generated) for the repetition penalty."""
        ids = np.asarray(list(ids) if not isinstance(ids, np.ndarray) else ids, dtype=np.int64).reshape(-1)
        self._seen[ids[(ids >= 0) & (ids < self.vocab_size)]] = True

    def process(self, logits) -> np.ndarray:
        """The logits the choice is made from: penalty, bans and (when sampling) the filters; float32 [V]."""
        p, kw = self.params, {"backend": self.backend}
        x = np.asarray(logits)
        if x.shape != (self.vocab_size,):
            raise ValueError(f"expected logits of shape ({self.vocab_size},), got {x.shape}")
        if p.repetition_penalty != 1.0:
            x = ops.repetition_penalty(x, np.flatnonzero(self._seen), p.repetition_penalty, **kw)
        if self._banned.size:
            x = ops.ban_tokens(x, self._banned, **kw)
        if not p.greedy:
            x = ops.filter_logits(x, temperature=p.temperature, top_k=p.top_k, top_p=p.top_p, min_p=p.min_p, **kw)
        return x

    def next_token(self, logits) -> int:
        x = self.process(logits)
        if self.params.greedy:
            token = ops.argmax_token(x, backend=self.backend)
        else:
            u = self._rng.random()  # drawn on the host on every backend: a seed reproduces the run anywhere
            token = ops.sample_token(x, np.float64(u), backend=self.backend)
        token = int(np.asarray(to_host(token)))  # a CuPy result on the CUDA path
        if token in self.params.banned_tokens:  # cannot happen unless every id is banned; never emit one
            raise ValueError(f"every token is banned or filtered; the sampler would emit banned id {token}")
        self.observe([token])
        return token
