"""The one validation layer for model metadata: every field is checked for type and range here, once, before
anything is allocated or compiled; then the built ModelConfig is checked for its cross-field rules, and against the
checkpoint's tensor shapes.

    check_hf(raw, source, mrope_text)  config.json dict -> a copy whose known fields have their type and range
    check_gguf(meta, arch, source)   GGUF metadata: every ``<arch>.*`` key the builder reads, and the token ids
    check_model(config, source)      a built ModelConfig: rotary dim <= head dim, RoPE frequencies finite,
                                     top-k <= experts, token ids < vocab, ... (returns it)
    check_tensor_shapes(config, shapes, source)   vocab / hidden / heads x head_dim / layers / experts against
                                     the shapes of the tensors (no tensor is read)

The fields, cross-field rules and tensor shapes of the hybrid linear-attention architectures are in the companion
module impnb/config_validate_hybrid.py (check_model and check_tensor_shapes call it for those models).

A violation raises ``impnb.ConfigError`` (a FormatError) naming the file, the field, the value and the rule. A value
that is well-formed but names something impnb does not implement (an activation, a RoPE type) is
``impnb.Unsupported``. The limits below are far above every released model and low enough that nothing sized by
them can exhaust memory; the exact sizes come from the tensors (check_tensor_shapes).
"""
from __future__ import annotations

import math
import re

import numpy as np

from .config_rules import Bool, Int, IntOrList, ListOf, Nullable, Num, Rule, Str  # noqa: F401  (re-exported)
from .errors import ConfigError, Unsupported

MAX_LAYERS = 1024          # Llama-3.1-405B has 126 layers
MAX_HIDDEN = 1 << 17       # the widest released models use 16384-18432
MAX_HEADS = 1 << 12        # released models use at most 128 query heads
MAX_HEAD_DIM = 1 << 12     # Gemma-4 full layers use 512
MAX_VOCAB = 1 << 22        # Gemma-3 / Gemma-4 use 262144-262208
MAX_CONTEXT = 1 << 24      # a KV cache is sized by the request (prompt + new tokens), never by this alone
MIN_CONTEXT = 1            # tiny test checkpoints use small contexts; a prompt longer than it is ContextOverflow
MAX_FFN = 1 << 20          # the widest released FFN is 73728
MAX_EXPERTS = 1 << 12      # the most released is 384
MAX_ANGLE = 1e30           # float32(position) x inv_freq must stay finite for every position of the context
MAX_SCALE = 1e3            # attention / RoPE scaling factors: released models use 0.04..1.4; larger overflow float32
SUPPORTED_ROPE_TYPES = ("default", "linear", "llama3", "yarn", "proportional", "gemma4_proportional")
KNOWN_UNSUPPORTED_ROPE_TYPES = ("dynamic", "longrope", "su", "mrope", "deepseek_yarn", "ntk")
TEXT_MROPE_TYPES = ("mrope", "default_mrope")  # multi-section RoPE: plain RoPE for text positions (config_hybrid)


POSITIVE = Num(0.0)
NONNEGATIVE = Num(0.0, open_lo=False)
EPS = Num(1e-30, 1.0, open_lo=False)         # RMSNorm epsilon: 0, NaN or a float32 underflow divides a zero row by 0
THETA = Num(0.0)                             # RoPE base; the frequencies are checked again in check_model
RATIO = Num(0.0, 1.0)                        # partial_rotary_factor in (0, 1]
LAYER_TYPES = ListOf(Str(), MAX_LAYERS)
TOKEN_ID = Int(0, MAX_VOCAB)

ROPE_FIELDS = {
    "rope_type": Str(), "type": Str(), "rope_theta": THETA, "factor": POSITIVE, "partial_rotary_factor": RATIO,
    "low_freq_factor": POSITIVE, "high_freq_factor": POSITIVE, "original_max_position_embeddings":
    Int(1, MAX_CONTEXT), "beta_fast": POSITIVE, "beta_slow": POSITIVE, "truncate": Bool(),
    "attention_factor": POSITIVE, "mscale": NONNEGATIVE, "mscale_all_dim": NONNEGATIVE,
}

HF_FIELDS = {
    "model_type": Str(), "vocab_size": Int(1, MAX_VOCAB), "hidden_size": Int(1, MAX_HIDDEN),
    "intermediate_size": Int(0, MAX_FFN), "num_hidden_layers": Int(1, MAX_LAYERS),
    "num_attention_heads": Int(1, MAX_HEADS), "num_key_value_heads": Int(1, MAX_HEADS),
    "head_dim": Int(1, MAX_HEAD_DIM), "global_head_dim": Int(1, MAX_HEAD_DIM),
    "num_global_key_value_heads": Int(1, MAX_HEADS), "rms_norm_eps": EPS,
    "max_position_embeddings": Int(MIN_CONTEXT, MAX_CONTEXT), "rope_theta": THETA, "rope_local_base_freq": THETA,
    "partial_rotary_factor": RATIO, "sliding_window": Nullable(Int(1, MAX_CONTEXT)),
    "sliding_window_pattern": Int(1, MAX_LAYERS), "max_window_layers": Int(0, MAX_CONTEXT),
    "use_sliding_window": Bool(), "tie_word_embeddings": Bool(), "hidden_act": Str(), "hidden_activation": Str(),
    "query_pre_attn_scalar": POSITIVE, "final_logit_softcapping": Nullable(POSITIVE),
    "attn_logit_softcapping": Nullable(POSITIVE), "num_experts": Int(0, MAX_EXPERTS),
    "num_local_experts": Int(1, MAX_EXPERTS), "num_experts_per_tok": Int(1, MAX_EXPERTS),
    "top_k_experts": Int(1, MAX_EXPERTS), "moe_intermediate_size": Int(1, MAX_FFN), "norm_topk_prob": Bool(),
    "decoder_sparse_step": Int(1, MAX_LAYERS), "mlp_only_layers": ListOf(Int(0, MAX_LAYERS), MAX_LAYERS),
    "layer_types": LAYER_TYPES, "bos_token_id": Nullable(TOKEN_ID),
    "eos_token_id": Nullable(IntOrList(TOKEN_ID, 64)), "swiglu_limit": POSITIVE, "swiglu_alpha": POSITIVE,
    "attention_k_eq_v": Bool(), "enable_moe_block": Bool(), "hidden_size_per_layer_input": Int(0, MAX_HIDDEN),
    "vocab_size_per_layer_input": Int(1, MAX_VOCAB), "num_kv_shared_layers": Int(0, MAX_LAYERS),
    "use_double_wide_mlp": Bool(),
}


# ------------------------------------------------------------------------------------------------------ HF
def check_hf(raw: dict, source: str, mrope_text: bool = False) -> dict:
    """A copy of a config.json dict with every known field type- and range-checked (nested RoPE dicts and
    Gemma-4 per_layer_config too). Unknown keys pass through untouched: the builders never read them.
    ``mrope_text``: the architecture reads a multi-section RoPE type as plain RoPE (TEXT_MROPE_TYPES)."""
    if not isinstance(raw, dict):
        raise ConfigError(source, "<top level>", type(raw).__name__, "must be a JSON object")
    out = dict(raw)
    for key, rule in HF_FIELDS.items():
        if out.get(key) is not None:
            out[key] = rule.check(out[key], source, key)
    for key in ("rope_scaling", "rope_parameters"):
        if out.get(key) is not None:
            out[key] = _check_rope_block(out[key], source, key, mrope_text)
    if out.get("per_layer_config") is not None:
        out["per_layer_config"] = _check_per_layer(out["per_layer_config"], source)
    _check_divides(out, "num_key_value_heads", "num_attention_heads", source)
    for experts in ("num_experts", "num_local_experts"):
        _check_at_most(out, "num_experts_per_tok", experts, source)
    _check_at_most(out, "top_k_experts", "num_experts", source)
    return out


def _check_divides(d: dict, small: str, big: str, source: str) -> None:
    if isinstance(d.get(small), int) and isinstance(d.get(big), int) and d[big] % d[small]:
        raise ConfigError(source, small, d[small], f"must divide {big} = {d[big]}")


def _check_at_most(d: dict, small: str, big: str, source: str) -> None:
    if isinstance(d.get(small), int) and isinstance(d.get(big), int) and d[big] and d[small] > d[big]:
        raise ConfigError(source, small, d[small], f"must be at most {big} = {d[big]}")


def _check_rope_block(block, source: str, name: str, mrope_text: bool) -> dict:
    """A flat RoPE dict, or (transformers 5) one dict per layer type."""
    if not isinstance(block, dict):
        raise ConfigError(source, name, block, "must be an object")
    if block and all(isinstance(v, dict) for v in block.values()):
        return {k: check_rope_fields(v, source, f"{name}.{k}", mrope_text) for k, v in block.items()}
    return check_rope_fields(block, source, name, mrope_text)


def check_rope_fields(params: dict, source: str, name: str, mrope_text: bool = False) -> dict:
    out = dict(params)
    for key, rule in ROPE_FIELDS.items():
        if out.get(key) is not None:
            out[key] = rule.check(out[key], source, f"{name}.{key}")
    for key in ("rope_type", "type"):
        kind = out.get(key)
        if kind is not None and kind not in SUPPORTED_ROPE_TYPES and not (mrope_text and kind in TEXT_MROPE_TYPES):
            if kind in KNOWN_UNSUPPORTED_ROPE_TYPES:
                raise Unsupported(f"{source}: {name}.{key} = {kind!r}: RoPE type not supported "
                                  f"(supported: {', '.join(SUPPORTED_ROPE_TYPES)})")
            raise ConfigError(source, f"{name}.{key}", kind, f"must be one of {', '.join(SUPPORTED_ROPE_TYPES)}")
    return out


_PER_LAYER_FIELDS = {"head_dim": Int(1, MAX_HEAD_DIM), "num_key_value_heads": Int(1, MAX_HEADS),
                     "num_attention_heads": Int(1, MAX_HEADS), "intermediate_size": Int(0, MAX_FFN)}


def _check_per_layer(plc, source: str) -> dict:
    if not isinstance(plc, dict) or len(plc) > MAX_LAYERS:
        raise ConfigError(source, "per_layer_config", plc, f"must be an object of at most {MAX_LAYERS} layers")
    out = {}
    for key, overrides in plc.items():
        if not isinstance(overrides, dict):
            raise ConfigError(source, f"per_layer_config.{key}", overrides, "must be an object")
        out[key] = {k: _PER_LAYER_FIELDS[k].check(v, source, f"per_layer_config.{key}.{k}")
                    if k in _PER_LAYER_FIELDS else v for k, v in overrides.items()}
    return out


# ------------------------------------------------------------------------------------------------------ GGUF
_PER_LAYER_INT = lambda lo, hi: IntOrList(Int(lo, hi), MAX_LAYERS)  # noqa: E731
GGUF_FIELDS = {
    "block_count": Int(1, MAX_LAYERS), "embedding_length": Int(1, MAX_HIDDEN), "vocab_size": Int(1, MAX_VOCAB),
    "context_length": Int(MIN_CONTEXT, MAX_CONTEXT), "feed_forward_length": _PER_LAYER_INT(0, MAX_FFN),
    "attention.head_count": _PER_LAYER_INT(1, MAX_HEADS), "attention.head_count_kv": _PER_LAYER_INT(1, MAX_HEADS),
    "attention.key_length": Int(1, MAX_HEAD_DIM), "attention.value_length": Int(1, MAX_HEAD_DIM),
    "attention.layer_norm_rms_epsilon": EPS, "attention.sliding_window": Int(0, MAX_CONTEXT),
    "rope.freq_base": THETA, "rope.dimension_count": Int(1, MAX_HEAD_DIM), "rope.scaling.type": Str(),
    "rope.scaling.factor": POSITIVE, "rope.scaling.original_context_length": Int(1, MAX_CONTEXT),
    "rope.scaling.yarn_beta_fast": POSITIVE, "rope.scaling.yarn_beta_slow": POSITIVE,
    "expert_count": Int(1, MAX_EXPERTS), "expert_used_count": Int(1, MAX_EXPERTS),
    "expert_feed_forward_length": Int(1, MAX_FFN), "expert_weights_norm": Bool(),
    "final_logit_softcapping": POSITIVE, "swiglu_limit": POSITIVE,
}
GGUF_TOKEN_IDS = ("bos_token_id", "eos_token_id", "eot_token_id", "eom_token_id", "padding_token_id",
                  "unknown_token_id")


def check_gguf(meta: dict, arch: str, source: str) -> dict:
    """A copy of the metadata with every key the builder reads checked (one-element arrays unwrapped)."""
    out = dict(meta)
    for suffix, rule in GGUF_FIELDS.items():
        key = f"{arch}.{suffix}"
        if meta.get(key) is not None:
            out[key] = rule.check(_unwrap(meta[key]), source, key)
    for suffix in GGUF_TOKEN_IDS:
        key = f"tokenizer.ggml.{suffix}"
        if meta.get(key) is not None:
            out[key] = TOKEN_ID.check(_unwrap(meta[key]), source, key)
    _check_at_most(out, f"{arch}.expert_used_count", f"{arch}.expert_count", source)
    heads = _as_list(out.get(f"{arch}.attention.head_count"))
    kv = _as_list(out.get(f"{arch}.attention.head_count_kv"))
    for i in range(max(len(heads), len(kv))):
        h, k = heads[min(i, len(heads) - 1)], kv[min(i, len(kv) - 1)]
        if isinstance(h, int) and isinstance(k, int) and h % k:
            raise ConfigError(source, f"{arch}.attention.head_count_kv", k, f"must divide head_count {h} (layer {i})")
    tokens = meta.get("tokenizer.ggml.tokens")
    if tokens is not None and (not isinstance(tokens, list) or len(tokens) > MAX_VOCAB):
        raise ConfigError(source, "tokenizer.ggml.tokens", f"<{type(tokens).__name__}>",
                          f"must be a list of at most {MAX_VOCAB} strings")
    return out


def _as_list(value) -> list:
    return value if isinstance(value, list) and value else [value]


def _unwrap(value):
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, (bytes, bytearray)):
        value = value.decode("utf-8", "replace")
    if isinstance(value, list) and len(value) == 1 and not isinstance(value[0], (str, list)):
        return value[0]
    return value


# ------------------------------------------------------------------------------------------------------ model
def check_model(config, source: str):
    """Cross-field rules of a built ModelConfig (see the module docstring); returns ``config`` (with special-token
    ids outside the vocabulary dropped)."""
    config = _special_ids_in_vocab(config, source)
    _check_globals(config, source)
    checked_ropes = set()
    for lc in config.layers:
        _check_layer(config, lc, source)
        key = (lc.rope, lc.head_dim)
        if key not in checked_ropes:
            checked_ropes.add(key)
            _check_rope(lc, config.max_position_embeddings, source)
    if config.moe is not None:
        _check_moe(config.moe, source)
    if config.linear_attention is not None:
        from .config_validate_hybrid import check_hybrid_model
        check_hybrid_model(config, source)
    return config


def _special_ids_in_vocab(c, source: str):
    """BOS / EOS ids outside [0, vocab_size) name no token of this model (small test checkpoints keep the ids of
    the model they were cut from; transformers loads them): they are dropped with a warning, never used."""
    bad = [t for t in (c.bos_token_id, *c.eos_token_ids) if t is not None and not 0 <= t < c.vocab_size]
    if not bad:
        return c
    import warnings
    from dataclasses import replace
    warnings.warn(f"{source}: special-token ids {bad} are outside the vocabulary of {c.vocab_size} tokens and are "
                  f"ignored", stacklevel=3)
    eos = tuple(t for t in c.eos_token_ids if 0 <= t < c.vocab_size)
    bos = c.bos_token_id if c.bos_token_id is None or 0 <= c.bos_token_id < c.vocab_size else None
    return replace(c, bos_token_id=bos, eos_token_ids=eos)


def _check_globals(c, source) -> None:
    EPS.check(c.rms_eps, source, "rms_norm_eps")
    POSITIVE.check(c.embedding_scale, source, "embedding_scale")
    for name in ("final_softcap", "attn_softcap"):
        Nullable(POSITIVE).check(getattr(c, name), source, name)
    if c.qk_norm_dim is not None and any(lc.head_dim % c.qk_norm_dim for lc in c.layers):
        raise ConfigError(source, "qk_norm_dim", c.qk_norm_dim, "must divide every layer's head_dim")


def _check_layer(c, lc, source) -> None:
    where = f"layer {lc.index}"
    if lc.head_dim < 1 or lc.head_dim > MAX_HEAD_DIM:
        raise ConfigError(source, f"{where} head_dim", lc.head_dim,
                          f"must be in [1, {MAX_HEAD_DIM}] (hidden_size // num_attention_heads when not given)")
    if lc.n_heads % lc.n_kv_heads:
        raise ConfigError(source, f"{where} num_key_value_heads", lc.n_kv_heads,
                          f"must divide num_attention_heads {lc.n_heads}")
    Num(0.0, MAX_SCALE).check(lc.scale, source, f"{where} attention scale (from head_dim or query_pre_attn_scalar)")
    if lc.kind == "sliding" and not 1 <= lc.window <= MAX_CONTEXT:  # above the context: every key is visible
        raise ConfigError(source, f"{where} sliding_window", lc.window, f"must be in [1, {MAX_CONTEXT}]")
    if lc.kv_source is not None and not 0 <= lc.kv_source < lc.index:
        raise ConfigError(source, f"{where} kv_source", lc.kv_source, "must be an earlier layer")


def _check_rope(lc, context: int, source) -> None:
    """The frequencies this layer will use: rotary dim within the head, every inv_freq finite and >= 0, every angle
    float32(position) x inv_freq finite up to the context, the attention scaling finite and > 0."""
    from .reference.rope import rope_inv_freq
    rope, where = lc.rope, f"layer {lc.index} rope"
    rotary = lc.rotary_dim
    if rope.kind != "proportional" and not 2 <= 2 * ((rotary + 1) // 2) <= lc.head_dim:
        raise ConfigError(source, f"{where} partial_rotary_factor", rope.partial_rotary_factor,
                          f"gives rotary dim {rotary}; it must be in [2, head_dim {lc.head_dim}]")
    try:
        with np.errstate(all="ignore"):
            inv, scaling = rope_inv_freq(rope, lc.head_dim, context)
            worst = float(np.max(inv, initial=0.0)) * float(context)
    except (ValueError, ZeroDivisionError, OverflowError, FloatingPointError) as exc:
        raise ConfigError(source, where, _rope_summary(rope), f"cannot give RoPE frequencies ({exc})") from None
    if not (np.all(np.isfinite(inv)) and np.all(inv >= 0) and worst < MAX_ANGLE):
        raise ConfigError(source, where, _rope_summary(rope),
                          "gives non-finite, negative or overflowing RoPE frequencies")
    if not (math.isfinite(scaling) and 0 < scaling <= MAX_SCALE):
        raise ConfigError(source, f"{where} attention_scaling", scaling, f"must be a finite number in (0, {MAX_SCALE:g}]")


def _rope_summary(rope) -> str:
    return f"{rope.kind} theta={rope.theta} factor={rope.factor}"


def _check_moe(moe, source) -> None:
    Int(1, MAX_EXPERTS).check(moe.n_experts, source, "num_experts")
    if not 1 <= moe.top_k <= moe.n_experts:
        raise ConfigError(source, "num_experts_per_tok", moe.top_k, f"must be in [1, num_experts {moe.n_experts}]")
    Int(1, MAX_FFN).check(moe.intermediate_size, source, "moe_intermediate_size")
    for name in ("swiglu_alpha", "routed_scaling_factor"):
        POSITIVE.check(getattr(moe, name), source, name)
    Nullable(POSITIVE).check(moe.swiglu_limit, source, "swiglu_limit")


# ------------------------------------------------------------------------------------------------------ tensors
_LAYER_RE = re.compile(r"^layers\.(\d+)\.")


def check_tensor_shapes(config, shapes: dict, source: str) -> None:
    """The config against the tensors: ``shapes`` maps canonical names (no ``model.`` prefix: impnb.model.weights
    .canonical) to shape tuples. Only tensors present are compared; a missing one is the model's error."""
    h, v = config.hidden_size, config.vocab_size
    _expect(shapes, "embed_tokens.weight", (v, h), source, "vocab_size x hidden_size")
    _expect(shapes, "lm_head.weight", (v, h), source, "vocab_size x hidden_size")
    _expect(shapes, "norm.weight", (h,), source, "hidden_size")
    found = {int(m.group(1)) for name in shapes if (m := _LAYER_RE.match(name))}
    if found and (max(found) + 1 != config.n_layers or len(found) != config.n_layers):
        raise ConfigError(source, "num_hidden_layers", config.n_layers,
                          f"must equal the layers the tensors hold ({len(found)}, indices up to {max(found)})")
    if config.linear_attention is not None:
        from .config_validate_hybrid import check_hybrid_shapes
        check_hybrid_shapes(config, shapes, source)
        return
    for lc in config.layers:
        _check_layer_shapes(config, lc, shapes, source)


def _check_layer_shapes(config, lc, shapes, source) -> None:
    p, h = f"layers.{lc.index}.", config.hidden_size
    q_rows, kv_rows = lc.n_heads * lc.head_dim, lc.n_kv_heads * lc.head_dim
    geometry = f"heads x head_dim ({lc.n_heads} x {lc.head_dim}), hidden_size {h}"
    _expect(shapes, p + "input_layernorm.weight", (h,), source, "hidden_size")
    _expect(shapes, p + "self_attn.q_proj.weight", (q_rows, h), source, geometry)
    _expect(shapes, p + "self_attn.o_proj.weight", (h, q_rows), source, geometry)
    if lc.kv_source is None:
        kv_geometry = f"kv heads x head_dim ({lc.n_kv_heads} x {lc.head_dim}), hidden_size {h}"
        _expect(shapes, p + "self_attn.k_proj.weight", (kv_rows, h), source, kv_geometry)
        _expect(shapes, p + "self_attn.v_proj.weight", (kv_rows, h), source, kv_geometry)
    dense_mlp = not lc.moe or (config.moe is not None and config.moe.parallel_dense_mlp)
    if dense_mlp and lc.intermediate_size:
        width = f"intermediate_size {lc.intermediate_size}, hidden_size {h}"
        _expect(shapes, p + "mlp.gate_proj.weight", (lc.intermediate_size, h), source, width)
        _expect(shapes, p + "mlp.down_proj.weight", (h, lc.intermediate_size), source, width)
    if config.moe is not None and lc.moe:
        for router in ("mlp.gate.weight", "mlp.router.weight", "router.proj.weight"):
            _expect(shapes, p + router, (config.moe.n_experts, h), source, "num_experts x hidden_size")


def _expect(shapes, name, expected, source, rule) -> None:
    got = shapes.get(name)
    if got is not None and tuple(got) != tuple(expected):
        raise ConfigError(source, f"the dimensions of {name}", tuple(got),
                          f"must be {tuple(expected)} from the config's {rule}")
