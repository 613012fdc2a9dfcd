"""The transformer forward pass, written only in impnb.ops calls, for every architecture impnb.config supports.

Legend: T = tokens, H = hidden, V = vocab.

    model = Model(config, tensors, backend=None)      # tensors: HF names -> arrays / NVFP4Tensor (dequantized once)
    cache = model.new_cache(max_tokens)                # impnb.kvcache.KVCache (ring buffers for sliding layers)
    logits = model.forward(ids, cache, taps=None)      # float32 [T, V]; appends to the cache; chunked prefill
    logits = model.logits(ids)                         # full forward on a fresh cache

``backend`` ("reference" | "cuda" | "check" | a registered name | "check:<name>" | None) is bound once per op
(OpTable): the model code is the same on every path. Check backends run every op on both paths and stop at the
first op whose output leaves its tolerance, raising CrossCheckError with the op, the layer it ran in, the worst
index and both values with their bits. ``taps.tap(name, layer, array)`` is called (per prefill chunk, in graph order) with: ``embedding``;
per layer ``attn_norm``, ``q``, ``k`` (after QK-norm and RoPE), ``v``, ``attn_out``, ``ffn_norm``,
``router_logits`` (MoE layers), ``ffn_out``, ``residual``; then ``final_norm`` and ``logits``. Linear-attention
layers (Qwen3-Next / Qwen3.5, impnb/model/linear_attention.py) tap ``q``, ``k``, ``v`` after their convolution and
add ``delta_out``, ``conv_state`` and ``recurrent_state``.
"""
from __future__ import annotations

import warnings

import numpy as np

from .. import ops as _ops
from ..config import ModelConfig
from ..cuda._runtime import to_host
from ..errors import CrossCheckError, FormatError
from ..kvcache import ContextOverflow, KVCache
from ..recurrent_cache import make_cache
from ..reference.rope import rope_inv_freq
from . import blocks
from .weights import WeightStore, check_layer_count, layer_rope, load_layer, load_ple, unexpected

__all__ = ["Model", "OpTable", "ContextOverflow"]


class OpTable:
    """``ops.<name>`` bound to one backend. Ops that resolve to the reference call it directly (no dispatch cost).
    ``set_layer(i)`` tells the table which decoder layer runs (None: embedding, final norm, LM head), so a check
    backend's CrossCheckError names it."""

    def __init__(self, backend: str | None = None):
        self.backend = backend
        self.layer = None

    def set_layer(self, layer) -> None:
        self.layer = layer

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        backend = self.backend or _ops.default_backend(name)
        if backend == "reference":
            fn = _ops.reference_impl(name)
        else:
            def fn(*args, _name=name, _backend=backend, **kwargs):
                try:
                    return _ops.call(_name, *args, backend=_backend, **kwargs)
                except CrossCheckError as exc:
                    where = "outside the layers" if self.layer is None else f"layer {self.layer}"
                    raise exc.in_context(self.layer, where) from None
        setattr(self, name, fn)
        return fn


class Model:
    def __init__(self, config: ModelConfig, tensors, backend: str | None = None, *, progress=None):
        self.config = config
        self.ops = OpTable(backend)
        store = WeightStore(tensors)
        check_layer_count(store, config)
        h = config.hidden_size
        self.embed = store.get("embed_tokens.weight", (config.vocab_size, h))
        self.final_norm = store.get("norm.weight", (h,))
        lm_head = store.get("lm_head.weight", (config.vocab_size, h), optional=True)
        if lm_head is None and not config.tie_embeddings and config.source == "hf":
            raise FormatError("checkpoint lacks lm_head.weight and config.json says tie_word_embeddings=false")
        self.lm_head = self.embed if lm_head is None else lm_head  # absent head (GGUF: no output.weight): tied
        self.layers = []
        for lc in config.layers:
            self.layers.append(load_layer(store, config, lc))
            if progress is not None:
                progress(lc.index + 1, config.n_layers)
        self.ple = load_ple(store, config)
        freq_factors = store.get("rope_freqs.weight", optional=True)
        self.ropes = [self._rope_table(lc, freq_factors) for lc in config.layers]
        self.xp = _array_module(backend)
        if self.xp is not np:  # the op-by-op CUDA path: weights resident on the device, copied once
            self._to_device()
        self.unused_tensors = store.unused()
        surprising = unexpected(self.unused_tensors)
        if surprising:  # a checkpoint tensor the forward never reads is how a silent misload looks
            warnings.warn(f"{len(surprising)} checkpoint tensors are not used by the {config.arch} forward pass: "
                          f"{', '.join(surprising[:8])}{' ...' if len(surprising) > 8 else ''}", stacklevel=2)

    def _to_device(self) -> None:
        to = self.xp.asarray
        tied = self.lm_head is self.embed
        self.embed, self.final_norm = to(self.embed), to(self.final_norm)
        self.lm_head = self.embed if tied else to(self.lm_head)
        self.layers = [_on_device(w, to) for w in self.layers]
        self.ple = None if self.ple is None else _on_device(self.ple, to)

    def _rope_table(self, lc, freq_factors):
        return rope_inv_freq(layer_rope(lc, freq_factors), lc.head_dim, self.config.max_position_embeddings)

    # ---- public API ----
    def new_cache(self, max_tokens: int | None = None, *, chunk: int = 256) -> KVCache:
        """A KV cache for ``max_tokens`` tokens (default: the model's context), on the device when the model's
        ops run there; with linear-attention layers a HybridCache (impnb/recurrent_cache.py: their recurrent states
        beside the KV slots)."""
        return make_cache(self.config, max_tokens or self.config.max_position_embeddings, chunk=chunk, xp=self.xp)

    def forward(self, ids, cache: KVCache, taps=None, *, last_only: bool = False) -> np.ndarray:
        """Run ``ids`` [T] after what ``cache`` holds; float32 logits [T, V] ([1, V] with last_only)."""
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        if ids.size == 0:
            raise ValueError("forward needs at least one token id")
        cache.reserve(ids.size)
        outputs = []
        for start in range(0, ids.size, cache.chunk):
            chunk = ids[start:start + cache.chunk]
            is_last = start + chunk.size == ids.size
            logits = self._forward_chunk(chunk, cache, taps, last_only=last_only)
            if not last_only or is_last:
                outputs.append(np.asarray(to_host(logits)))
        return outputs[0] if len(outputs) == 1 else np.concatenate(outputs, axis=0)

    def logits(self, ids) -> np.ndarray:
        """Full forward of ``ids`` on a fresh cache: float32 [len(ids), V]."""
        ids = np.asarray(ids).reshape(-1)
        return self.forward(ids, self.new_cache(max(1, ids.size)))

    # ---- the forward pass ----
    def _forward_chunk(self, ids, cache: KVCache, taps, *, last_only: bool) -> np.ndarray:
        ops, cfg = self.ops, self.config
        _set_layer(ops, None)
        positions = cache.positions(ids.size)
        x = ops.embedding(ids, self.embed, scale=cfg.embedding_scale)  # [T, H]
        blocks._tap(taps, "embedding", None, x)
        ple = None if self.ple is None else blocks.per_layer_inputs(ops, ids, x, self.ple, cfg)  # [T, L, P]
        masks = {}
        for lc, w, rope, kv in zip(cfg.layers, self.layers, self.ropes, cache.layers):
            _set_layer(ops, lc.index)
            x = blocks.decoder_layer(ops, x, w, lc, cfg, (kv, positions, rope, masks), taps,
                                     None if ple is None else ple[:, lc.index])
        _set_layer(ops, None)
        cache.advance(ids.size)
        if last_only:
            x = x[-1:]
        x = blocks.norm(ops, x, self.final_norm, cfg)
        blocks._tap(taps, "final_norm", None, x)
        logits = ops.linear(x, self.lm_head)  # [T, V]
        if cfg.final_softcap:
            logits = ops.softcap(logits, cap=cfg.final_softcap)
        blocks._tap(taps, "logits", None, logits)
        return logits


def _set_layer(ops, layer) -> None:
    setter = getattr(ops, "set_layer", None)  # op tables wrapped by impnb.w4a4 pass it through
    if setter is not None:
        setter(layer)


def _array_module(backend):
    """CuPy when the model's ops run on the GPU (backend "cuda" / "check", or the default with a usable GPU and no
    IMPNB_BACKEND), else NumPy: weights and KV cache then live where the ops read them."""
    import os
    from ..cuda import _runtime as runtime
    env = os.environ.get("IMPNB_BACKEND")
    on_gpu = backend in ("cuda", "check") or (backend is None and env in (None, "", "cuda", "check"))
    if on_gpu and runtime.gpu_usable():
        import cupy
        return cupy
    return np


def _on_device(weights: dict, to) -> dict:
    """A layer's weight dict with every array on the device (nested dicts too; scalars and None as they are)."""
    out = {}
    for key, value in weights.items():
        if isinstance(value, dict):
            out[key] = _on_device(value, to)
        elif isinstance(value, np.ndarray):
            out[key] = to(value)
        else:
            out[key] = value
    return out
