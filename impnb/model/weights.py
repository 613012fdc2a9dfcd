"""Model weights: checkpoint tensors (HF names, HF orientation) -> float32 arrays laid out for the forward pass.

Legend: H = hidden, V = vocab, Hq / Hkv = query / KV heads, D = head dim, I = FFN width, E = experts.

Done ONCE at load: every weight becomes a dense float32 array (NVFP4Tensor through the reference dequantizer,
bf16/f16 widened; GGUF tensors arrive dequantized), and
    qkv      [(Hq + 2 Hkv) D, H]  q, k, v projections fused into one GEMM (k_eq_v layers: q and k only)
    gate_up  [2 I, H]             MLP gate rows then up rows, one GEMM
    experts  gate_up [E, 2I, H], down [E, H, I]   whatever the checkpoint's expert layout:
             per-expert HF tensors, stacked [E, out, in] (impnb GGUF/safetensors loaders), transformers-5 fused
             ``experts.gate_up_proj`` [E, 2I, H], or gpt-oss's [E, H, 2I] with gate/up INTERLEAVED in columns.
Accepted name prefixes: ``model.``, ``language_model.``, ``model.language_model.`` (multimodal wrappers).
A tensor the model needs and cannot find raises FormatError naming it; tensors left unused are reported.
"""
from __future__ import annotations

import re

import numpy as np

from ..errors import FormatError

_PREFIXES = ("model.language_model.", "language_model.model.", "language_model.", "model.")


def canonical(name: str) -> str:
    for prefix in _PREFIXES:
        if name.startswith(prefix):
            return name[len(prefix):]
    return name


def dense(value, name: str = "") -> np.ndarray:
    """A float32 NumPy array from an array / NVFP4Tensor / stacked tuple of NVFP4Tensor."""
    from ..formats import NVFP4Tensor
    if isinstance(value, NVFP4Tensor):
        from ..reference.nvfp4 import nvfp4_dequantize
        return np.asarray(nvfp4_dequantize(value), dtype=np.float32)
    if isinstance(value, (tuple, list)):
        return np.stack([dense(v, name) for v in value])
    if _is_mxfp4(value):
        return np.asarray(value.dequantize(np.float32), dtype=np.float32)
    if not hasattr(value, "dtype"):
        raise FormatError(f"tensor {name}: cannot use a {type(value).__name__} as a weight")
    return np.ascontiguousarray(value, dtype=np.float32)


def _is_mxfp4(value) -> bool:
    return type(value).__name__ == "MXFP4Tensor" and hasattr(value, "dequantize")


class WeightStore:
    """Canonical-name view of the checkpoint's tensors that records which names were consumed."""

    def __init__(self, tensors):
        self.raw = {canonical(k): k for k in tensors}
        self.tensors = tensors
        self.used: set[str] = set()

    def has(self, name: str) -> bool:
        return name in self.raw

    def get(self, name: str, shape: tuple | None = None, *, optional: bool = False):
        if name not in self.raw:
            if optional:
                return None
            raise FormatError(f"checkpoint lacks tensor {name!r} (canonical name; prefixes {_PREFIXES} accepted)")
        self.used.add(name)
        arr = dense(self.tensors[self.raw[name]], name)
        if shape is not None and tuple(arr.shape) != tuple(shape):
            raise FormatError(f"tensor {name}: shape {tuple(arr.shape)}, expected {tuple(shape)}")
        return arr

    def rows_are_outputs(self, name: str) -> bool:
        """True when ``name`` is stored quantized (MXFP4 / NVFP4: rows = outputs, whatever the dense layout)."""
        return name in self.raw and (_is_mxfp4(self.tensors[self.raw[name]])
                                     or type(self.tensors[self.raw[name]]).__name__ == "NVFP4Tensor")

    def unused(self) -> list[str]:
        return sorted(set(self.raw) - self.used)


# ---- the weight plan: which checkpoint tensors make each role (read by this module and by the CUDA engine) ----
def norm_names(config) -> dict:
    """role -> the layer's norm module name: attn_norm, ffn_norm, and Gemma's sandwich post norms."""
    if config.sandwich_norms:
        return {"attn_norm": "input_layernorm", "post_attn_norm": "post_attention_layernorm",
                "ffn_norm": "pre_feedforward_layernorm", "post_ffn_norm": "post_feedforward_layernorm"}
    return {"attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm"}


def qkv_parts(lc) -> list[str]:
    """The projections fused, in row order, into the layer's q|k|v weight: q only for a KV-sharing layer, no v
    for k_eq_v layers (v is the raw k)."""
    if lc.kv_source is not None:
        return ["q_proj"]
    return ["q_proj", "k_proj"] + ([] if lc.k_eq_v else ["v_proj"])


def router_name(has, prefix: str) -> str:
    """The MoE router module of layer ``prefix``: ``mlp.router`` (gpt-oss) or ``mlp.gate`` (Qwen-MoE, Mixtral)."""
    return "mlp.router" if has(prefix + "mlp.router.weight") else "mlp.gate"


def load_layer(store: WeightStore, config, lc) -> dict:
    """All float32 weights of layer ``lc`` (a LayerConfig), keyed by role."""
    if config.linear_attention is not None:  # Qwen3-Next / Qwen3.5 layers: impnb/model/hybrid_weights.py
        from .hybrid_weights import load_layer as load_hybrid_layer
        return load_hybrid_layer(store, config, lc)
    p, h = f"layers.{lc.index}.", config.hidden_size
    w = {role: store.get(p + name + ".weight", (h,)) for role, name in norm_names(config).items()}
    w.update(_attention(store, p + "self_attn.", config, lc))
    moe = config.moe if lc.moe else None
    if moe is None or moe.parallel_dense_mlp:
        w["mlp"] = _mlp(store, p + "mlp.", h)
    if moe is not None:
        w["moe"] = _moe(store, p, config, moe)
    if config.ple_dim:  # Gemma-4 per-layer input: gate [P, H], projection [H, P], post norm [H]
        w["ple_gate"] = store.get(p + "per_layer_input_gate.weight", (config.ple_dim, h))
        w["ple_proj"] = store.get(p + "per_layer_projection.weight", (h, config.ple_dim))
        w["ple_norm"] = store.get(p + "post_per_layer_input_norm.weight", (h,))
    if config.layer_scalar:
        scalar = store.get(p + "layer_scalar", optional=True)
        w["layer_scalar"] = None if scalar is None else np.float32(scalar.reshape(-1)[0])
    return w


def _attention(store, p, config, lc) -> dict:
    h, d = config.hidden_size, lc.head_dim
    names = qkv_parts(lc)
    heads = {"q_proj": lc.n_heads, "k_proj": lc.n_kv_heads, "v_proj": lc.n_kv_heads}
    parts = [store.get(p + n + ".weight", (heads[n] * d, h)) for n in names]
    biases = [store.get(p + n + ".bias", (part.shape[0],), optional=True) for n, part in zip(names, parts)]
    w = {"qkv": np.concatenate(parts, axis=0),
         "qkv_bias": None if all(b is None for b in biases) else
         np.concatenate([b if b is not None else np.zeros(part.shape[0], np.float32)
                         for b, part in zip(biases, parts)]),
         "o": store.get(p + "o_proj.weight", (h, lc.n_heads * d)),
         "o_bias": store.get(p + "o_proj.bias", (h,), optional=True)}
    if config.qk_norm:
        w["q_norm"] = _qk_norm_weight(store, p + "q_norm.weight", config, d)
        if lc.kv_source is None:
            w["k_norm"] = _qk_norm_weight(store, p + "k_norm.weight", config, d)
    if lc.sinks:
        w["sinks"] = store.get(p + "sinks", (lc.n_heads,))
    return w


def _qk_norm_weight(store, name, config, head_dim):
    """A QK-norm weight [nd]: nd = head_dim, or a divisor of it (the norm then runs per chunk of nd)."""
    w = store.get(name)
    nd = w.shape[0] if w.ndim == 1 else -1
    if nd <= 0 or head_dim % nd or (config.qk_norm_dim and nd != config.qk_norm_dim):
        raise FormatError(f"tensor {name}: shape {tuple(w.shape)} does not divide head_dim {head_dim}"
                          + (f" (config qk_norm_dim {config.qk_norm_dim})" if config.qk_norm_dim else ""))
    return w


def _mlp(store, p, h) -> dict:
    gate = store.get(p + "gate_proj.weight")
    up = store.get(p + "up_proj.weight", gate.shape)
    down = store.get(p + "down_proj.weight", (h, gate.shape[0]))
    if gate.shape[1] != h:
        raise FormatError(f"{p}gate_proj.weight: shape {gate.shape}, expected [I, {h}]")
    width = gate.shape[0]
    biases = [store.get(p + n + ".bias", (width,), optional=True) for n in ("gate_proj", "up_proj")]
    gate_up_bias = None if all(b is None for b in biases) else np.concatenate(
        [b if b is not None else np.zeros(width, np.float32) for b in biases])  # Llama mlp_bias
    return {"gate_up": np.concatenate([gate, up], axis=0), "gate_up_bias": gate_up_bias, "down": down,
            "down_bias": store.get(p + "down_proj.bias", (h,), optional=True)}


def _moe(store, p, config, moe) -> dict:
    h, e, i = config.hidden_size, moe.n_experts, moe.intermediate_size
    if moe.router_input_norm:  # Gemma-4 router: proj(rmsnorm(x) * scale * H^-0.5)
        w = {"router": store.get(p + "router.proj.weight", (e, h)), "router_bias": None,
             "router_in_scale": store.get(p + "router.scale", (h,)) * np.float32(h ** -0.5),
             "expert_scale": store.get(p + "router.per_expert_scale", (e,)),
             "post_dense_norm": store.get(p + "post_feedforward_layernorm_1.weight", (h,)),
             "pre_experts_norm": store.get(p + "pre_feedforward_layernorm_2.weight", (h,)),
             "post_experts_norm": store.get(p + "post_feedforward_layernorm_2.weight", (h,))}
        base = p + "experts."
    else:
        name = router_name(store.has, p)
        w = {"router": store.get(p + name + ".weight", (e, h)),
             "router_bias": store.get(p + name + ".bias", (e,), optional=True), "expert_scale": None}
        base = p + "mlp.experts."
    w.update(_experts(store, base, e, h, i, transposed_interleaved=config.arch == "gpt_oss"))
    if moe.n_shared_experts:
        w["shared"] = _mlp(store, p + "mlp.shared_expert.", h)
    return w


def _experts(store, base, e, h, i, *, transposed_interleaved: bool) -> dict:
    if store.has(base + "gate_up_proj"):
        gu = store.get(base + "gate_up_proj")
        down = store.get(base + "down_proj")
        bias = store.get(base + "gate_up_proj_bias", optional=True)
        if transposed_interleaved:  # gpt-oss: gate / up interleaved; dense [E, H, 2I] + down [E, I, H], or
            if not store.rows_are_outputs(base + "gate_up_proj"):  # MXFP4 [E, 2I, H] + [E, H, I] (rows = outputs)
                gu, down = gu.transpose(0, 2, 1), down.transpose(0, 2, 1)
            gu = np.concatenate([gu[:, 0::2], gu[:, 1::2]], axis=1)
            bias = None if bias is None else np.concatenate([bias[:, 0::2], bias[:, 1::2]], axis=1)
        if gu.shape != (e, 2 * i, h) or down.shape != (e, h, i):
            raise FormatError(f"{base}gate_up_proj / down_proj: shapes {gu.shape} / {down.shape}, expected "
                              f"[{e}, {2 * i}, {h}] / [{e}, {h}, {i}]")
        return {"gate_up": np.ascontiguousarray(gu), "down": np.ascontiguousarray(down),
                "gate_up_bias": bias, "down_bias": store.get(base + "down_proj_bias", (e, h), optional=True)}
    if store.has(base + "gate_proj.weight") or store.has(base + "gate_proj"):
        sfx = ".weight" if store.has(base + "gate_proj.weight") else ""
        gate = store.get(base + "gate_proj" + sfx, (e, i, h))
        up = store.get(base + "up_proj" + sfx, (e, i, h))
        down = store.get(base + "down_proj" + sfx, (e, h, i))
    else:  # per-expert tensors
        gate = np.stack([store.get(f"{base}{j}.gate_proj.weight", (i, h)) for j in range(e)])
        up = np.stack([store.get(f"{base}{j}.up_proj.weight", (i, h)) for j in range(e)])
        down = np.stack([store.get(f"{base}{j}.down_proj.weight", (h, i)) for j in range(e)])
    return {"gate_up": np.concatenate([gate, up], axis=1), "down": down, "gate_up_bias": None, "down_bias": None}


_LAYER_RE = re.compile(r"^layers\.(\d+)\.")


# Tensors a text model legitimately leaves unused: multimodal towers, cached RoPE tables, quantization metadata
# that other parts of impnb read (W4A4 input scales, KV-cache scales), multi-token-prediction heads (Qwen3.5 mtp.*).
_IGNORABLE = re.compile(r"^(vision_tower|vision_model|multi_modal_projector|audio_tower|embed_vision|embed_audio|"
                        r"mm_|visual\.|mtp\.)|rotary_emb\.inv_freq$|(input_global_scale|input_scale|[kv]_scale)$")


def unexpected(names: list[str]) -> list[str]:
    """The unused tensor names that are not known to be ignorable (the model warns about these)."""
    return [n for n in names if not _IGNORABLE.search(n)]


def load_ple(store: WeightStore, config) -> dict | None:
    """Gemma-4 per-layer input embeddings: table [V, L*P], model projection [L*P, H], projection norm [P]."""
    if not config.ple_dim:
        return None
    width = config.n_layers * config.ple_dim
    return {"table": store.get("embed_tokens_per_layer.weight", (config.vocab_size, width)),
            "proj": store.get("per_layer_model_projection.weight", (width, config.hidden_size)),
            "norm": store.get("per_layer_projection_norm.weight", (config.ple_dim,))}


def check_layer_count(store: WeightStore, config) -> None:
    """Refuse a checkpoint whose layer tensors go past config.n_layers (a config/weights mismatch)."""
    found = {int(m.group(1)) for n in store.raw if (m := _LAYER_RE.match(n))}
    if found and max(found) >= config.n_layers:
        raise FormatError(f"checkpoint has tensors for layer {max(found)} but the config says "
                          f"{config.n_layers} layers")


def layer_rope(lc, freq_factors):
    """The RoPE config a layer runs: GGUF's ``rope_freqs`` (llama3 frequency factors) apply to full-attention
    layers whose config has none of its own. One rule for both backends (impnb.model and the CUDA engine)."""
    rope = lc.rope
    if freq_factors is not None and rope.freq_factors is None and lc.kind == "full":
        from dataclasses import replace
        rope = replace(rope, freq_factors=tuple(float(f) for f in np.asarray(freq_factors).reshape(-1)))
    return rope
