"""The CUDA backend of a whole model: the model API (``new_cache`` / ``forward`` / ``logits``) on the engine, and
``--backend check`` (the reference alongside, golden dumps and the first diverging tap on a mismatch).

Legend: T tokens, V vocabulary.

    build_model(config, tensors, backend="cuda"|"check", weights="auto") -> EngineModel | CheckedModel

EngineModel.forward(ids, cache): a prompt (or any T > 1) is a chunked prefill through GEMMs; one token after a
prefill is one replay of the decode step's CUDA graph. ``generate_greedy`` keeps the token choice on the device.
An architecture the engine cannot run raises Unsupported naming the feature (the reference backend runs it).
"""
from __future__ import annotations

import numpy as np

from ..kvcache import ContextOverflow
from .engine import Engine

CHECK_RULE = "engine_logits"  # impnb.tolerances.TOLERANCES entry for whole-model logits


class EngineCache:
    """A handle on the engine's one device KV cache; a new cache resets it (only the newest handle is valid)."""

    def __init__(self, model: "EngineModel", max_tokens: int):
        self.model, self.max_tokens = model, int(max_tokens)
        model.generation += 1
        self.generation = model.generation
        model.engine.reset()

    @property
    def filled(self) -> int:
        return self.model.engine.pos


class EngineModel:
    """A model resident on the GPU (see impnb/engine/engine.py for the decode graph and the numerics)."""

    backend = "cuda"

    def __init__(self, config, tensors, *, weights: str = "auto", max_context: int | None = None,
                 prefill_chunk: int = 256):
        self.config = config
        self.engine = Engine(config, tensors, weights=weights, max_context=max_context, prefill_chunk=prefill_chunk)
        self.generation = 0

    def new_cache(self, max_tokens: int | None = None, **_ignored) -> EngineCache:
        n = int(max_tokens or self.engine.max_context)
        if n > self.engine.max_context:
            raise ContextOverflow(f"{n} tokens exceed the CUDA engine's context of {self.engine.max_context} "
                                  f"(model max {self.config.max_position_embeddings})")
        return EngineCache(self, n)

    def forward(self, ids, cache: EngineCache, taps=None, *, last_only: bool = False) -> np.ndarray:
        """Run ``ids`` [T] after what ``cache`` holds: float32 logits [T, V] on the host ([1, V] with last_only)."""
        if cache.generation != self.generation:
            raise ValueError("this cache is stale: a newer new_cache() reset the engine's device cache")
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        e = self.engine
        if e.pos + ids.size > cache.max_tokens:
            raise ContextOverflow(f"{e.pos} + {ids.size} tokens exceed the cache of {cache.max_tokens}")
        if ids.size == 1 and e.pos > 0 and taps is None:
            return e.decode_logits(int(ids[0])).get()[None, :]
        logits = e.prefill(ids, all_logits=not last_only, taps=taps)
        return logits.get().reshape(-1, self.config.vocab_size)

    def logits(self, ids) -> np.ndarray:
        ids = np.asarray(ids).reshape(-1)
        return self.forward(ids, self.new_cache(max(1, ids.size)))

    def generate_greedy(self, prompt_ids, max_new_tokens: int, banned=None) -> list[int]:
        self.generation += 1  # any earlier cache handle is stale now
        self.engine.set_banned(banned)
        return self.engine.generate_greedy(list(prompt_ids), max_new_tokens)


class CheckedModel:
    """``--backend check``: every forward runs on the engine AND the reference; logits must agree within the
    tolerance table's ``engine_logits`` rule. A decode token runs the engine's step eagerly, op by op, each kernel
    compared with its op's reference on host copies of its inputs (Engine.check_decode): the first op outside its
    tolerance raises CrossCheckError naming op, layer, worst index and both values with their bits. On a logits
    mismatch both golden dumps of the tokens so far are written (``<prefix>.reference.safetensors`` /
    ``<prefix>.cuda.safetensors``) and the error names the first tap beyond tolerance (impnb.golden's diff).
    Returns the engine's logits."""

    backend = "check"

    def __init__(self, config, tensors, *, weights: str = "auto", max_context: int | None = None,
                 dump_prefix: str = "impnb-check"):
        from ..model import Model
        self.config = config
        self.fast = EngineModel(config, tensors, weights=weights, max_context=max_context)
        self.ref = Model(config, tensors, backend="reference")
        self.dump_prefix = dump_prefix

    def new_cache(self, max_tokens: int | None = None, **kw):
        return (self.fast.new_cache(max_tokens), self.ref.new_cache(max_tokens), [])

    def forward(self, ids, cache, taps=None, *, last_only: bool = False) -> np.ndarray:
        fast_cache, ref_cache, seen = cache
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        engine = self.fast.engine
        if ids.size == 1 and engine.pos > 0 and taps is None and fast_cache.generation == self.fast.generation:
            got = engine.check_decode(int(ids[0])).get()[None, :]  # op by op: raises at the first bad op
        else:
            got = self.fast.forward(ids, fast_cache, taps, last_only=last_only)
        want = self.ref.forward(ids, ref_cache, last_only=last_only)
        seen.extend(int(t) for t in ids)
        try:
            from ..tolerances import assert_close
            assert_close(CHECK_RULE, want, got, args=(want,))
        except AssertionError as exc:
            exc.args = (f"{exc}\n{self.explain(seen)}",)  # CrossCheckError, with the golden diff appended
            raise
        return got

    def logits(self, ids) -> np.ndarray:
        ids = np.asarray(ids).reshape(-1)
        return self.forward(ids, self.new_cache(max(1, ids.size)))

    def explain(self, ids) -> str:
        """Dump both backends' taps over ``ids`` and return the golden diff table (first diverging tap marked)."""
        from .. import golden
        paths = {}
        for label, model in (("reference", self.ref), ("cuda", self.fast)):
            rec = golden.GoldenRecorder()
            model.forward(np.asarray(ids, dtype=np.int64), model.new_cache(len(ids)), taps=rec)
            paths[label] = f"{self.dump_prefix}.{label}.safetensors"
            golden.save(paths[label], rec, token_ids=list(ids), backend=label, model=self.config.arch)
        rows = golden.compare(golden.load(paths["reference"]), golden.load(paths["cuda"]))
        table, first = golden.format_table(rows, 1e-3)
        where = f"first diverging tap: {first.key}" if first else "no tap beyond 1e-3 (divergence in the logits only)"
        return f"golden dumps: {paths['reference']}, {paths['cuda']}; {where}\n{table}"


def build_model(config, tensors, *, backend: str = "cuda", weights: str = "auto", max_context: int | None = None):
    """The CUDA-backed model for ``backend`` ("cuda" or "check"). Check mode keeps float weights in float32 (unless
    ``weights`` says otherwise), so both backends multiply the same numbers."""
    if backend == "check":
        return CheckedModel(config, tensors, weights="fp32" if weights == "auto" else weights,
                            max_context=max_context)
    return EngineModel(config, tensors, weights=weights, max_context=max_context)
