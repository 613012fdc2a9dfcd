"""The CUDA engine: weights resident on the GPU, chunked prefill through cuBLAS, and a decode step captured ONCE as a
CUDA graph and replayed per token.

Dimension legend: Dm hidden size, V vocabulary, H / HKV / D a layer's query heads / kv heads / head dim,
C a layer's cache slots (full layers: max_context; sliding layers: a ring of window + prefill chunk), M the tokens
of a prefill chunk, I an FFN width, E experts, TK experts per token.

Precision (see README "CUDA engine"): the residual stream, every activation, the KV cache and every accumulation are
float32; weights are NVFP4 or f16 / bf16 / f32 (``weights=``, impnb/cuda/_device_weights.py). With the same weights
the engine differs from the float32 reference only by summation order: ~1e-6 relative per op, which the golden
diff shows growing to ~1e-5..1e-4 in the logits (tolerance table: ``engine_logits``).

Decode step (one token; ``_step``): embed(st[1]) -> per layer [GEMV(RMSNorm(x)) -> q|k|v; QK-norm + RoPE + append
k, v at slot pos % C; split-K attention partials over the slots, masked from each slot's stored absolute position;
o-proj GEMV whose input stage combines the splits (+ residual, or sandwich norm + residual); GEMV(RMSNorm(x)) ->
gate|up; GEMV(act(gate) * up) -> down (+ residual)] -> lm_head GEMV(RMSNorm(x)) (+ final softcap) -> [argmax on
the device]. The position and the token live in device memory (``st``), and argmax_final advances them, so a
replay needs no host update at all. No allocation happens while a graph is captured or replayed: every buffer is
allocated in ``__init__``. Capture executes nothing, and ``reset()`` clears every slot position before a new
sequence, so no warm-up or capture state can leak into a generation.

This module orchestrates only (buffers, capture, replay, scheduling): every kernel it launches is a registered op's
CUDA path (impnb/engine/layers.py lists which), so ``python -m impnb.ops --json`` shows each one and the
cross-check tests compare each with its reference.
"""
from __future__ import annotations

import numpy as np

from ..cuda._runtime import require
from ..cuda.sampling import argmax_groups
from ..errors import Unsupported
from ..kvcache import ContextOverflow
from .launchers import CheckedLaunches, Launchers
from .layers import check_supported
from .prefill import Prefill
from .weights import build_layers


class Engine:
    """A model on the GPU. ``weights``: see impnb.cuda._device_weights.POLICIES. ``max_context``: positions the caches hold."""

    def __init__(self, config, tensors, *, weights: str = "auto", max_context: int | None = None,
                 prefill_chunk: int = 256, max_new_tokens: int = 4096):
        require(gpu_only=True)
        import cupy as cp
        check_supported(config)
        self.config = config
        self.max_context = int(min(max_context or 4096, config.max_position_embeddings or 4096))
        self.chunk = int(min(prefill_chunk, self.max_context))
        self.w = build_layers(config, tensors, weights, self.max_context, self.chunk)
        dm, v = config.hidden_size, config.vocab_size
        lw = self.w.layers
        f32 = cp.float32
        self.st = cp.zeros(4, cp.int32)  # [pos, token, n_generated, spare]
        self.max_new = int(max_new_tokens)
        self.out_ids = cp.zeros(self.max_new, cp.int32)
        self.x = cp.zeros(dm, f32)
        self.tmp = cp.zeros(dm, f32)
        self.qkv = cp.zeros(max(L.qkv.N for L in lw), f32)
        self.q = cp.zeros(max(L.H * L.D for L in lw), f32)
        self.attn = cp.zeros_like(self.q)
        self.gu = cp.zeros(max([L.gu.N for L in lw if L.gu is not None] or [1]), f32)
        self.logits = cp.zeros(v, f32)
        part = max(L.H * L.splits * L.D for L in lw)
        heads_splits = max(L.H * L.splits for L in lw)
        self.part = (cp.zeros(heads_splits, f32), cp.zeros(heads_splits, f32), cp.zeros(part, f32))
        groups = argmax_groups(v)
        self.am_v, self.am_i = cp.zeros(groups, f32), cp.zeros(groups, cp.int32)
        self.ban = None  # uint8 [V] or None: banned ids never win the device argmax
        moe = config.moe
        if moe is not None:
            self.router_logits = cp.zeros(moe.n_experts, f32)
            self.moe_ids = cp.zeros(moe.top_k, cp.int32)
            self.moe_w = cp.zeros(moe.top_k, f32)
            self.moe_gu = cp.zeros(moe.top_k * 2 * moe.intermediate_size, f32)
        self.ops = Launchers()  # CheckedLaunches during check_decode
        self.prefill_runner = Prefill(self)
        self._graphs: dict[bool, object] = {}
        self._stream = cp.cuda.Stream(non_blocking=True)
        self.pos = 0  # host mirror of st[0] after the last call (positions consumed so far)
        self.kernels_per_step: dict[bool, int] = {}
        cp.cuda.Device().synchronize()  # buffers were zeroed on the default stream; the engine runs on its own
        self.reset()

    # ---------------------------------------------------------------- state
    def reset(self) -> None:
        """Start a new sequence: every slot empty, position 0, nothing generated."""
        with self._stream:
            for L in self.w.layers:
                L.slot_pos.fill(-1)
            self.st.fill(0)
            self._stream.synchronize()
        self.pos = 0

    def set_banned(self, ids) -> None:
        import cupy as cp
        if ids is None or len(ids) == 0:
            self.ban = None
            return
        ban = np.zeros(self.config.vocab_size, np.uint8)
        ban[np.asarray(ids, dtype=np.int64)] = 1
        self.ban = cp.asarray(ban)
        self._graphs.pop(True, None)  # the greedy graph bakes the ban pointer in: capture again

    def _reserve(self, n: int) -> None:
        if self.pos + n > self.max_context:
            raise ContextOverflow(f"{self.pos} + {n} tokens do not fit the engine's context of {self.max_context} "
                                  f"(Engine(max_context=...), at most the model's "
                                  f"{self.config.max_position_embeddings})")

    # ---------------------------------------------------------------- prefill
    def prefill(self, ids, *, all_logits: bool = False, taps=None):
        """Run ``ids`` through the model from the current position (chunks of ``self.chunk``). Returns the device
        logits: [V] of the last token, or [T, V] with ``all_logits``."""
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        if ids.size == 0:
            raise ValueError("prefill: no tokens")
        if ids.min() < 0 or ids.max() >= self.config.vocab_size:
            bad = ids[(ids < 0) | (ids >= self.config.vocab_size)][0]
            raise ValueError(f"token id {int(bad)} outside the vocabulary [0, {self.config.vocab_size})")
        self._reserve(ids.size)
        with self._stream:
            out = self.prefill_runner.run(ids, self.pos, all_logits=all_logits, taps=taps)
            self.pos += ids.size
            self.st[0] = self.pos - 1  # argmax_final (greedy) advances it to self.pos
        return out

    # ---------------------------------------------------------------- decode
    def _step(self, greedy: bool) -> int:
        """Launch one decode step on the current stream (eagerly or under capture); returns the kernel count."""
        cfg, w, n, ops = self.config, self.w, 0, self.ops
        ops.set_layer(None)
        n += w.embed_step(ops, self.st[1:2], self.x)
        for L in w.layers:
            n += L.decode(self)
        ops.set_layer(None)
        ops.rms_norm_gemv(w.lm_head, self.x, self.logits, norm=w.final_norm, eps=cfg.rms_eps, offset=cfg.norm_offset,
                          softcap=cfg.final_softcap or 0.0)
        n += 1
        if greedy:
            ops.argmax(self.logits, self.ban, cfg.vocab_size, self.am_v, self.am_i, self.st, self.out_ids,
                       self.max_new)
            n += 2
        return n

    def _graph(self, greedy: bool):
        graph = self._graphs.get(greedy)
        if graph is None:
            s = self._stream
            with s:
                s.begin_capture()
                try:
                    count = self._step(greedy)
                finally:
                    graph = s.end_capture()
            self.kernels_per_step[greedy] = count
            self._graphs[greedy] = graph
        return graph

    def decode_logits(self, token: int, *, use_graph: bool = True):
        """Feed ``token`` at the current position; returns the device logits [V] (sampling happens elsewhere)."""
        self._reserve(1)
        with self._stream:
            self.st[0:2].set(np.asarray([self.pos, token], np.int32))
            if use_graph:
                self._graph(False).launch(self._stream)
            else:
                self._step(False)
            self._stream.synchronize()
        self.pos += 1
        return self.logits

    def check_decode(self, token: int):
        """Feed ``token`` like decode_logits, but launch the step eagerly with every kernel compared with its op's
        reference on host copies of its inputs (CheckedLaunches): the first op outside its tolerance raises
        CrossCheckError naming op and layer. The same launches as the captured graph, in the same order."""
        self._reserve(1)
        with self._stream:
            self.st[0:2].set(np.asarray([self.pos, token], np.int32))
            self.ops = CheckedLaunches()
            try:
                self._step(False)
            finally:
                self.ops = Launchers()
            self._stream.synchronize()
        self.pos += 1
        return self.logits

    def generate_greedy(self, prompt_ids, max_new_tokens: int, *, use_graph: bool = True) -> list[int]:
        """Greedy continuation chosen on the device: prefill, then ``max_new_tokens - 1`` graph replays with no host
        round trip between tokens. Returns the generated ids (stop tokens are not interpreted here)."""
        if not 0 < max_new_tokens <= self.max_new:
            raise ValueError(f"max_new_tokens must be in [1, {self.max_new}], got {max_new_tokens}")
        self.reset()
        if len(prompt_ids) + max_new_tokens - 1 > self.max_context:
            self._reserve(len(prompt_ids) + max_new_tokens - 1)
        self.prefill(prompt_ids)
        self.first_token()
        self.replay_greedy(max_new_tokens - 1, use_graph=use_graph)
        with self._stream:
            ids = self.out_ids[:max_new_tokens].get()
        return [int(t) for t in ids]

    def first_token(self) -> None:
        """Device argmax of the prefill logits: st[1] = token, out_ids[0] = token, st[2] = 1, st[0] = pos."""
        with self._stream:
            self.st[2] = 0
            self.ops.argmax(self.logits, self.ban, self.config.vocab_size, self.am_v, self.am_i, self.st,
                            self.out_ids, self.max_new)

    def replay_greedy(self, n: int, *, use_graph: bool = True) -> None:
        """``n`` decode steps with the device argmax, queued without synchronising (``sync()`` waits)."""
        if n <= 0:
            return
        self._reserve(n)
        with self._stream:
            if use_graph:
                graph = self._graph(True)
                for _ in range(n):
                    graph.launch(self._stream)
            else:
                for _ in range(n):
                    self._step(True)
        self.pos += n

    def sync(self) -> None:
        self._stream.synchronize()

    def memory_bytes(self) -> int:
        return self.w.nbytes


def decode_bytes(engine: Engine) -> int:
    """Weight bytes one decode step reads (for achieved-bandwidth figures): every linear once, MoE experts only
    top-k of E, the embedding one row."""
    return engine.w.step_bytes()


__all__ = ["Engine", "Unsupported", "decode_bytes"]
