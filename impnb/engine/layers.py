"""The engine's per-layer decode launches: each launch is a registered op's CUDA path on resident buffers.

Dimension legend: Dm hidden, V vocab, H / HKV / D query heads / kv heads / head dim of a layer, C cache slots,
F = rotary_dim / 2, I FFN width, E experts, TK top-k.

Per token and layer (the op each kernel belongs to in brackets, impnb.ops):
    q|k|v GEMV of rms_norm(x)                        [rms_norm_linear]  + QK-norm, RoPE, KV append [qkv_rope_append]
    or both in one kernel (no QK-norm, full rotary)  [rms_norm_qkv_rope_append]
    split-K attention partials over the cache slots  [attention_decode]
    o-proj combining the partials (+ residual)       [attention_output]  (+ sandwich norm [rms_norm_add])
    gate|up GEMV of rms_norm(x)                      [rms_norm_linear]
    down GEMV of act(gate) * up (+ residual)         [gated_linear]      (+ sandwich norm [rms_norm_add])
    MoE: router GEMV [rms_norm_linear], top-k [moe_route], grouped expert GEMVs [rms_norm_moe_experts]
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..cuda._device_weights import DeviceLinear
from ..errors import Unsupported

ATTN_CHUNK = 64      # cache slots per decode-attention block (doubled for long caches: splits <= MAX_SPLITS)
MAX_SPLITS = 64
MAX_CHUNK = 1024     # one thread per slot at most: caches up to 64K slots


def check_supported(cfg) -> None:
    """Raise Unsupported naming the feature this engine does not run (the reference backend runs everything)."""
    missing = []
    if getattr(cfg, "linear_attention", None) is not None:
        missing.append("linear-attention (gated DeltaNet) layers and gated attention")
    if cfg.qk_norm_dim and any(cfg.qk_norm_dim != L.head_dim for L in cfg.layers):
        missing.append("QK-norm over chunks smaller than head_dim")
    if cfg.layer_scalar:
        missing.append("per-layer output scalars")
    if cfg.ple_dim:
        missing.append("per-layer input embeddings")
    if any(L.kv_source is not None for L in cfg.layers):
        missing.append("KV sharing between layers")
    moe = cfg.moe
    if moe is not None:
        if moe.n_shared_experts or moe.router_input_norm or moe.per_expert_scale or moe.parallel_dense_mlp:
            missing.append("shared experts / router input norm / per-expert scale / parallel dense MLP")
        if moe.activation not in ("silu", "gelu_tanh") or moe.expert_bias:
            missing.append(f"expert activation {moe.activation!r} with biases={moe.expert_bias}")
        if moe.n_experts > 1024 or moe.top_k > 64:
            missing.append("more than 1024 experts or top-k > 64")
    if any(L.head_dim > 1024 or L.head_dim % 4 for L in cfg.layers):
        missing.append("head_dim > 1024 or not a multiple of 4")
    if missing:
        raise Unsupported(f"CUDA engine: {cfg.arch} uses {', '.join(missing)}; run it with backend='reference'")


@dataclass
class Layer:
    index: int
    H: int
    HKV: int
    D: int
    C: int
    window: int
    chunk: int
    splits: int
    scale: float
    rope_cos: object
    rope_sin: object
    F: int
    interleaved: bool
    attn_norm: object
    ffn_norm: object
    qkv: DeviceLinear
    o: DeviceLinear
    kc: object
    vc: object
    slot_pos: object
    post_attn_norm: object = None
    post_ffn_norm: object = None
    q_norm: object = None
    k_norm: object = None
    sinks: object = None
    k_eq_v: bool = False
    v_norm: bool = False
    gu: DeviceLinear | None = None
    down: DeviceLinear | None = None
    router: DeviceLinear | None = None
    experts_gu: DeviceLinear | None = None
    experts_down: DeviceLinear | None = None
    act: str = "silu"  # the gated activation: silu or gelu_tanh
    inv_freq: object = None  # host float32 [F] and attention scaling: the rope the tables were built from
    rope_scaling: float = 1.0
    eps: float = 1e-6
    offset: float = 0.0
    softcap: float = 0.0

    def decode(self, e) -> int:
        """Launch this layer's decode kernels for one token (engine ``e`` owns the shared buffers and ``e.ops``,
        the launchers: impnb/engine/launchers.py)."""
        e.ops.set_layer(self)
        n = self.attention_block(e)
        return n + (self.moe_block(e) if self.router is not None else self.mlp_block(e))

    @property
    def fused_rope(self) -> bool:
        """q|k|v GEMV, RoPE and KV append in one kernel: no per-head norms, full rotary."""
        return self.q_norm is None and not self.v_norm and not self.k_eq_v and 2 * self.F == self.D

    def rope_args(self, e) -> dict:
        return dict(kc=self.kc, vc=self.vc, slot_pos=self.slot_pos, st=e.st, cos=self.rope_cos, sin=self.rope_sin,
                    F=self.F, interleaved=self.interleaved, H=self.H, HKV=self.HKV, D=self.D, C=self.C)

    def attention_block(self, e) -> int:
        if self.fused_rope:
            e.ops.norm_qkv_rope_gemv(self.qkv, e.x, self.attn_norm, eps=self.eps, offset=self.offset, q=e.q,
                                     **self.rope_args(e))
            return self.attention_tail(e) - 1
        e.ops.rms_norm_gemv(self.qkv, e.x, e.qkv, norm=self.attn_norm, eps=self.eps, offset=self.offset)
        e.ops.append_rows(e.qkv, self.qkv.N, e.q, rows=1, q_norm=self.q_norm, k_norm=self.k_norm,
                          v_norm=self.v_norm, k_eq_v=self.k_eq_v, eps=self.eps, offset=self.offset,
                          **self.rope_args(e))
        return self.attention_tail(e)

    def attention_tail(self, e) -> int:
        """Attention partials and the o-proj (+ residual); returns the kernels of the whole attention block."""
        splits = e.ops.attention_partials(e.q, self.kc, self.vc, self.slot_pos, e.st, e.part, H=self.H,
                                          HKV=self.HKV, D=self.D, C=self.C, chunk=self.chunk, window=self.window,
                                          scale=self.scale, softcap=self.softcap)
        if self.post_attn_norm is None:  # o-proj (combining the partials) + residual, one kernel
            e.ops.attention_output_gemv(self.o, e.part, self.sinks, splits, self.D, e.x, accumulate=True)
            return 4
        e.ops.attention_output_gemv(self.o, e.part, self.sinks, splits, self.D, e.tmp)
        e.ops.rms_norm_add_rows(e.tmp, self.post_attn_norm, e.x, 1, e.config.hidden_size, self.eps, self.offset,
                                block=1024)
        return 5

    def mlp_block(self, e) -> int:
        e.ops.rms_norm_gemv(self.gu, e.x, e.gu, norm=self.ffn_norm, eps=self.eps, offset=self.offset)
        if self.post_ffn_norm is None:
            e.ops.gated_gemv(self.down, e.gu, e.x, activation=self.act, accumulate=True)
            return 2
        e.ops.gated_gemv(self.down, e.gu, e.tmp, activation=self.act)
        e.ops.rms_norm_add_rows(e.tmp, self.post_ffn_norm, e.x, 1, e.config.hidden_size, self.eps, self.offset,
                                block=1024)
        return 3

    def moe_block(self, e) -> int:
        moe = e.config.moe
        e.ops.rms_norm_gemv(self.router, e.x, e.router_logits, norm=self.ffn_norm, eps=self.eps,
                            offset=self.offset)
        e.ops.route_topk(e.router_logits, moe.n_experts, moe.top_k, moe.gating, moe.renormalize, e.moe_ids,
                         e.moe_w)
        if self.post_ffn_norm is None:
            e.ops.experts(self.experts_gu, self.experts_down, e.moe_ids, e.moe_w, e.x, e.moe_gu, e.x,
                          norm=self.ffn_norm, eps=self.eps, offset=self.offset, activation=self.act, top_k=moe.top_k)
            return 4
        e.tmp.fill(0)
        e.ops.experts(self.experts_gu, self.experts_down, e.moe_ids, e.moe_w, e.x, e.moe_gu, e.tmp,
                      norm=self.ffn_norm, eps=self.eps, offset=self.offset, activation=self.act, top_k=moe.top_k)
        e.ops.rms_norm_add_rows(e.tmp, self.post_ffn_norm, e.x, 1, e.config.hidden_size, self.eps, self.offset,
                                block=1024)
        return 6


@dataclass
class ModelWeights:
    config: object
    embed: DeviceLinear
    embed_scale: float
    lm_head: DeviceLinear
    final_norm: object
    layers: list = field(default_factory=list)

    def embed_step(self, ops, ids, x, rows: int = 1) -> int:
        ops.embed(self.embed, ids, x, rows, self.embed_scale)
        return 1

    @property
    def nbytes(self) -> int:
        parts = {id(p): p for L in self.layers for p in (L.qkv, L.o, L.gu, L.down, L.router, L.experts_gu,
                                                          L.experts_down) if p is not None}
        parts[id(self.embed)], parts[id(self.lm_head)] = self.embed, self.lm_head
        return sum(p.nbytes for p in parts.values())

    def step_bytes(self) -> int:
        """Weight bytes one decode step must read: each linear once, top-k experts of E, one embedding row."""
        total = self.lm_head.nbytes + self.embed.nbytes // max(1, self.config.vocab_size)
        for L in self.layers:
            total += sum(p.nbytes for p in (L.qkv, L.o, L.gu, L.down, L.router) if p is not None)
            for p in (L.experts_gu, L.experts_down):
                if p is not None:
                    total += p.nbytes * self.config.moe.top_k // p.experts
        return total
