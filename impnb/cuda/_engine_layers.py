"""The engine's model on the device: per-layer weights, caches, RoPE tables, and the per-layer decode launches.

Dimension legend: Dm hidden, V vocab, H / HKV / D query heads / kv heads / head dim of a layer, C cache slots,
F = rotary_dim / 2, I FFN width, E experts, TK top-k.

Tensor names are the canonical (HF) names of impnb/loaders/names.py. A value may be a NumPy / CuPy array, an
NVFP4Tensor, or (tools building random models on the device) a ready DeviceLinear.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import Unsupported
from . import _engine_kernels as K
from ._engine_weights import POLICIES, DeviceLinear, fuse, upload, vector

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


def _act(name: str) -> str:
    return {"silu": "silu", "gelu_tanh": "gelu"}[name]


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
    act: str = "silu"
    eps: float = 1e-6
    offset: float = 0.0
    softcap: float = 0.0

    def decode(self, e) -> int:
        """Launch this layer's decode kernels for one token (engine ``e`` owns the shared buffers)."""
        n = self.attention_block(e)
        return n + (self.moe_block(e) if self.router is not None else self.mlp_block(e))

    @property
    def fused_rope(self) -> bool:
        """q|k|v GEMV, RoPE and KV append in one kernel: no per-head norms, full rotary."""
        return self.q_norm is None and not self.v_norm and not self.k_eq_v and 2 * self.F == self.D

    def attention_block(self, e) -> int:
        if self.fused_rope:
            K.qkv_rope(self.qkv, e.x, self.attn_norm, eps=self.eps, offset=self.offset, q=e.q, kc=self.kc,
                       vc=self.vc, slot_pos=self.slot_pos, st=e.st, cos=self.rope_cos, sin=self.rope_sin, F=self.F,
                       interleaved=self.interleaved, H=self.H, HKV=self.HKV, D=self.D, C=self.C)
            return self.attention_tail(e) - 1
        K.gemv(self.qkv, e.x, e.qkv, mode="norm", aux=self.attn_norm, eps=self.eps, offset=self.offset)
        K.launch("qkv_rope_append", (self.H + self.HKV, 1), max(32, min(1024, -(-self.D // 32) * 32)),
                 (e.qkv, self.qkv.N, e.q, self.kc, self.vc, self.slot_pos, e.st, self.q_norm, self.k_norm,
                  self.q_norm is not None, self.v_norm, self.k_eq_v, self.eps, self.offset, self.rope_cos,
                  self.rope_sin, self.F, self.interleaved, self.H, self.HKV, self.D, self.C), smem=4 * self.D)
        return self.attention_tail(e)

    def attention_tail(self, e) -> int:
        """Attention partials and the o-proj (+ residual); returns the kernels of the whole attention block."""
        splits = K.attention_decode(e.q, self.kc, self.vc, self.slot_pos, e.st, e.part, H=self.H, HKV=self.HKV,
                                    D=self.D, C=self.C, chunk=self.chunk, window=self.window, scale=self.scale,
                                    softcap=self.softcap)
        if self.post_attn_norm is None:  # o-proj (combining the partials) + residual, one kernel
            K.gemv_attn(self.o, e.part, self.sinks, splits, self.D, e.x, accumulate=True)
            return 4
        K.gemv_attn(self.o, e.part, self.sinks, splits, self.D, e.tmp)
        K.launch("postnorm_add", 1, 1024, (e.tmp, self.post_attn_norm, e.x, e.config.hidden_size, self.eps,
                                           self.offset))
        return 5

    def mlp_block(self, e) -> int:
        K.gemv(self.gu, e.x, e.gu, mode="norm", aux=self.ffn_norm, eps=self.eps, offset=self.offset)
        return 1 + self._residual(e, self.down, e.gu, self.act, self.post_ffn_norm)

    def moe_block(self, e) -> int:
        moe = e.config.moe
        K.gemv(self.router, e.x, e.router_logits, mode="norm", aux=self.ffn_norm, eps=self.eps, offset=self.offset)
        gating = {"softmax": 0, "topk_softmax": 1, "sigmoid": 2}[moe.gating]
        K.launch("moe_route", 1, 256, (e.router_logits, moe.n_experts, moe.top_k, gating, moe.renormalize,
                                       e.moe_ids, e.moe_w))
        K.moe_up(self.experts_gu, e.moe_ids, e.x, e.moe_gu, aux=self.ffn_norm, eps=self.eps, offset=self.offset,
                 top_k=moe.top_k)
        if self.post_ffn_norm is None:
            K.moe_down(self.experts_down, e.moe_ids, e.moe_w, e.moe_gu, e.x, act=self.act, top_k=moe.top_k)
            return 4
        e.tmp.fill(0)
        K.moe_down(self.experts_down, e.moe_ids, e.moe_w, e.moe_gu, e.tmp, act=self.act, top_k=moe.top_k)
        K.launch("postnorm_add", 1, 1024, (e.tmp, self.post_ffn_norm, e.x, e.config.hidden_size, self.eps,
                                           self.offset))
        return 6

    def _residual(self, e, lin, inp, mode, post_norm) -> int:
        """x += lin(inp), or with a sandwich norm x += rmsnorm(lin(inp)) * (offset + w)."""
        if post_norm is None:
            K.gemv(lin, inp, e.x, mode=mode, accumulate=True)
            return 1
        K.gemv(lin, inp, e.tmp, mode=mode)
        K.launch("postnorm_add", 1, 1024, (e.tmp, post_norm, e.x, e.config.hidden_size, self.eps, self.offset))
        return 2


@dataclass
class ModelWeights:
    config: object
    embed: DeviceLinear
    embed_scale: float
    lm_head: DeviceLinear
    final_norm: object
    layers: list = field(default_factory=list)

    def embed_step(self, ids, x, rows: int = 1) -> int:
        e = self.embed
        if e.fmt == K.FMT_NVFP4:
            K.launch("embed_nvfp4", rows, 256, (e.data, e.scales, e.rmult, ids, x, e.K, self.embed_scale))
        else:
            K.launch("embed_dense", rows, 256, (e.data, e.fmt, ids, x, e.K, self.embed_scale))
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


class _Named:
    """The checkpoint's tensors under canonical names (impnb.model.weights.canonical: ``model.`` and multimodal
    prefixes dropped), so the engine reads exactly the tensors the reference model reads."""

    def __init__(self, tensors):
        from ..model.weights import canonical
        self.tensors = tensors
        self.raw = {canonical(k): k for k in tensors}

    def __contains__(self, name):
        return name in self.raw

    def __getitem__(self, name):
        return self.tensors[self.raw[name]]


def _has(tensors, name) -> bool:
    return (name[len("model."):] if name.startswith("model.") else name) in tensors


def _get(tensors, name, required=True):
    name = name[len("model."):] if name.startswith("model.") else name
    if name in tensors:
        return tensors[name]
    if required:
        raise Unsupported(f"CUDA engine: tensor {name!r} is missing from the checkpoint")
    return None


def _linear(tensors, base, policy, bias_ok=True):
    w = _get(tensors, base + ".weight")
    if isinstance(w, DeviceLinear):
        return w
    bias = _get(tensors, base + ".bias", required=False) if bias_ok else None
    return upload(w, policy, base, bias=bias)


def _rope_tables(cfg, L, max_context, cache):
    """cos / sin [max_context, F] exactly as impnb.reference.rope computes them (float32 angle, scaling)."""
    import cupy as cp
    from ..reference.rope import rope_inv_freq
    rope = L.rope
    if cache.get("freq_factors") is not None and rope.freq_factors is None and L.kind == "full":
        from dataclasses import replace  # GGUF llama3 rope_freqs, applied to full layers as the reference does
        rope = replace(rope, freq_factors=tuple(float(f) for f in cache["freq_factors"]))
    key = (rope, L.head_dim)
    if key not in cache:
        inv, scaling = rope_inv_freq(rope, L.head_dim, cfg.max_position_embeddings)
        angle = np.arange(max_context).astype(np.float32)[:, None] * inv[None, :]  # [P, F]
        cos = (np.cos(angle) * np.float32(scaling)).astype(np.float32)
        sin = (np.sin(angle) * np.float32(scaling)).astype(np.float32)
        cache[key] = (cp.asarray(cos), cp.asarray(sin), inv.shape[0])
    return cache[key]


def _experts(tensors, prefix, policy, name):
    """Stacked experts [E, N, K] as one DeviceLinear (gate|up rows fused per expert). Accepts the layouts the
    reference reads: a ready DeviceLinear (``<prefix>.gate_up_device`` / ``.down_device``, tools), a fused
    ``gate_up_proj`` [E, 2I, H], or stacked ``gate_proj`` / ``up_proj`` / ``down_proj`` (with or without .weight)."""
    ready = _get(tensors, f"{prefix}.{name}_device", required=False)
    if ready is not None:
        return ready

    def find(n):
        full = f"{prefix}.{n}.weight"
        return _get(tensors, full) if _has(tensors, full) else _get(tensors, f"{prefix}.{n}")

    if name == "gate_up":
        if _has(tensors, f"{prefix}.gate_up_proj"):
            fused = _get(tensors, f"{prefix}.gate_up_proj")
            per = [upload(fused[i], policy) for i in range(len(fused))]
        else:
            gate, up = find("gate_proj"), find("up_proj")
            per = [fuse([upload(gate[i], policy), upload(up[i], policy)], f"{prefix}[{i}]") for i in range(len(gate))]
    else:
        down = find("down_proj")
        per = [upload(down[i], policy) for i in range(len(down))]
    stacked = fuse(per, prefix) if len(per) > 1 else per[0]
    stacked.N, stacked.experts = per[0].N, len(per)
    return stacked


def build_layers(cfg, tensors, policy: str, max_context: int, prefill_chunk: int) -> ModelWeights:
    import cupy as cp
    if policy not in POLICIES:
        raise ValueError(f"weights={policy!r}; expected one of {POLICIES}")
    tensors = _Named(tensors)
    emb_w = _get(tensors, "model.embed_tokens.weight")
    embed = emb_w if isinstance(emb_w, DeviceLinear) else upload(emb_w, "auto" if policy == "nvfp4" else policy,
                                                                  "model.embed_tokens")
    head_w = _get(tensors, "lm_head.weight", required=False)  # as the reference: an explicit head wins
    if head_w is None:
        lm_head = upload(emb_w, policy, "lm_head") if policy == "nvfp4" and embed.fmt != K.FMT_NVFP4 else embed
    else:
        lm_head = head_w if isinstance(head_w, DeviceLinear) else upload(head_w, policy, "lm_head")
    out = ModelWeights(cfg, embed, float(np.float32(cfg.embedding_scale)), lm_head,
                       vector(_get(tensors, "model.norm.weight"), cfg.hidden_size, "model.norm.weight"))
    freqs = _get(tensors, "model.rope_freqs.weight", required=False)
    tables = {"freq_factors": None if freqs is None else np.asarray(freqs, dtype=np.float32).reshape(-1)}
    for lc in cfg.layers:
        out.layers.append(_layer(cfg, lc, tensors, policy, max_context, prefill_chunk, tables, cp))
    cp.cuda.Device().synchronize()
    return out


def _layer(cfg, lc, tensors, policy, max_context, prefill_chunk, tables, cp) -> Layer:
    p = f"model.layers.{lc.index}."
    names = ["q_proj", "k_proj"] + ([] if lc.k_eq_v else ["v_proj"])
    qkv = fuse([_linear(tensors, p + "self_attn." + n, policy) for n in names], p + "qkv")
    sliding = lc.kind == "sliding"
    C = min(max_context, lc.window + prefill_chunk) if sliding else max_context
    chunk = ATTN_CHUNK
    while chunk * MAX_SPLITS < C:
        chunk *= 2
    if chunk > MAX_CHUNK:
        raise Unsupported(f"CUDA engine: a cache of {C} slots (max_context) is beyond its decode attention's "
                          f"{MAX_CHUNK * MAX_SPLITS}")
    cos, sin, F = _rope_tables(cfg, lc, max_context, tables)
    sandwich = cfg.sandwich_norms
    norm = lambda n: vector(_get(tensors, p + n + ".weight"), cfg.hidden_size, p + n)  # noqa: E731
    hd = lc.head_dim
    layer = Layer(
        index=lc.index, H=lc.n_heads, HKV=lc.n_kv_heads, D=hd, C=C, window=lc.window if sliding else 0,
        chunk=chunk, splits=-(-C // chunk), scale=float(lc.scale), rope_cos=cos, rope_sin=sin, F=F,
        interleaved=lc.rope.style == "interleaved", attn_norm=norm("input_layernorm"),
        ffn_norm=norm("pre_feedforward_layernorm" if sandwich else "post_attention_layernorm"),
        qkv=qkv, o=_linear(tensors, p + "self_attn.o_proj", policy),
        kc=cp.zeros((C, lc.n_kv_heads, hd), cp.float32), vc=cp.zeros((C, lc.n_kv_heads, hd), cp.float32),
        slot_pos=cp.full(C, -1, cp.int32),
        post_attn_norm=norm("post_attention_layernorm") if sandwich else None,
        post_ffn_norm=norm("post_feedforward_layernorm") if sandwich else None,
        k_eq_v=lc.k_eq_v, v_norm=cfg.v_norm, eps=float(cfg.rms_eps), offset=float(cfg.norm_offset),
        softcap=float(cfg.attn_softcap or 0.0), act=_act(cfg.activation))
    if cfg.qk_norm:
        layer.q_norm = vector(_get(tensors, p + "self_attn.q_norm.weight"), hd, p + "q_norm")
        layer.k_norm = vector(_get(tensors, p + "self_attn.k_norm.weight"), hd, p + "k_norm")
    if lc.sinks:
        layer.sinks = vector(_get(tensors, p + "self_attn.sinks"), lc.n_heads, p + "sinks")
    if lc.moe:
        router = p + ("mlp.router" if _has(tensors, p + "mlp.router.weight") else "mlp.gate")
        layer.router = _linear(tensors, router, policy if policy != "nvfp4" else "fp32")
        layer.experts_gu = _experts(tensors, p + "mlp.experts", policy, "gate_up")
        layer.experts_down = _experts(tensors, p + "mlp.experts", policy, "down")
        layer.act = _act(cfg.moe.activation)
    else:
        layer.gu = fuse([_linear(tensors, p + "mlp.gate_proj", policy), _linear(tensors, p + "mlp.up_proj", policy)],
                        p + "gate_up")
        layer.down = _linear(tensors, p + "mlp.down_proj", policy)
    return layer
