"""ModelConfig -> an HF ``config.json`` dict, for checkpoints converted from GGUF.

A GGUF source carries its architecture in GGUF metadata; the quantized checkpoint must carry it as transformers
does, so that transformers-style loaders (and impnb's own ``ModelConfig.from_hf``) read it. The keys written are
the ones transformers 5.23's ``LlamaConfig`` / ``Qwen2Config`` / ``Qwen3Config`` / ``Gemma3TextConfig`` define,
in the legacy spelling the models' own config.json files on the Hub use (``rope_theta``, ``rope_scaling``,
``rope_local_base_freq``), which transformers converts on load. Round trip (tested):
``ModelConfig.from_hf(hf_config(mc))`` equals ``mc`` up to ``source`` and ``extras``.
"""
from __future__ import annotations

import numpy as np

from ..config import ModelConfig, RopeConfig
from ..errors import Unsupported

HF_CLASSES = {
    "llama": ("LlamaForCausalLM", "llama"),
    "mistral": ("MistralForCausalLM", "mistral"),
    "qwen2": ("Qwen2ForCausalLM", "qwen2"),
    "qwen3": ("Qwen3ForCausalLM", "qwen3"),
    "gemma3_text": ("Gemma3ForCausalLM", "gemma3_text"),
}
_HF_ACT = {"silu": "silu", "gelu_tanh": "gelu_pytorch_tanh"}
_ROPE_KEYS = ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings", "beta_fast",
              "beta_slow", "attention_factor", "mscale", "mscale_all_dim")


def hf_config(mc: ModelConfig, *, torch_dtype: str = "bfloat16") -> dict:
    """The config.json dict of ``mc`` (dense Llama / Mistral / Qwen2 / Qwen3 / Gemma-3 text)."""
    if mc.arch not in HF_CLASSES:
        raise Unsupported(f"writing an HF config.json for architecture {mc.arch!r} is not supported; "
                          f"supported: {sorted(HF_CLASSES)}")
    if mc.moe is not None or any(layer.moe for layer in mc.layers):
        raise Unsupported(f"{mc.arch}: MoE checkpoints are not supported by the quantizer yet")
    first = mc.layers[0]
    _check_uniform(mc)
    cls, model_type = HF_CLASSES[mc.arch]
    cfg = {
        "architectures": [cls],
        "model_type": model_type,
        "vocab_size": mc.vocab_size,
        "hidden_size": mc.hidden_size,
        "intermediate_size": first.intermediate_size,
        "num_hidden_layers": mc.n_layers,
        "num_attention_heads": first.n_heads,
        "num_key_value_heads": first.n_kv_heads,
        "head_dim": first.head_dim,
        "rms_norm_eps": _short(mc.rms_eps),
        "max_position_embeddings": mc.max_position_embeddings,
        "tie_word_embeddings": mc.tie_embeddings,
        "torch_dtype": torch_dtype,
    }
    if mc.bos_token_id is not None:
        cfg["bos_token_id"] = int(mc.bos_token_id)
    if mc.eos_token_ids:
        eos = [int(e) for e in mc.eos_token_ids]
        cfg["eos_token_id"] = eos[0] if len(eos) == 1 else eos
    if mc.arch == "gemma3_text":
        cfg.update(_gemma3_keys(mc))
    else:
        cfg.update(_llama_keys(mc))
    return cfg


def _check_uniform(mc: ModelConfig) -> None:
    first = mc.layers[0]
    for layer in mc.layers:
        same = (layer.head_dim, layer.n_heads, layer.n_kv_heads, layer.intermediate_size) == \
               (first.head_dim, first.n_heads, first.n_kv_heads, first.intermediate_size)
        if not same:
            raise Unsupported(f"{mc.arch}: layer {layer.index} has a different geometry from layer 0; "
                              f"per-layer geometry cannot be written as an HF config of this architecture")


def _llama_keys(mc: ModelConfig) -> dict:
    first = mc.layers[0]
    out = {"hidden_act": _HF_ACT[mc.activation], "rope_theta": _short(first.rope.theta),
           "rope_scaling": _rope_scaling(first.rope), "attention_bias": False, "mlp_bias": False}
    if first.rope.partial_rotary_factor != 1.0:
        out["partial_rotary_factor"] = first.rope.partial_rotary_factor
    sliding = [layer for layer in mc.layers if layer.kind == "sliding"]
    if mc.arch == "mistral":
        out["sliding_window"] = sliding[0].window if sliding else None
    elif mc.arch in ("qwen2", "qwen3"):
        out["use_sliding_window"] = bool(sliding)
        out["sliding_window"] = sliding[0].window if sliding else None
        if sliding:
            out["layer_types"] = [_layer_type(layer.kind) for layer in mc.layers]
    elif sliding:
        raise Unsupported(f"{mc.arch}: sliding-window layers cannot be written as an HF {mc.arch} config")
    return out


def _gemma3_keys(mc: ModelConfig) -> dict:
    ropes = {layer.kind: layer.rope for layer in mc.layers}
    full = ropes.get("full", RopeConfig(theta=1e6))
    local = ropes.get("sliding", RopeConfig(theta=10000.0))
    windows = {layer.window for layer in mc.layers if layer.kind == "sliding"}
    if len(windows) > 1:
        raise Unsupported(f"gemma3_text: more than one sliding window {sorted(windows)}")
    return {
        "hidden_activation": _HF_ACT[mc.activation],
        "query_pre_attn_scalar": _round_scalar(mc.layers[0].scale ** -2),
        "sliding_window": windows.pop() if windows else None,
        "layer_types": [_layer_type(layer.kind) for layer in mc.layers],
        "rope_theta": _short(full.theta),
        "rope_local_base_freq": _short(local.theta),
        "rope_scaling": _rope_scaling(full),
        "final_logit_softcapping": mc.final_softcap,
        "attn_logit_softcapping": mc.attn_softcap,
        "attention_bias": False,
    }


def _short(x: float) -> float:
    """The shortest decimal of x's float32 value: GGUF stores eps / theta as float32 (1e-6 reads 9.99999997e-07)."""
    return float(str(np.float32(x)))


def _layer_type(kind: str) -> str:
    return "sliding_attention" if kind == "sliding" else "full_attention"


def _round_scalar(x: float):
    """query_pre_attn_scalar is an integer in every Gemma-3 config; keep it one when scale**-2 rounds to one."""
    r = round(x)
    return r if abs(x - r) < 1e-6 * max(1.0, abs(x)) else x


def _rope_scaling(rope: RopeConfig) -> dict | None:
    if rope.kind == "default":
        return None
    out = {"rope_type": rope.kind}
    for key in _ROPE_KEYS:
        value = getattr(rope, key)
        if value is not None:
            out[key] = value
    if rope.kind == "yarn":
        out["truncate"] = rope.truncate
    return out
