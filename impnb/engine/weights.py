"""The engine's weight plan on the device: checkpoint tensors -> per-layer resident weights, caches and RoPE tables.

Dimension legend: Dm hidden, V vocab, H / HKV / D query heads / kv heads / head dim of a layer, C cache slots,
F = rotary_dim / 2, I FFN width, E experts, TK top-k.

Tensor names are the canonical (HF) names the reference model reads (impnb.model.weights.canonical; the fused
q|k|v and gate|up rows, the router name and the freq_factors rule follow impnb.model.weights). A value may be a
NumPy / CuPy array, an NVFP4Tensor, or (tools building random models on the device) a ready DeviceLinear.
"""
from __future__ import annotations

import numpy as np

from ..cuda._device_weights import POLICIES, DeviceLinear, fuse, upload, vector
from ..cuda._kernels import FMT_NVFP4
from ..errors import Unsupported
from .layers import ATTN_CHUNK, MAX_CHUNK, MAX_SPLITS, Layer, ModelWeights


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
    """cos / sin [max_context, F] exactly as impnb.reference.rope computes them (float32 angle, scaling), for the
    layer's rope config after the weight plan's freq_factors rule (impnb.model.weights.layer_rope)."""
    import cupy as cp
    from ..cuda.rope import rope_tables
    from ..model.weights import layer_rope
    from ..reference.rope import rope_inv_freq
    rope = layer_rope(L, cache.get("freq_factors"))
    key = (rope, L.head_dim)
    if key not in cache:
        inv, scaling = rope_inv_freq(rope, L.head_dim, cfg.max_position_embeddings)
        cos, sin = rope_tables(inv, scaling, max_context)
        cache[key] = (cp.asarray(cos), cp.asarray(sin), inv.shape[0], inv, float(scaling))
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
        lm_head = upload(emb_w, policy, "lm_head") if policy == "nvfp4" and embed.fmt != FMT_NVFP4 else embed
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
    from ..model.weights import norm_names, qkv_parts, router_name
    p = f"model.layers.{lc.index}."
    qkv = fuse([_linear(tensors, p + "self_attn." + n, policy) for n in qkv_parts(lc)], p + "qkv")
    sliding = lc.kind == "sliding"
    C = min(max_context, lc.window + prefill_chunk) if sliding else max_context
    chunk = ATTN_CHUNK
    while chunk * MAX_SPLITS < C:
        chunk *= 2
    if chunk > MAX_CHUNK:
        raise Unsupported(f"CUDA engine: a cache of {C} slots (max_context) is beyond its decode attention's "
                          f"{MAX_CHUNK * MAX_SPLITS}")
    cos, sin, F, inv_freq, rope_scaling = _rope_tables(cfg, lc, max_context, tables)
    norms = {role: vector(_get(tensors, p + n + ".weight"), cfg.hidden_size, p + n)
             for role, n in norm_names(cfg).items()}
    hd = lc.head_dim
    layer = Layer(
        index=lc.index, H=lc.n_heads, HKV=lc.n_kv_heads, D=hd, C=C, window=lc.window if sliding else 0,
        chunk=chunk, splits=-(-C // chunk), scale=float(lc.scale), rope_cos=cos, rope_sin=sin, F=F,
        interleaved=lc.rope.style == "interleaved", attn_norm=norms["attn_norm"], ffn_norm=norms["ffn_norm"],
        qkv=qkv, o=_linear(tensors, p + "self_attn.o_proj", policy),
        kc=cp.zeros((C, lc.n_kv_heads, hd), cp.float32), vc=cp.zeros((C, lc.n_kv_heads, hd), cp.float32),
        slot_pos=cp.full(C, -1, cp.int32),
        post_attn_norm=norms.get("post_attn_norm"), post_ffn_norm=norms.get("post_ffn_norm"),
        k_eq_v=lc.k_eq_v, v_norm=cfg.v_norm, eps=float(cfg.rms_eps), offset=float(cfg.norm_offset),
        softcap=float(cfg.attn_softcap or 0.0), act=cfg.activation, inv_freq=inv_freq, rope_scaling=rope_scaling)
    if cfg.qk_norm:
        layer.q_norm = vector(_get(tensors, p + "self_attn.q_norm.weight"), hd, p + "q_norm")
        layer.k_norm = vector(_get(tensors, p + "self_attn.k_norm.weight"), hd, p + "k_norm")
    if lc.sinks:
        layer.sinks = vector(_get(tensors, p + "self_attn.sinks"), lc.n_heads, p + "sinks")
    if lc.moe:
        router = p + router_name(lambda name: _has(tensors, name), p)
        layer.router = _linear(tensors, router, policy if policy != "nvfp4" else "fp32")
        layer.experts_gu = _experts(tensors, p + "mlp.experts", policy, "gate_up")
        layer.experts_down = _experts(tensors, p + "mlp.experts", policy, "down")
        layer.act = cfg.moe.activation
    else:
        layer.gu = fuse([_linear(tensors, p + "mlp.gate_proj", policy), _linear(tensors, p + "mlp.up_proj", policy)],
                        p + "gate_up")
        layer.down = _linear(tensors, p + "mlp.down_proj", policy)
    return layer
