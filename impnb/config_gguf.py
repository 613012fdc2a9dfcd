"""ModelConfig keyword arguments from GGUF metadata (llama.cpp key names: ``{arch}.block_count``,
``{arch}.attention.head_count``...).

Conventions this builder assumes of the tensors the GGUF reader hands the model (impnb/loaders/gguf.py):
  * HF names and HF orientation; Llama Q/K rows un-permuted, so RoPE is the neox (half-split) style everywhere;
  * Gemma norm weights as HF holds them: llama.cpp's converter stores 1 + w and the reader subtracts the 1 again
    (impnb/loaders/names.py), so ``norm_offset = 1`` exactly as from config.json;
  * llama3 per-frequency factors arrive as the tensor ``model.rope_freqs.weight`` (the model applies them);
  * llama.cpp facts that are code, not metadata: Gemma-3 uses a 5:1 sliding pattern with local RoPE base 10000
    and scale 1/sqrt(key_length) (27B: 1/sqrt(hidden/heads)); gpt-oss alternates sliding / full from layer 0.
The hybrid linear-attention architectures (qwen3next, qwen35, qwen35moe) are built in impnb/config_hybrid.py.
Every key read here is type- and range-checked first by impnb/config_validate.py (check_gguf); a missing required
key or a per-layer array of the wrong length is a ConfigError naming the file and the key.
"""
from __future__ import annotations

import math

import numpy as np

from .config_types import GGUF_ARCHS, HYBRID_GGUF_ARCHS, LayerConfig, MoEConfig, RopeConfig, unsupported_architecture
from .config_validate import check_gguf
from .errors import ConfigError, Unsupported

__all__ = ["GGUF_ARCHS", "build_from_gguf"]


def build_from_gguf(meta: dict, source: str = "GGUF metadata") -> dict:
    """The ModelConfig keyword arguments of GGUF metadata; ``general.architecture`` selects the builder."""
    if not isinstance(meta, dict):
        raise ConfigError(source, "<metadata>", type(meta).__name__, "must be a mapping of GGUF keys")
    arch = meta.get("general.architecture")
    if arch not in GGUF_ARCHS:
        raise unsupported_architecture(f"gguf:{arch}")
    checked = check_gguf(meta, arch, source)
    if arch in HYBRID_GGUF_ARCHS:
        from .config_hybrid import build_from_gguf as build_hybrid
        return build_hybrid(checked, arch, source)
    return _Reader(checked, arch, source).build()


class _Reader:
    def __init__(self, meta: dict, arch: str, source: str):
        self.meta, self.arch, self.source = meta, arch, source

    def get(self, key: str, default=None, *, required: bool = False):
        full = f"{self.arch}.{key}"
        if self.meta.get(full) is None:
            if required:
                raise ConfigError(self.source, full, None, f"is required for the {self.arch} config")
            return default
        return self.meta[full]

    def per_layer(self, key: str, n: int, default=None, required=False) -> list:
        v = self.get(key, default, required=required)
        if isinstance(v, list):
            if len(v) != n:
                raise ConfigError(self.source, f"{self.arch}.{key}", v,
                                  f"has {len(v)} entries for {n} layers (one per layer)")
            return list(v)
        return [v] * n

    def vocab_size(self) -> int:
        v = self.get("vocab_size")
        if v is None:
            tokens = self.meta.get("tokenizer.ggml.tokens")
            if not tokens:
                raise ConfigError(self.source, "tokenizer.ggml.tokens", None,
                                  f"is required (non-empty) when {self.arch}.vocab_size is absent")
            v = len(tokens)
        return int(v)

    def rope(self, theta_default: float) -> RopeConfig:
        kind = self.get("rope.scaling.type", "none") or "none"
        theta = float(self.get("rope.freq_base", theta_default))
        if kind in ("none", "default"):
            return RopeConfig(theta=theta)
        factor = float(self.get("rope.scaling.factor", 1.0))
        orig = self.get("rope.scaling.original_context_length")
        if kind == "linear":
            return RopeConfig(theta=theta, kind="linear", factor=factor)
        if kind == "yarn":
            return RopeConfig(theta=theta, kind="yarn", factor=factor, original_max_position_embeddings=orig,
                              beta_fast=float(self.get("rope.scaling.yarn_beta_fast", 32.0)),
                              beta_slow=float(self.get("rope.scaling.yarn_beta_slow", 1.0)),
                              truncate=self.arch != "gpt-oss")
        raise Unsupported(f"{self.source}: {self.arch}.rope.scaling.type = {kind[:40]!r} is not supported "
                          f"(none / linear / yarn)")

    def head_dim(self, hidden: int, heads: int) -> int:
        head_dim = int(self.get("attention.key_length", hidden // heads))
        if head_dim < 1:
            raise ConfigError(self.source, f"{self.arch}.attention.head_count", heads,
                              f"must not exceed embedding_length {hidden} when key_length is not given")
        for key in ("attention.value_length", "rope.dimension_count"):
            value = self.get(key)
            if value is not None and value != head_dim:
                raise Unsupported(f"{self.source}: {self.arch}.{key} = {value} differs from the head dim "
                                  f"{head_dim}; impnb runs GGUF models with full-head K, V and RoPE only")
        return head_dim

    def build(self) -> dict:
        n = int(self.get("block_count", required=True))
        hidden = int(self.get("embedding_length", required=True))
        heads = self.per_layer("attention.head_count", n, required=True)
        kv = self.per_layer("attention.head_count_kv", n, default=heads[0])
        ff = self.per_layer("feed_forward_length", n, default=0)
        head_dim = self.head_dim(hidden, heads[0])
        window = self.get("attention.sliding_window") or None
        kinds, rope_of, scale, extra = self._arch_specifics(n, hidden, heads[0], head_dim, window)
        layers = tuple(LayerConfig(index=i, kind=kinds[i], window=int(window) if kinds[i] == "sliding" else None,
                                   head_dim=head_dim, n_heads=int(heads[i]), n_kv_heads=int(kv[i] or heads[i]),
                                   scale=scale, rope=rope_of[kinds[i]], sinks=self.arch == "gpt-oss",
                                   moe=extra.get("moe") is not None, intermediate_size=int(ff[i] or 0))
                       for i in range(n))
        eos = self.meta.get("tokenizer.ggml.eos_token_id")
        return dict(arch=extra.pop("arch"), vocab_size=self.vocab_size(), hidden_size=hidden, n_layers=n,
                    layers=layers, rms_eps=float(self.get("attention.layer_norm_rms_epsilon", 1e-6)),
                    max_position_embeddings=int(self.get("context_length", 4096)),
                    bos_token_id=self.meta.get("tokenizer.ggml.bos_token_id"),
                    eos_token_ids=() if eos is None else (int(eos),), source="gguf", **extra)

    def _moe(self, **kw) -> MoEConfig:
        return MoEConfig(n_experts=int(self.get("expert_count", required=True)),
                         top_k=int(self.get("expert_used_count", required=True)),
                         intermediate_size=int(self.get("expert_feed_forward_length", required=True)), **kw)

    def _arch_specifics(self, n, hidden, heads, head_dim, window):
        full = ["full"] * n
        std_scale = head_dim ** -0.5
        if self.arch in ("llama", "mistral", "qwen2", "qwen3"):
            rope = self.rope(10000.0)
            kinds = ["sliding"] * n if window and self.arch == "mistral" else full
            return kinds, {"full": rope, "sliding": rope}, std_scale, dict(arch=self.arch, qk_norm=self.arch == "qwen3")
        if self.arch == "qwen3moe":
            rope = self.rope(10000.0)
            moe = self._moe(gating="softmax", renormalize=bool(self.get("expert_weights_norm", True)))
            return full, {"full": rope, "sliding": rope}, std_scale, dict(arch="qwen3_moe", qk_norm=True, moe=moe)
        if self.arch == "gemma3":
            kinds = ["sliding" if (i + 1) % 6 else "full" for i in range(n)] if window else full
            ropes = {"full": self.rope(1e6), "sliding": RopeConfig(theta=10000.0)}
            scale = (hidden / heads) ** -0.5 if n == 62 else std_scale  # llama.cpp: the 27B model uses hidden/heads
            return kinds, ropes, scale, dict(
                arch="gemma3_text", activation="gelu_tanh", norm_offset=1.0, qk_norm=True, sandwich_norms=True,
                tie_embeddings=True, embedding_scale=float(np.float32(math.sqrt(hidden))),
                final_softcap=self.get("final_logit_softcapping"))  # Gemma-3 has no attention softcap
        # gpt-oss
        rope = self.rope(150000.0)
        kinds = ["sliding" if i % 2 == 0 else "full" for i in range(n)]
        moe = self._moe(gating="topk_softmax", renormalize=False, activation="swiglu_oai", swiglu_alpha=1.702,
                        swiglu_limit=float(self.get("swiglu_limit", 7.0)), expert_bias=True)
        return kinds, {"full": rope, "sliding": rope}, std_scale, dict(arch="gpt_oss", moe=moe)
