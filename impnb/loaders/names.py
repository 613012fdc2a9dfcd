"""Canonical tensor names: the ONE table mapping GGUF tensor names to impnb's canonical (Hugging Face) names.

impnb's model code reads HF-style names, so a safetensors checkpoint needs no renaming and a GGUF file is renamed
here. Legend: i = layer index, E = number of experts, H = hidden size, I = FFN (expert) size.

    GGUF (llama.cpp)               canonical                                       notes
    token_embd.weight              model.embed_tokens.weight                       [vocab, H]
    output_norm.weight             model.norm.weight
    output.weight                  lm_head.weight                                  absent when tied
    rope_freqs.weight              model.rope_freqs.weight                         llama3 per-frequency factors
    blk.i.attn_norm                model.layers.i.input_layernorm
    blk.i.attn_q / _k / _v         model.layers.i.self_attn.q_proj / k_proj / v_proj   (.weight and .bias)
    blk.i.attn_output              model.layers.i.self_attn.o_proj
    blk.i.attn_q_norm / _k_norm    model.layers.i.self_attn.q_norm / k_norm
    blk.i.attn_sinks               model.layers.i.self_attn.sinks                  gpt-oss
    blk.i.ffn_norm                 model.layers.i.post_attention_layernorm         Gemma: pre_feedforward_layernorm
    blk.i.post_attention_norm      model.layers.i.post_attention_layernorm         Gemma-2/3/4, gpt-oss
    blk.i.post_ffw_norm            model.layers.i.post_feedforward_layernorm       Gemma-2/3/4
    blk.i.ffn_gate / _up / _down   model.layers.i.mlp.gate_proj / up_proj / down_proj
    blk.i.ffn_gate_inp             model.layers.i.mlp.gate                         router [E, H]
    blk.i.ffn_{gate,up,down}_exps  model.layers.i.mlp.experts.{gate,up,down}_proj  stacked [E, out, in]
    blk.i.ffn_{gate,up,down}_shexp model.layers.i.mlp.shared_expert.{gate,up,down}_proj
    blk.i.ffn_gate_inp_shexp       model.layers.i.mlp.shared_expert_gate
  hybrid linear attention (qwen3next, qwen35, qwen35moe; HYBRID_BLOCK_NAMES):
    blk.i.attn_qkv / attn_gate     model.layers.i.linear_attn.in_proj_qkv / in_proj_z
    blk.i.ssm_in / ssm_ba          model.layers.i.linear_attn.in_proj_qkvz / in_proj_ba   (Qwen3-Next)
    blk.i.ssm_beta / ssm_alpha     model.layers.i.linear_attn.in_proj_b / in_proj_a       (Qwen3.5)
    blk.i.ssm_conv1d               model.layers.i.linear_attn.conv1d                      [C, K]
    blk.i.ssm_a                    model.layers.i.linear_attn.A_log     (no suffix; stored as -exp(A_log))
    blk.i.ssm_dt.bias              model.layers.i.linear_attn.dt_bias
    blk.i.ssm_norm / ssm_out       model.layers.i.linear_attn.norm / out_proj

MoE experts stay STACKED ([E, out, in], GGUF's own layout, ne reversed); a safetensors loader that finds
per-expert HF tensors (`mlp.experts.{e}.gate_proj.weight`) stacks them into the same name and shape.

A GGUF tensor this table does not know keeps its GGUF name (nothing is dropped silently) and is listed in
`GGUFFile.unmapped`, so the model builder can refuse a checkpoint it would otherwise half-load.

Value transforms llama.cpp's converter applies (undone in impnb/loaders/gguf.py, verified against transformers):
  * Q/K rows permuted for rotary "interleaved -> halves" on PERMUTED_QK_ARCHS;
  * Gemma (1, 2, 3) RMSNorm weights stored as (1 + w) for every tensor whose name ends in "norm.weight";
  * the hybrid architectures' own (impnb/loaders/gguf_hybrid.py: norms + 1 except ssm_norm, -exp(A_log), Qwen3.5's
    value heads tiled instead of grouped).
"""
from __future__ import annotations

import re

GLOBAL_NAMES = {
    "token_embd": "model.embed_tokens",
    "token_embd_norm": "model.embed_norm",
    "output_norm": "model.norm",
    "output": "lm_head",
    "rope_freqs": "model.rope_freqs",
}

BLOCK_NAMES = {
    "attn_norm": "input_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "attn_q_norm": "self_attn.q_norm",
    "attn_k_norm": "self_attn.k_norm",
    "attn_sinks": "self_attn.sinks",
    "ffn_norm": "post_attention_layernorm",
    "post_attention_norm": "post_attention_layernorm",
    "post_ffw_norm": "post_feedforward_layernorm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
    "ffn_gate_inp": "mlp.gate",
    "ffn_gate_exps": "mlp.experts.gate_proj",
    "ffn_up_exps": "mlp.experts.up_proj",
    "ffn_down_exps": "mlp.experts.down_proj",
    "ffn_gate_shexp": "mlp.shared_expert.gate_proj",
    "ffn_up_shexp": "mlp.shared_expert.up_proj",
    "ffn_down_shexp": "mlp.shared_expert.down_proj",
    "ffn_gate_inp_shexp": "mlp.shared_expert_gate",
}

# Gemma runs four norms per layer: ffn_norm is the PRE-feed-forward norm there (dropping it runs the FFN
# unnormalised), and post_attention_norm is the attention output norm.
_GEMMA_BLOCK = {"ffn_norm": "pre_feedforward_layernorm"}
ARCH_BLOCK_OVERRIDES = {"gemma2": _GEMMA_BLOCK, "gemma3": _GEMMA_BLOCK, "gemma3n": _GEMMA_BLOCK,
                        "gemma4": _GEMMA_BLOCK}
# llama.cpp's converter permutes Q/K rows only for LlamaModel-derived architectures (convert_hf_to_gguf.py
# LlamaModel.permute); Qwen2/3 and Gemma are written unpermuted.
PERMUTED_QK_ARCHS = frozenset({"llama", "mistral"})
# Gemma (1/2/3) norms are stored as 1 + w by the converter (transformers' Gemma2TensorProcessor subtracts 1 back).
NORM_PLUS_ONE_ARCHS = frozenset({"gemma", "gemma2", "gemma3"})
# Architectures whose GGUF naming and value transforms have been checked: llama and gemma3 tensor by tensor against
# transformers on real files (tests/test_gguf_models.py); mistral, qwen2/3 and gemma/gemma2 share those names and
# transforms (llama.cpp converter and transformers' GGUF processors). MoE files (qwen3moe, gpt-oss, ...) load with
# a warning: their stacked-expert names follow this table but no real file has been compared.
VERIFIED_ARCHS = frozenset({"llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3"})

_BLOCK_RE = re.compile(r"^blk\.(\d+)\.([a-z0-9_]+)\.(weight|bias)$")
_GLOBAL_RE = re.compile(r"^([a-z0-9_]+)\.(weight|bias)$")


def gguf_to_canonical(name: str, arch: str) -> str | None:
    """The canonical name of GGUF tensor `name` in an `arch` file, or None when the table has no entry."""
    if arch in HYBRID_ARCHS and (hybrid := hybrid_gguf_to_canonical(name)) is not None:
        return hybrid
    m = _BLOCK_RE.match(name)
    if m:
        layer, stem, kind = m.groups()
        table = {**BLOCK_NAMES, **ARCH_BLOCK_OVERRIDES.get(arch, {})}
        return f"model.layers.{layer}.{table[stem]}.{kind}" if stem in table else None
    m = _GLOBAL_RE.match(name)
    if m and m.group(1) in GLOBAL_NAMES:
        return f"{GLOBAL_NAMES[m.group(1)]}.{m.group(2)}"
    return None


def block_stem(name: str) -> tuple[int, str] | None:
    """(layer, stem) of a GGUF block tensor such as blk.3.attn_q.weight -> (3, "attn_q"); None otherwise."""
    m = _BLOCK_RE.match(name)
    return (int(m.group(1)), m.group(2)) if m else None


# ---- hybrid linear-attention architectures (llama.cpp qwen3next / qwen35 / qwen35moe) ------------------------------
HYBRID_ARCHS = frozenset({"qwen3next", "qwen35", "qwen35moe"})
HYBRID_BLOCK_NAMES = {
    "attn_qkv": "linear_attn.in_proj_qkv",
    "attn_gate": "linear_attn.in_proj_z",
    "ssm_in": "linear_attn.in_proj_qkvz",
    "ssm_ba": "linear_attn.in_proj_ba",
    "ssm_beta": "linear_attn.in_proj_b",
    "ssm_alpha": "linear_attn.in_proj_a",
    "ssm_conv1d": "linear_attn.conv1d",
    "ssm_norm": "linear_attn.norm",
    "ssm_out": "linear_attn.out_proj",
    "post_attention_norm": "post_attention_layernorm",
}
# whole-name exceptions: llama.cpp stores A as "ssm_a" without a suffix, and dt_bias as the bias of "ssm_dt"
_HYBRID_SPECIAL_RE = re.compile(r"^blk\.(\d+)\.(ssm_a|ssm_dt\.bias)$")
_HYBRID_SPECIAL = {"ssm_a": "linear_attn.A_log", "ssm_dt.bias": "linear_attn.dt_bias"}


def hybrid_gguf_to_canonical(name: str) -> str | None:
    """Canonical name of a hybrid-architecture tensor: the special names, then HYBRID_BLOCK_NAMES, then the common
    table (None when none knows it)."""
    m = _HYBRID_SPECIAL_RE.match(name)
    if m:
        return f"model.layers.{m.group(1)}.{_HYBRID_SPECIAL[m.group(2)]}"
    m = _BLOCK_RE.match(name)
    if m and m.group(2) in HYBRID_BLOCK_NAMES:
        return f"model.layers.{m.group(1)}.{HYBRID_BLOCK_NAMES[m.group(2)]}.{m.group(3)}"
    return None
