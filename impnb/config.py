"""ModelConfig: everything the forward pass needs to know about an architecture, per layer.

Built from an HF ``config.json`` dict (``ModelConfig.from_hf``) or from GGUF metadata (``ModelConfig.from_gguf``).
The facts per architecture come from transformers 5.23 (``models/<arch>/configuration_*.py`` defaults and
``modeling_*.py`` math) and llama.cpp's GGUF conventions; the per-architecture builders live in
``impnb/config_archs.py`` (config.json) and ``impnb/config_gguf.py`` (GGUF metadata), the dataclasses of one layer in
``impnb/config_types.py``. Every field is checked for type and range, and the result for its cross-field rules, by
``impnb/config_validate.py`` before anything is allocated: a violation is an ``impnb.ConfigError`` (a FormatError)
naming the file, the field, the value and the rule.

Per layer (``LayerConfig``): attention kind (sliding / full / linear) and window, head geometry (Gemma-4 has a dual
geometry: sliding layers head_dim 256 with n kv heads, full layers head_dim 512 with fewer kv heads -- caches and
workspaces are sized by ``max_head_dim`` / ``max_kv_heads``), attention scale, RoPE, k_eq_v, sinks, MoE or dense FFN.
Model-wide: norms (RMSNorm with an optional +1 offset, QK-norm, sandwich norms), activation, embedding scale,
tied embeddings, logit softcaps, MoE routing, the gated-DeltaNet geometry of the hybrid architectures
(``LinearAttentionConfig``, built in ``impnb/config_hybrid.py``).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

from . import config_validate
from .config_archs import build_from_hf
from .config_gguf import build_from_gguf
from .config_types import (ACTIVATIONS, GATINGS, ROPE_KINDS, LayerConfig, LinearAttentionConfig, MoEConfig,
                           RopeConfig)
from .errors import ConfigError, FormatError

__all__ = ["ModelConfig", "LayerConfig", "MoEConfig", "RopeConfig", "LinearAttentionConfig", "ACTIVATIONS", "GATINGS",
           "ROPE_KINDS"]


@dataclass(frozen=True)
class ModelConfig:
    arch: str
    vocab_size: int
    hidden_size: int
    n_layers: int
    layers: tuple[LayerConfig, ...]
    rms_eps: float = 1e-6
    norm_offset: float = 0.0          # RMSNorm weight used as (offset + w): Gemma-3 HF stores w, computes (1 + w)
    activation: str = "silu"
    tie_embeddings: bool = False
    embedding_scale: float = 1.0      # Gemma: sqrt(hidden_size), as float32
    final_softcap: float | None = None
    attn_softcap: float | None = None
    qk_norm: bool = False             # RMSNorm over each head's q and k (before RoPE)
    qk_norm_dim: int | None = None    # < head_dim: the norm applies per chunk of this size; the model
                                      # also infers it from the q_norm weight's length (a divisor of head_dim)
    v_norm: bool = False              # Gemma-4: weightless RMSNorm over v
    sandwich_norms: bool = False      # Gemma: post-attention and post-FFN norms on the branch outputs
    layer_scalar: bool = False        # Gemma-4: the layer output is multiplied by a per-layer scalar
    moe: MoEConfig | None = None
    ple_dim: int = 0                  # Gemma-4 per-layer input embeddings (hidden_size_per_layer_input); 0 = none
    linear_attention: LinearAttentionConfig | None = None  # Qwen3-Next / Qwen3.5: the geometry of the "linear"
                                      # layers (their head fields repeat the attention's)
    max_position_embeddings: int = 4096
    bos_token_id: int | None = None
    eos_token_ids: tuple = ()
    source: str = "hf"                # "hf" | "gguf": where the weights' conventions come from
    extras: dict = field(default_factory=dict, compare=False)

    def __post_init__(self):
        if self.activation not in ACTIVATIONS:
            raise FormatError(f"activation {self.activation!r}; supported: {ACTIVATIONS}")
        if len(self.layers) != self.n_layers or not self.layers:
            raise FormatError(f"{len(self.layers)} layer configs for n_layers={self.n_layers}")

    # ---- sizes for caches and workspaces: always the max over layers (Gemma-4 dual geometry) ----
    @property
    def max_head_dim(self) -> int:
        return max(layer.head_dim for layer in self.layers)

    @property
    def max_kv_heads(self) -> int:
        return max(layer.n_kv_heads for layer in self.layers)

    @property
    def max_q_width(self) -> int:
        return max(layer.n_heads * layer.head_dim for layer in self.layers)

    @property
    def sliding_layers(self) -> tuple[int, ...]:
        return tuple(layer.index for layer in self.layers if layer.kind == "sliding")

    def with_layers(self, **changes) -> "ModelConfig":
        """A copy with every LayerConfig updated by ``changes`` (tests: e.g. a smaller window)."""
        return replace(self, layers=tuple(replace(layer, **changes) for layer in self.layers))

    # ---- construction ----
    @classmethod
    def from_hf(cls, config: dict, source: str = "config.json") -> "ModelConfig":
        """From an HF config.json dict (multimodal wrappers: the ``text_config`` is used). ``source`` names the
        file in error messages."""
        return _built(cls, build_from_hf, config, str(source))

    @classmethod
    def from_gguf(cls, metadata: dict, source: str = "GGUF metadata") -> "ModelConfig":
        """From GGUF metadata ({key: value}); ``general.architecture`` selects the builder."""
        return _built(cls, build_from_gguf, metadata, str(source))

    def summary(self) -> str:
        kinds = "".join({"sliding": "S", "linear": "L"}.get(layer.kind, "F") for layer in self.layers)
        moe = f", MoE {self.moe.n_experts}x top-{self.moe.top_k}" if self.moe else ""
        return (f"{self.arch}: {self.n_layers} layers [{kinds}], hidden {self.hidden_size}, vocab {self.vocab_size}, "
                f"head_dim<= {self.max_head_dim}, kv heads<= {self.max_kv_heads}{moe}")


def _built(cls, builder, raw, source: str) -> ModelConfig:
    """Build, then check the cross-field rules; a dataclass invariant that fails is reported with the file."""
    try:
        return config_validate.check_model(cls(**builder(raw, source)), source)
    except ConfigError:
        raise
    except FormatError as exc:
        raise FormatError(f"{source}: {exc}") from None
