"""Per-architecture ModelConfig builders: an HF config.json dict -> the keyword arguments of impnb.config.ModelConfig.

Defaults are transformers 5.23's configuration classes (``LlamaConfig()``, ``Gemma3TextConfig()``, ...), so a
config.json that omits a field means what it means to transformers. Old-style RoPE keys (``rope_theta`` +
``rope_scaling``, Gemma-3 ``rope_local_base_freq``) and the transformers-5 ``rope_parameters`` dict (flat, or
per layer type) are both accepted. Every field is type- and range-checked by impnb/config_validate.py (check_hf)
before a builder reads it; what a builder still refuses is a combination of fields (layer_types of the wrong
length, KV sharing without a producer), as a ConfigError naming the file.
"""
from __future__ import annotations

import math

import numpy as np

from .config_types import HF_ARCHS, LayerConfig, MoEConfig, RopeConfig, unsupported_architecture as unsupported
from .config_validate import Str, check_hf
from .errors import ConfigError, Unsupported, UnsupportedArchitecture

__all__ = ["HF_ARCHS", "build_from_hf"]
_WRAPPERS = {"gemma3": "gemma3_text", "gemma4": "gemma4_text"}  # multimodal model_type -> its text_config type
_HF_ARCH_CLASSES = {
    "LlamaForCausalLM": "llama", "MistralForCausalLM": "mistral", "Qwen2ForCausalLM": "qwen2",
    "Qwen3ForCausalLM": "qwen3", "Qwen3MoeForCausalLM": "qwen3_moe", "Gemma3ForCausalLM": "gemma3_text",
    "Gemma3ForConditionalGeneration": "gemma3", "Gemma4ForCausalLM": "gemma4_text",
    "Gemma4ForConditionalGeneration": "gemma4", "GptOssForCausalLM": "gpt_oss",
}


# ---- HF ---------------------------------------------------------------------------------------------------------
def build_from_hf(config: dict, source: str = "config.json") -> dict:
    """The ModelConfig keyword arguments of a config.json dict (multimodal wrappers: the ``text_config``)."""
    if not isinstance(config, dict):
        raise ConfigError(source, "<top level>", type(config).__name__, "must be a JSON object")
    model_type = _model_type(config, source)
    if model_type in _WRAPPERS:
        text = config.get("text_config") or {}
        if not isinstance(text, dict):
            raise ConfigError(source, "text_config", text, "must be an object")
        text = dict(text)
        text.setdefault("model_type", _WRAPPERS[model_type])
        if "tie_word_embeddings" in config and "tie_word_embeddings" not in text:
            text["tie_word_embeddings"] = config["tie_word_embeddings"]
        if text["model_type"] in _WRAPPERS:
            raise ConfigError(source, "text_config.model_type", text["model_type"], "must be a text model type")
        return build_from_hf(text, f"{source} (text_config)")
    builder = _HF_BUILDERS.get(model_type)
    if builder is None:
        raise unsupported(model_type)
    return builder(check_hf(config, source, mrope_text=model_type in _MROPE_TEXT), source)


def _model_type(config: dict, source: str) -> str:
    """model_type, else the one of the first ``architectures`` class."""
    model_type = config.get("model_type")
    if model_type is None:
        archs = config.get("architectures")
        arch = archs[0] if isinstance(archs, list) and archs and isinstance(archs[0], str) else None
        model_type = _HF_ARCH_CLASSES.get(arch)
        if model_type is None:
            raise unsupported(arch or "<config.json without model_type or architectures>")
    return Str().check(model_type, source, "model_type")


def _g(cfg: dict, key: str, default):
    value = cfg.get(key)
    return default if value is None else value


def _rope_from_params(params: dict, default_theta: float) -> RopeConfig:
    kind = params.get("rope_type") or params.get("type") or "default"
    kind = {"gemma4_proportional": "proportional"}.get(kind, kind)
    keys = ("factor", "partial_rotary_factor", "low_freq_factor", "high_freq_factor",
            "original_max_position_embeddings", "beta_fast", "beta_slow", "truncate", "attention_factor",
            "mscale", "mscale_all_dim")
    kwargs = {k: params[k] for k in keys if params.get(k) is not None}
    return RopeConfig(theta=float(_g(params, "rope_theta", default_theta)), kind=kind, **kwargs)


def _rope_params(cfg: dict, layer_type: str | None, default_theta: float) -> RopeConfig:
    """The RoPE of a layer type from either config style."""
    params = cfg.get("rope_parameters")
    if isinstance(params, dict) and layer_type in params and isinstance(params[layer_type], dict):
        params = dict(params[layer_type])
    elif isinstance(params, dict) and ("rope_type" in params or "rope_theta" in params):
        params = dict(params)
    else:
        params = dict(cfg.get("rope_scaling") or {})
        params.setdefault("rope_theta", cfg.get("rope_theta", default_theta))
    if "partial_rotary_factor" in cfg and "partial_rotary_factor" not in params:
        params["partial_rotary_factor"] = cfg["partial_rotary_factor"]
    return _rope_from_params(params, default_theta)


def _eos(cfg: dict) -> tuple:
    eos = cfg.get("eos_token_id")
    if eos is None:
        return ()
    return tuple(int(e) for e in (eos if isinstance(eos, (list, tuple)) else [eos]))


_NULLABLE = ("sliding_window", "final_logit_softcapping", "attn_logit_softcapping")  # an explicit null means "off"


def _common(cfg: dict, defaults: dict, source: str) -> dict:
    d = {**defaults, **{k: v for k, v in cfg.items() if v is not None or k in _NULLABLE}}
    d["head_dim"] = d.get("head_dim") or d["hidden_size"] // d["num_attention_heads"]
    if d["head_dim"] < 1:
        raise ConfigError(source, "num_attention_heads", d["num_attention_heads"],
                          f"must not exceed hidden_size {d['hidden_size']} when head_dim is not given")
    d["num_key_value_heads"] = d.get("num_key_value_heads") or d["num_attention_heads"]
    d["_source"] = source
    return d


def _required(d: dict, *keys: str, why: str) -> None:
    for key in keys:
        if d.get(key) is None:
            raise ConfigError(d["_source"], key, None, f"is required {why}")


def _layer(d: dict, i: int, kind: str, rope: RopeConfig, *, scale=None, head_dim=None, n_kv=None, **kw):
    head_dim = head_dim or d["head_dim"]
    return LayerConfig(index=i, kind=kind, window=d.get("sliding_window") if kind == "sliding" else None,
                       head_dim=head_dim, n_heads=d["num_attention_heads"],
                       n_kv_heads=n_kv or d["num_key_value_heads"],
                       scale=float(scale if scale is not None else head_dim ** -0.5), rope=rope,
                       intermediate_size=d.get("intermediate_size") or 0, **kw)


def _layer_kinds(d: dict, default_types) -> list[str]:
    types = d.get("layer_types") or default_types
    out = []
    for t in types:
        if t not in ("sliding_attention", "full_attention"):
            raise Unsupported(f"{d['_source']}: layer_types entry {str(t)[:40]!r} is not supported (expected "
                              f"sliding_attention / full_attention)")
        out.append("sliding" if t == "sliding_attention" else "full")
    if len(out) != d["num_hidden_layers"]:
        raise ConfigError(d["_source"], "layer_types", f"<{len(out)} entries>",
                          f"must have one entry per layer (num_hidden_layers = {d['num_hidden_layers']})")
    return out


def _model(arch: str, d: dict, layers: list[LayerConfig], **kw) -> dict:
    return dict(arch=arch, vocab_size=int(d["vocab_size"]), hidden_size=int(d["hidden_size"]),
                n_layers=int(d["num_hidden_layers"]), layers=tuple(layers), rms_eps=float(d["rms_norm_eps"]),
                tie_embeddings=bool(d.get("tie_word_embeddings", False)),
                max_position_embeddings=int(d["max_position_embeddings"]),
                bos_token_id=d.get("bos_token_id"), eos_token_ids=_eos(d), source="hf", **kw)


def _act(name: str, d: dict) -> str:
    table = {"silu": "silu", "swish": "silu", "gelu_pytorch_tanh": "gelu_tanh", "gelu_tanh": "gelu_tanh",
             "gelu_new": "gelu_tanh"}
    if name not in table:
        raise Unsupported(f"{d['_source']}: activation {str(name)[:40]!r} is not supported; supported: "
                          f"{sorted(table)}")
    return table[name]


_LLAMA = dict(vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
              num_attention_heads=32, rms_norm_eps=1e-6, max_position_embeddings=2048, hidden_act="silu",
              tie_word_embeddings=False)


def _llama_like(arch: str, defaults: dict, *, qk_norm=False, sliding=None):
    def build(cfg: dict, source: str) -> dict:
        d = _common(cfg, defaults, source)
        rope = _rope_params(d, None, 10000.0)
        kinds = sliding(d) if sliding else ["full"] * d["num_hidden_layers"]
        layers = [_layer(d, i, k, rope) for i, k in enumerate(kinds)]
        return _model(arch, d, layers, activation=_act(d["hidden_act"], d), qk_norm=qk_norm)
    return build


def _mistral_kinds(d):
    return ["sliding" if d.get("sliding_window") else "full"] * d["num_hidden_layers"]


def _qwen_kinds(d):
    if not d.get("use_sliding_window") or not d.get("sliding_window"):
        return ["full"] * d["num_hidden_layers"]
    default = ["sliding_attention" if i >= d.get("max_window_layers", 28) else "full_attention"
               for i in range(d["num_hidden_layers"])]
    return _layer_kinds(d, default)


_QWEN = dict(_LLAMA, vocab_size=151936, intermediate_size=22016, max_position_embeddings=32768)


def _qwen3_moe(cfg: dict, source: str) -> dict:
    if cfg.get("num_experts") is None and cfg.get("num_local_experts") is not None:  # transformers-5 spelling
        cfg = {**cfg, "num_experts": cfg["num_local_experts"]}
    d = _common(cfg, dict(_QWEN, hidden_size=2048, intermediate_size=6144, num_hidden_layers=24,
                          num_key_value_heads=4, num_experts=128, num_experts_per_tok=8, moe_intermediate_size=768,
                          norm_topk_prob=False, decoder_sparse_step=1, mlp_only_layers=[]), source)
    rope = _rope_params(d, None, 10000.0)
    kinds = _qwen_kinds(d)
    step, dense_only = int(d["decoder_sparse_step"]), set(d.get("mlp_only_layers") or [])
    layers = [_layer(d, i, k, rope, moe=(i not in dense_only and d["num_experts"] > 0 and (i + 1) % step == 0))
              for i, k in enumerate(kinds)]
    moe = MoEConfig(n_experts=int(d["num_experts"]), top_k=int(d["num_experts_per_tok"]),
                    intermediate_size=int(d["moe_intermediate_size"]), gating="softmax",
                    renormalize=bool(d["norm_topk_prob"]), activation=_act(d["hidden_act"], d))
    return _model("qwen3_moe", d, layers, activation=_act(d["hidden_act"], d), qk_norm=True, moe=moe)


_GEMMA3 = dict(vocab_size=262208, hidden_size=2304, intermediate_size=9216, num_hidden_layers=26,
               num_attention_heads=8, num_key_value_heads=4, head_dim=256, rms_norm_eps=1e-6,
               max_position_embeddings=131072, hidden_activation="gelu_pytorch_tanh", query_pre_attn_scalar=256,
               sliding_window=4096, tie_word_embeddings=True)


def _gemma_pattern(n: int, period: int) -> list[str]:
    return ["sliding_attention" if (i + 1) % period else "full_attention" for i in range(n)]


def _gemma3(cfg: dict, source: str) -> dict:
    d = _common(cfg, _GEMMA3, source)
    if d.get("use_bidirectional_attention"):
        raise UnsupportedArchitecture(f"{source}: gemma3 with use_bidirectional_attention is an encoder "
                                      f"(EmbeddingGemma), not a causal LM")
    kinds = _layer_kinds(d, _gemma_pattern(d["num_hidden_layers"], int(d.get("sliding_window_pattern", 6))))
    ropes = _gemma3_ropes(d)
    scale = float(d["query_pre_attn_scalar"]) ** -0.5
    layers = [_layer(d, i, k, ropes[k], scale=scale) for i, k in enumerate(kinds)]
    return _model("gemma3_text", d, layers, activation=_act(d["hidden_activation"], d), norm_offset=1.0,
                  embedding_scale=float(np.float32(math.sqrt(d["hidden_size"]))), qk_norm=True,
                  sandwich_norms=True, final_softcap=d.get("final_logit_softcapping"),
                  attn_softcap=None)  # Gemma3Attention never passes attn_logit_softcapping on (transformers 5.23)


def _gemma3_ropes(d: dict) -> dict:
    params = d.get("rope_parameters")
    if isinstance(params, dict) and "full_attention" in params:
        return {"sliding": _rope_params(d, "sliding_attention", 10000.0),
                "full": _rope_params(d, "full_attention", 1e6)}
    full = dict(d.get("rope_scaling") or {})
    full.setdefault("rope_theta", d.get("rope_theta", 1e6))
    local = {"rope_theta": d.get("rope_local_base_freq", 10000.0)}
    return {"sliding": _rope_from_params(local, 10000.0), "full": _rope_from_params(full, 1e6)}


_GEMMA4 = dict(vocab_size=262144, hidden_size=2304, intermediate_size=9216, num_hidden_layers=30,
               num_attention_heads=8, num_key_value_heads=4, head_dim=256, rms_norm_eps=1e-6,
               max_position_embeddings=131072, hidden_activation="gelu_pytorch_tanh", sliding_window=512,
               tie_word_embeddings=True, global_head_dim=512, attention_k_eq_v=False, enable_moe_block=False,
               hidden_size_per_layer_input=256, num_kv_shared_layers=0)


def _gemma4(cfg: dict, source: str) -> dict:
    d = _common(cfg, _GEMMA4, source)
    if d.get("vocab_size_per_layer_input", d["vocab_size"]) != d["vocab_size"] and d["hidden_size_per_layer_input"]:
        raise Unsupported(f"{source}: gemma4 vocab_size_per_layer_input != vocab_size is not supported")
    if d.get("use_bidirectional_attention") == "all":
        raise UnsupportedArchitecture(f"{source}: gemma4 with use_bidirectional_attention='all' is not a causal LM")
    kinds = _layer_kinds(d, _gemma_pattern(d["num_hidden_layers"], int(d.get("sliding_window_pattern") or 6)))
    kinds[-1] = "full"  # transformers forces the last layer to full attention
    default_rope = {"sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
                    "full_attention": {"rope_type": "proportional", "partial_rotary_factor": 0.25,
                                       "rope_theta": 1e6}}
    params = d.get("rope_parameters") or default_rope
    if not all(isinstance(params.get(t), dict) for t in default_rope):
        raise ConfigError(source, "rope_parameters", f"<keys {sorted(params)[:4]}>",
                          "must hold a sliding_attention and a full_attention object (Gemma-4)")
    ropes = {"sliding": _rope_from_params(params["sliding_attention"], 10000.0),
             "full": _rope_from_params(params["full_attention"], 1e6)}
    k_eq_v = bool(d["attention_k_eq_v"])
    overrides = _gemma4_overrides(d, kinds, k_eq_v)
    sources = _gemma4_kv_sources(kinds, int(d["num_kv_shared_layers"]), source)
    layers = []
    for i, k in enumerate(kinds):
        o = dict(overrides.get(i, {}))
        if sources[i] is not None and d.get("use_double_wide_mlp"):
            o["intermediate_size"] = 2 * o.get("intermediate_size", d["intermediate_size"])
        layers.append(_layer({**d, **o}, i, k, ropes[k], scale=1.0, k_eq_v=k_eq_v and k == "full",
                             moe=bool(d["enable_moe_block"]), kv_source=sources[i]))
    moe = None
    if d["enable_moe_block"]:
        _required(d, "num_experts", "top_k_experts", "moe_intermediate_size", why="when enable_moe_block is true")
        moe = MoEConfig(n_experts=int(d["num_experts"]), top_k=int(d["top_k_experts"]),
                        intermediate_size=int(d["moe_intermediate_size"]), gating="softmax", renormalize=True,
                        router_input_norm=True, per_expert_scale=True, parallel_dense_mlp=True,
                        activation=_act(d["hidden_activation"], d))
    return _model("gemma4_text", d, layers, activation=_act(d["hidden_activation"], d), norm_offset=0.0,
                  embedding_scale=float(np.float32(math.sqrt(d["hidden_size"]))), qk_norm=True, v_norm=True,
                  sandwich_norms=True, layer_scalar=True, final_softcap=d.get("final_logit_softcapping"), moe=moe,
                  ple_dim=int(d["hidden_size_per_layer_input"] or 0))


def _gemma4_kv_sources(kinds: list[str], n_shared: int, source: str) -> list:
    """Gemma4TextConfig.kv_sharing_modes: the last n_shared layers compute no K/V; each reads the cache of the
    last earlier (non-shared) layer of its own type."""
    n = len(kinds)
    first_shared = n - n_shared
    if n_shared == 0:
        return [None] * n
    if first_shared <= 0:
        raise ConfigError(source, "num_kv_shared_layers", n_shared,
                          "leaves no layer computing K/V (at least one must)")
    producer = {k: max(i for i in range(first_shared) if kinds[i] == k) for k in set(kinds[:first_shared])}
    missing = set(kinds[first_shared:]) - set(producer)
    if missing:
        raise ConfigError(source, "num_kv_shared_layers", n_shared,
                          f"leaves no earlier layer of type {sorted(missing)} to produce a cache")
    return [None if i < first_shared else producer[kinds[i]] for i in range(n)]


def _gemma4_overrides(d: dict, kinds: list[str], k_eq_v: bool) -> dict:
    """Per-layer geometry: transformers-5.23 ``per_layer_config`` {layer: {head_dim, num_key_value_heads, ...}}
    (saved empty when no layer differs), else the released configs' ``global_head_dim`` /
    ``num_global_key_value_heads`` for every full layer (the kv override only when attention_k_eq_v, as
    Gemma4TextConfig.__post_init__ does)."""
    keys = ("head_dim", "num_key_value_heads", "num_attention_heads", "intermediate_size")
    plc = d.get("per_layer_config")
    if isinstance(plc, dict):  # present, even empty: transformers then applies no global_head_dim default
        out = {}
        for key, o in plc.items():
            if not str(key).isdigit() or not isinstance(o, dict):
                continue
            unknown = set(o) - set(keys)
            if unknown:
                raise Unsupported(f"{d['_source']}: gemma4 per_layer_config[{key}] overrides {sorted(unknown)[:8]}: "
                                  f"not supported")
            out[int(key)] = dict(o)
        return out
    full = {"head_dim": d["global_head_dim"]}
    if k_eq_v and d.get("num_global_key_value_heads"):
        full["num_key_value_heads"] = d["num_global_key_value_heads"]
    return {i: full for i, k in enumerate(kinds) if k == "full"}


_GPT_OSS = dict(vocab_size=201088, hidden_size=2880, intermediate_size=2880, num_hidden_layers=36,
                num_attention_heads=64, num_key_value_heads=8, head_dim=64, rms_norm_eps=1e-5,
                max_position_embeddings=131072, sliding_window=128, num_local_experts=128, num_experts_per_tok=4,
                swiglu_alpha=1.702, swiglu_limit=7.0, tie_word_embeddings=False, hidden_act="silu")
_GPT_OSS_ROPE = {"rope_type": "yarn", "factor": 32.0, "beta_fast": 32.0, "beta_slow": 1.0, "truncate": False,
                 "original_max_position_embeddings": 4096, "rope_theta": 150000.0}


def _gpt_oss(cfg: dict, source: str) -> dict:
    d = _common(cfg, _GPT_OSS, source)
    kinds = _layer_kinds(d, ["sliding_attention" if (i + 1) % 2 else "full_attention"
                             for i in range(d["num_hidden_layers"])])
    params = d.get("rope_parameters") or dict(d.get("rope_scaling") or _GPT_OSS_ROPE)
    params = {**params, "rope_theta": params.get("rope_theta", d.get("rope_theta", 150000.0))}
    rope = _rope_from_params(params, 150000.0)
    layers = [_layer(d, i, k, rope, sinks=True, moe=True) for i, k in enumerate(kinds)]
    moe = MoEConfig(n_experts=int(d["num_local_experts"]), top_k=int(d["num_experts_per_tok"]),
                    intermediate_size=int(d["intermediate_size"]), gating="topk_softmax", renormalize=False,
                    activation="swiglu_oai", swiglu_alpha=float(d["swiglu_alpha"]),
                    swiglu_limit=float(d["swiglu_limit"]), expert_bias=True)
    return _model("gpt_oss", d, layers, activation="silu", moe=moe)


_HF_BUILDERS = {
    "llama": _llama_like("llama", _LLAMA),
    "mistral": _llama_like("mistral", dict(_LLAMA, intermediate_size=14336, num_key_value_heads=8,
                                           max_position_embeddings=131072, sliding_window=4096),
                           sliding=_mistral_kinds),
    "qwen2": _llama_like("qwen2", _QWEN, sliding=_qwen_kinds),
    "qwen3": _llama_like("qwen3", _QWEN, qk_norm=True, sliding=_qwen_kinds),
    "qwen3_moe": _qwen3_moe,
    "gemma3_text": _gemma3,
    "gemma4_text": _gemma4,
    "gpt_oss": _gpt_oss,
}

# hybrid linear-attention architectures (Qwen3-Next, Qwen3.5, Qwen3.5-MoE) live in their own module; they read a
# multi-section RoPE type as plain RoPE (text positions)
from . import config_hybrid as _hybrid  # noqa: E402

_HF_BUILDERS.update(_hybrid.HF_BUILDERS)
_WRAPPERS.update(_hybrid.HF_WRAPPERS)
_HF_ARCH_CLASSES.update(_hybrid.HF_ARCH_CLASSES)
_MROPE_TEXT = frozenset(_hybrid.HF_BUILDERS)
