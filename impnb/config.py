"""ModelConfig: everything the forward pass needs to know about an architecture, per layer.

Built from an HF ``config.json`` dict (``ModelConfig.from_hf``) or from GGUF metadata (``ModelConfig.from_gguf``).
The facts per architecture come from transformers 5.23 (``models/<arch>/configuration_*.py`` defaults and
``modeling_*.py`` math) and llama.cpp's GGUF conventions; the per-architecture builders live in
``impnb/config_archs.py``.

Per layer (``LayerConfig``): attention kind (sliding / full) and window, head geometry (Gemma-4 has a dual geometry:
sliding layers head_dim 256 with n kv heads, full layers head_dim 512 with fewer kv heads -- caches and workspaces are
sized by ``max_head_dim`` / ``max_kv_heads``, seed 000), attention scale, RoPE, k_eq_v, sinks, MoE or dense FFN.
Model-wide: norms (RMSNorm with an optional +1 offset, QK-norm, sandwich norms), activation, embedding scale,
tied embeddings, logit softcaps, MoE routing.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

ACTIVATIONS = ("silu", "gelu_tanh")
ROPE_KINDS = ("default", "linear", "llama3", "yarn", "proportional")
GATINGS = ("softmax", "topk_softmax", "sigmoid")


@dataclass(frozen=True)
class RopeConfig:
    """Rotary embedding of one layer type. ``kind`` selects the inv_freq formula (impnb/reference/rope.py)."""
    theta: float = 10000.0
    kind: str = "default"             # default | linear | llama3 | yarn | proportional
    factor: float = 1.0
    partial_rotary_factor: float = 1.0
    style: str = "neox"               # neox: pairs (i, i + d/2); interleaved: pairs (2i, 2i + 1)
    low_freq_factor: float = 1.0      # llama3
    high_freq_factor: float = 4.0     # llama3
    original_max_position_embeddings: int | None = None  # llama3, yarn
    beta_fast: float = 32.0           # yarn
    beta_slow: float = 1.0            # yarn
    truncate: bool = True             # yarn
    attention_factor: float | None = None  # yarn (None: derived from factor / mscale)
    mscale: float | None = None       # yarn
    mscale_all_dim: float | None = None  # yarn
    freq_factors: tuple | None = None  # llama.cpp rope_freqs: inv_freq[i] /= freq_factors[i]

    def __post_init__(self):
        if self.kind not in ROPE_KINDS:
            raise ValueError(f"unsupported RoPE type {self.kind!r}; supported: {ROPE_KINDS}")
        if self.style not in ("neox", "interleaved"):
            raise ValueError(f"RoPE style {self.style!r}; expected 'neox' or 'interleaved'")


@dataclass(frozen=True)
class MoEConfig:
    """Mixture of experts. Routing: ``gating`` then top-k (lower expert index wins ties), then renormalization."""
    n_experts: int
    top_k: int
    intermediate_size: int
    gating: str = "softmax"           # softmax over all -> top-k | top-k of logits -> softmax | sigmoid -> top-k
    renormalize: bool = True
    n_shared_experts: int = 0         # ungated shared expert(s) added to the routed sum (mlp.shared_expert.*)
    shared_intermediate_size: int = 0
    router_input_norm: bool = False   # Gemma-4: rmsnorm(x) * router.scale * hidden**-0.5 before the router proj
    per_expert_scale: bool = False    # Gemma-4: weights *= router.per_expert_scale[ids]
    routed_scaling_factor: float = 1.0  # DeepSeek-style: weights *= factor after renormalization
    parallel_dense_mlp: bool = False  # Gemma-4: dense MLP and experts side by side, each with its own norms
    activation: str = "silu"          # silu (SwiGLU), gelu_tanh (GeGLU), swiglu_oai (gpt-oss clamped SwiGLU)
    swiglu_alpha: float = 1.702
    swiglu_limit: float | None = None
    expert_bias: bool = False         # gpt-oss: biases on the expert projections and the router

    def __post_init__(self):
        if self.gating not in GATINGS:
            raise ValueError(f"MoE gating {self.gating!r}; expected one of {GATINGS}")
        if not 0 < self.top_k <= self.n_experts:
            raise ValueError(f"MoE top_k={self.top_k} must be in [1, n_experts={self.n_experts}]")


@dataclass(frozen=True)
class LayerConfig:
    index: int
    kind: str                         # "sliding" | "full" | "linear" (gated DeltaNet: ModelConfig.linear_attention)
    window: int | None                # keys visible: query_pos - key_pos < window (None: unbounded)
    head_dim: int
    n_heads: int
    n_kv_heads: int
    scale: float                      # softmax(q.k * scale)
    rope: RopeConfig
    k_eq_v: bool = False              # Gemma-4 full layers: v = k projection (before k_norm / RoPE), then v_norm
    sinks: bool = False               # gpt-oss: a learned per-head logit joins the softmax denominator
    moe: bool = False                 # this layer's FFN is the MoE block
    intermediate_size: int = 0        # dense MLP width of this layer
    kv_source: int | None = None      # Gemma-4 KV sharing: attend over layer kv_source's cache, compute no k / v

    def __post_init__(self):
        if self.kind not in ("sliding", "full", "linear"):
            raise ValueError(f"layer {self.index}: kind {self.kind!r}; expected 'sliding', 'full' or 'linear'")
        if self.n_heads % self.n_kv_heads:
            raise ValueError(f"layer {self.index}: n_heads={self.n_heads} not a multiple of "
                             f"n_kv_heads={self.n_kv_heads}")
        if self.kind == "sliding" and not (self.window and self.window > 0):
            raise ValueError(f"layer {self.index}: sliding layer needs a positive window, got {self.window}")

    @property
    def rotary_dim(self) -> int:
        """Dimensions the rotation touches. Proportional RoPE rotates the whole head with zero tail frequencies."""
        if self.rope.kind == "proportional":
            return self.head_dim
        return int(self.head_dim * self.rope.partial_rotary_factor)


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
    qk_norm_dim: int | None = None    # < head_dim: the norm applies per chunk of this size (seed 000); the model
                                      # also infers it from the q_norm weight's length (a divisor of head_dim)
    v_norm: bool = False              # Gemma-4: weightless RMSNorm over v
    sandwich_norms: bool = False      # Gemma: post-attention and post-FFN norms on the branch outputs
    layer_scalar: bool = False        # Gemma-4: the layer output is multiplied by a per-layer scalar
    moe: MoEConfig | None = None
    ple_dim: int = 0                  # Gemma-4 per-layer input embeddings (hidden_size_per_layer_input); 0 = none
    linear_attention: object = None   # Qwen3-Next / Qwen3.5: impnb.config_hybrid.LinearAttentionConfig (the
                                      # geometry of the "linear" layers; their head fields repeat the attention's)
    max_position_embeddings: int = 4096
    bos_token_id: int | None = None
    eos_token_ids: tuple = ()
    source: str = "hf"                # "hf" | "gguf": where the weights' conventions come from
    extras: dict = field(default_factory=dict, compare=False)

    def __post_init__(self):
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation {self.activation!r}; supported: {ACTIVATIONS}")
        if len(self.layers) != self.n_layers:
            raise ValueError(f"{len(self.layers)} layer configs for n_layers={self.n_layers}")

    # ---- sizes for caches and workspaces: always the max over layers (seed 000, Gemma-4 dual geometry) ----
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
    def from_hf(cls, config: dict) -> "ModelConfig":
        """From an HF config.json dict (multimodal wrappers: the ``text_config`` is used)."""
        from .config_archs import build_from_hf
        return build_from_hf(config)

    @classmethod
    def from_gguf(cls, metadata: dict) -> "ModelConfig":
        """From GGUF metadata ({key: value}); ``general.architecture`` selects the builder."""
        from .config_archs import build_from_gguf
        return build_from_gguf(metadata)

    def summary(self) -> str:
        kinds = "".join({"sliding": "S", "linear": "L"}.get(layer.kind, "F") for layer in self.layers)
        moe = f", MoE {self.moe.n_experts}x top-{self.moe.top_k}" if self.moe else ""
        return (f"{self.arch}: {self.n_layers} layers [{kinds}], hidden {self.hidden_size}, vocab {self.vocab_size}, "
                f"head_dim<= {self.max_head_dim}, kv heads<= {self.max_kv_heads}{moe}")
