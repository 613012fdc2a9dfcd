"""KV cache: full-attention layers keep every position; sliding-window layers keep a ring buffer.

Dimensions: C = a layer's slot capacity, Hkv = its KV heads, D / Dv = its k / v head dims, T = tokens of a chunk.

Every slot records the absolute position it holds (``pos``, -1 = empty). Attention reads the VIEW ``[0, n)`` of
the slots (n = slots filled so far) in slot order, and the mask is built from ``pos`` in that same frame
(``impnb.ops.attention_mask``), so it is right after ring wrap-around, when the newest tokens sit in low slots and
the order is not monotonic (a mask in absolute coordinates read by view index gives -inf rows, then NaN).

Ring capacity = window + chunk (capped at max_tokens): a chunk of T <= chunk tokens at positions p0..p0+T-1 is
written before attention; it evicts only positions <= p0 + T - 1 - C < p0 - window + 1, i.e. keys that no query of
the chunk may see. Full layers have C = max_tokens and write position p to slot p. Prefill longer than ``chunk``
is split into chunks by the model; a prompt past ``max_tokens`` raises ``ContextOverflow``.

Gemma-4 KV-sharing layers (``LayerConfig.kv_source``) hold no slots of their own: their entry in ``layers`` is
their producer's LayerKV. Buffers are preallocated per layer at that layer's own geometry (Gemma-4's dual head_dim: no layer shares a
buffer sized for another; ``ModelConfig.max_head_dim`` / ``max_kv_heads`` size shared workspaces).
"""
from __future__ import annotations

import numpy as np

from .errors import ImpnbError


class ContextOverflow(ImpnbError, ValueError):
    """More tokens than the cache (or the model's context) holds."""


class LayerKV:
    """One layer's slots: k [C, Hkv, D], v [C, Hkv, Dv], pos [C] (int64, -1 empty)."""

    def __init__(self, capacity: int, n_kv_heads: int, head_dim: int, v_dim: int, ring_window: int | None, *,
                 xp=np):
        # ring_window: the sliding window when this is a wrapping ring, else None (the mask's window comes from the
        # layer config either way). xp: the array module the slots live in (NumPy, or CuPy for a model whose ops
        # run on the GPU: k, v and pos then stay on the device)
        self.capacity, self.window = int(capacity), ring_window
        self.ring = ring_window is not None
        self.xp = xp
        self.k = xp.zeros((capacity, n_kv_heads, head_dim), np.float32)
        self.v = xp.zeros((capacity, n_kv_heads, v_dim), np.float32)
        self.pos = xp.full(capacity, -1, np.int64)
        self.filled = 0  # slots [0, filled) have been written at least once

    def slots_for(self, positions: np.ndarray) -> np.ndarray:
        if self.ring:
            return positions % self.capacity
        if positions.size and positions[-1] >= self.capacity:
            raise ContextOverflow(f"position {int(positions[-1])} does not fit a full-attention cache of "
                                  f"{self.capacity} slots")
        return positions

    def write(self, positions: np.ndarray, k: np.ndarray, v: np.ndarray) -> None:
        """Store k [T, Hkv, D], v [T, Hkv, Dv] of absolute ``positions`` [T]."""
        if self.ring and positions.size > self.capacity - self.window + 1:
            raise ValueError(f"a chunk of {positions.size} tokens does not fit a ring of {self.capacity} slots "
                             f"with window {self.window} (at most {self.capacity - self.window + 1})")
        positions = np.asarray(positions)
        slots = self.slots_for(positions)
        index = self.xp.asarray(slots)
        self.k[index] = k
        self.v[index] = v
        self.pos[index] = self.xp.asarray(positions)
        self.filled = max(self.filled, int(slots.max()) + 1) if slots.size else self.filled

    def truncate(self, position: int) -> None:
        """Forget every slot at or after ``position`` (a full-attention layer: slot p holds position p)."""
        if self.ring:
            raise ValueError("a ring buffer cannot be truncated to a position: its slots are reused")
        self.pos[position:] = -1
        self.filled = min(self.filled, position)

    def view(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(k [n, Hkv, D], v [n, Hkv, Dv], pos [n]): the slots attention reads, in slot order (the view frame)."""
        n = self.filled
        return self.k[:n], self.v[:n], self.pos[:n]


class KVCache:
    """All layers' caches for one sequence. ``position`` = tokens already in the cache."""

    def __init__(self, config, max_tokens: int, *, chunk: int = 256, xp=np):
        if max_tokens <= 0:
            raise ValueError(f"max_tokens must be positive, got {max_tokens}")
        if max_tokens > config.max_position_embeddings:
            raise ContextOverflow(f"max_tokens={max_tokens} exceeds the model's context of "
                                  f"{config.max_position_embeddings} positions")
        self.max_tokens = int(max_tokens)
        self.chunk = int(max(1, min(chunk, max_tokens)))
        self.position = 0
        self.xp = xp
        self.layers: list[LayerKV] = []
        for lc in config.layers:  # a KV-sharing layer (Gemma-4) reads its producer's slots: the same object
            self.layers.append(self.layers[lc.kv_source] if lc.kv_source is not None else self._layer(lc))

    def _layer(self, lc) -> LayerKV:
        if lc.kind == "sliding":
            capacity = min(lc.window + self.chunk, self.max_tokens)
            window = lc.window if capacity < self.max_tokens else None  # a ring that never wraps is a plain cache
            return LayerKV(capacity, lc.n_kv_heads, lc.head_dim, lc.head_dim, window, xp=self.xp)
        return LayerKV(self.max_tokens, lc.n_kv_heads, lc.head_dim, lc.head_dim, None, xp=self.xp)

    def reserve(self, n_tokens: int) -> None:
        """Raise ContextOverflow unless ``n_tokens`` more tokens fit."""
        if self.position + n_tokens > self.max_tokens:
            raise ContextOverflow(
                f"{n_tokens} new tokens after {self.position} cached ones exceed the cache of {self.max_tokens} "
                f"tokens; create a larger cache (model.new_cache(max_tokens)) or shorten the prompt")

    def positions(self, n_tokens: int) -> np.ndarray:
        return np.arange(self.position, self.position + n_tokens, dtype=np.int64)

    def advance(self, n_tokens: int) -> None:
        self.position += n_tokens

    @property
    def nbytes(self) -> int:
        unique = {id(layer): layer for layer in self.layers}.values()
        return sum(layer.k.nbytes + layer.v.nbytes + layer.pos.nbytes for layer in unique)
