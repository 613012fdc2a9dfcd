"""The recurrent state of linear-attention layers: a cache kind of its own, beside the positional KV cache.

A gated-DeltaNet layer (impnb/model/linear_attention.py) keeps, whatever the sequence length, a fixed-size state:
    conv   [K-1, C]       the last K-1 inputs of its short convolution (C = 2 Hk Dk + Hv Dv channels)
    delta  [Hv, Dk, Dv]   the gated delta rule's state S of every value head
(Qwen3.5 geometry: 3 x 8192 + 32 x 128 x 128 floats = 2.2 MB per layer, independent of the context.)

``HybridCache`` is a KVCache whose ``layers[i]`` is a ``LayerState`` for a "linear" layer and a LayerKV (full
attention, one slot per position) otherwise, so the model's per-layer loop hands each layer its own cache object.

Lifecycle, chat turns included:
  * a fresh cache (``model.new_cache``) starts every state at zero, at position 0; ``impnb.generate`` builds a fresh
    one per call, so nothing of one generation reaches the next;
  * reuse across turns: keep forwarding on the same cache; the recurrent state carries the conversation exactly as
    the KV slots do (forwarding A then B equals forwarding A + B at once, tests/test_hybrid_model.py);
  * ``reset()`` empties the cache in place (states zeroed, KV slots marked empty, position 0) for a new sequence;
  * going back: KV slots can be dropped after any position, a recurrent state cannot be un-applied. ``snapshot()``
    copies the states (and the position) and ``restore(snap)`` returns to them, dropping KV entries written after
    it; e.g. snapshot after a turn's prompt, restore to regenerate the reply. Rewinding to a position without a
    snapshot is refused (``rewind``), never approximated.
Buffers live in the cache's array module ``xp`` (NumPy, or CuPy when the model's ops run on the GPU); states then
hold what the ops return.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .kvcache import KVCache, LayerKV


class LayerState:
    """One linear-attention layer's recurrent state: conv [K-1, C] and delta [Hv, Dk, Dv], float32."""

    def __init__(self, linear, xp=np):
        self.conv_shape = (linear.conv_kernel - 1, linear.conv_channels)
        self.delta_shape = (linear.n_value_heads, linear.key_head_dim, linear.value_head_dim)
        self.xp = xp
        self.reset()

    def reset(self) -> None:
        self.conv = self.xp.zeros(self.conv_shape, np.float32)
        self.delta = self.xp.zeros(self.delta_shape, np.float32)

    def update(self, conv, delta) -> None:
        """Replace both states with the ops' outputs (shapes checked: a wrong one would silently persist)."""
        if tuple(conv.shape) != self.conv_shape or tuple(delta.shape) != self.delta_shape:
            raise ValueError(f"recurrent state update of shapes {tuple(conv.shape)} / {tuple(delta.shape)}; "
                             f"expected {self.conv_shape} / {self.delta_shape}")
        self.conv, self.delta = conv, delta

    def copy(self) -> tuple:
        return self.conv.copy(), self.delta.copy()

    @property
    def nbytes(self) -> int:
        return int(self.conv.nbytes + self.delta.nbytes)


@dataclass(frozen=True)
class CacheSnapshot:
    position: int
    states: tuple  # per layer: (conv, delta) copies for linear layers, None for attention layers


class HybridCache(KVCache):
    """KV slots for attention layers and a LayerState for linear-attention layers (see the module docstring)."""

    def _layer(self, lc):
        if lc.kind == "linear":
            return LayerState(self.linear, self.xp)
        if lc.kind == "sliding":
            raise ValueError(f"layer {lc.index}: sliding-window layers are not part of a hybrid linear-attention "
                             f"model")
        return LayerKV(self.max_tokens, lc.n_kv_heads, lc.head_dim, lc.head_dim, None, xp=self.xp)

    def __init__(self, config, max_tokens: int, *, chunk: int = 256, xp=np):
        self.linear = config.linear_attention
        super().__init__(config, max_tokens, chunk=chunk, xp=xp)

    def reset(self) -> None:
        """Empty the cache in place: position 0, recurrent states zero, every KV slot empty."""
        self.position = 0
        for layer in self.layers:
            if isinstance(layer, LayerState):
                layer.reset()
            else:
                layer.truncate(0)

    def snapshot(self) -> CacheSnapshot:
        """Copies of every recurrent state at the current position (KV slots need none: they are positional)."""
        return CacheSnapshot(self.position, tuple(layer.copy() if isinstance(layer, LayerState) else None
                                                  for layer in self.layers))

    def restore(self, snap: CacheSnapshot) -> None:
        """Return to ``snap``: its recurrent states, its position, KV slots after it dropped."""
        if len(snap.states) != len(self.layers) or snap.position > self.position:
            raise ValueError(f"snapshot at position {snap.position} does not belong to this cache "
                             f"(position {self.position}, {len(self.layers)} layers)")
        for layer, saved in zip(self.layers, snap.states):
            if isinstance(layer, LayerState):
                layer.update(saved[0].copy(), saved[1].copy())
            else:
                layer.truncate(snap.position)
        self.position = snap.position

    def rewind(self, position: int, snap: CacheSnapshot | None = None) -> None:
        """Go back to ``position``: only where a snapshot was taken (a recurrent state cannot be un-applied)."""
        if position == self.position:
            return
        if position == 0:
            self.reset()
            return
        if snap is None or snap.position != position:
            raise ValueError(f"cannot rewind a hybrid cache from {self.position} to {position} without a snapshot "
                             f"taken there: linear-attention states cannot be un-applied (reset, or restore a "
                             f"snapshot)")
        self.restore(snap)

    @property
    def nbytes(self) -> int:
        return sum(layer.nbytes if isinstance(layer, LayerState) else
                   int(layer.k.nbytes + layer.v.nbytes + layer.pos.nbytes) for layer in self.layers)


def make_cache(config, max_tokens: int, *, chunk: int = 256, xp=np) -> KVCache:
    """The cache of ``config``'s model: a HybridCache when it has linear-attention layers, else a KVCache; ``xp``
    is the array module its buffers live in (NumPy, or CuPy for a model whose ops run on the GPU)."""
    if getattr(config, "linear_attention", None) is not None:
        return HybridCache(config, max_tokens, chunk=chunk, xp=xp)
    return KVCache(config, max_tokens, chunk=chunk, xp=xp)
