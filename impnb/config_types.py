"""The per-layer pieces of a ModelConfig: RoPE, mixture of experts, one layer's attention and FFN geometry, the
gated-DeltaNet geometry of the hybrid architectures.

These dataclasses import nothing from the config builders (impnb/config_archs.py, impnb/config_gguf.py,
impnb/config_hybrid.py), which
build them; impnb/config.py assembles them into a ModelConfig and impnb/config_validate.py checks the result.
Their own checks are the invariants of a single object; the rules that involve a file (types, ranges, cross-field
rules) live in config_validate.
"""
from __future__ import annotations

from dataclasses import dataclass

from .errors import FormatError, UnsupportedArchitecture

# Architectures with a builder: HF model_type values (impnb/config_archs.py), GGUF general.architecture values
# (impnb/config_gguf.py).
# The hybrid linear-attention ones (the last three of each) are built in impnb/config_hybrid.py.
HF_ARCHS = ("llama", "mistral", "qwen2", "qwen3", "qwen3_moe", "gemma3_text", "gemma4_text", "gpt_oss", "qwen3_next",
            "qwen3_5_text", "qwen3_5_moe_text")
GGUF_ARCHS = ("llama", "mistral", "qwen2", "qwen3", "qwen3moe", "gemma3", "gpt-oss", "qwen3next", "qwen35",
              "qwen35moe")
HYBRID_GGUF_ARCHS = ("qwen3next", "qwen35", "qwen35moe")
LAYER_KINDS = ("sliding", "full", "linear")
ACTIVATIONS = ("silu", "gelu_tanh")
ROPE_KINDS = ("default", "linear", "llama3", "yarn", "proportional")
GATINGS = ("softmax", "topk_softmax", "sigmoid")


def unsupported_architecture(what) -> UnsupportedArchitecture:
    return UnsupportedArchitecture(f"unsupported architecture {str(what)[:80]!r}; supported: {', '.join(HF_ARCHS)} "
                                   f"(HF config.json) and {', '.join(GGUF_ARCHS)} (GGUF)")


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
            raise FormatError(f"unsupported RoPE type {self.kind!r}; supported: {ROPE_KINDS}")
        if self.style not in ("neox", "interleaved"):
            raise FormatError(f"RoPE style {self.style!r}; expected 'neox' or 'interleaved'")


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
            raise FormatError(f"MoE gating {self.gating!r}; expected one of {GATINGS}")
        if not 0 < self.top_k <= self.n_experts:
            raise FormatError(f"MoE top_k={self.top_k} must be in [1, n_experts={self.n_experts}]")


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
        if self.kind not in LAYER_KINDS:
            raise FormatError(f"layer {self.index}: kind {self.kind!r}; expected one of {LAYER_KINDS}")
        if not (self.n_heads > 0 and self.n_kv_heads > 0 and self.head_dim > 0):
            raise FormatError(f"layer {self.index}: n_heads={self.n_heads}, n_kv_heads={self.n_kv_heads}, "
                              f"head_dim={self.head_dim} must all be positive")
        if self.n_heads % self.n_kv_heads:
            raise FormatError(f"layer {self.index}: n_heads={self.n_heads} not a multiple of "
                             f"n_kv_heads={self.n_kv_heads}")
        if self.kind == "sliding" and not (self.window and self.window > 0):
            raise FormatError(f"layer {self.index}: sliding layer needs a positive window, got {self.window}")

    @property
    def rotary_dim(self) -> int:
        """Dimensions the rotation touches. Proportional RoPE rotates the whole head with zero tail frequencies."""
        if self.rope.kind == "proportional":
            return self.head_dim
        return int(self.head_dim * self.rope.partial_rotary_factor)


@dataclass(frozen=True)
class LinearAttentionConfig:
    """Geometry of the gated-DeltaNet layers. Hk / Hv key / value heads (Hv a multiple of Hk), Dk / Dv head dims,
    K the short convolution's width over C = 2 Hk Dk + Hv Dv channels (q | k | v)."""
    n_key_heads: int
    n_value_heads: int
    key_head_dim: int
    value_head_dim: int
    conv_kernel: int = 4
    chunk_size: int = 64              # prefill chunk of the gated delta rule (transformers' and FLA's default)
    attn_output_gate: bool = True     # as declared; the loader follows q_proj's shape (2x rows: gated)

    def __post_init__(self):
        dims = (self.n_key_heads, self.n_value_heads, self.key_head_dim, self.value_head_dim, self.conv_kernel,
                self.chunk_size)
        if min(dims) < 1:
            raise FormatError(f"linear attention: head counts, head dims, conv kernel and chunk must be positive, "
                              f"got {dims}")
        if self.n_value_heads % self.n_key_heads:
            raise FormatError(f"linear attention: {self.n_value_heads} value heads are not a multiple of "
                              f"{self.n_key_heads} key heads")

    @property
    def key_dim(self) -> int:
        return self.n_key_heads * self.key_head_dim

    @property
    def value_dim(self) -> int:
        return self.n_value_heads * self.value_head_dim

    @property
    def conv_channels(self) -> int:
        return 2 * self.key_dim + self.value_dim
