"""Test helper: write a GGUF of a Qwen3-Next / Qwen3.5 / Qwen3.5-MoE checkpoint the way llama.cpp's converter does
(conversion/qwen.py, gguf-py's tensor name map), so that impnb's GGUF reader is checked against the converter's
conventions and llama.cpp itself can run the file.

Converter facts applied (HF tensor -> GGUF tensor): names through ``gguf.get_tensor_name_map``; Qwen3-Next's
in_proj_qkvz split into attn_qkv ([q heads | k heads | v heads]) and attn_gate (z); A_log -> -exp(A_log) as ssm_a;
dt_bias renamed dt_proj.bias (ssm_dt.bias); conv1d squeezed to [C, K]; every "*norm.weight" but linear_attn.norm
stored + 1; fused experts split into ffn_gate_exps / ffn_up_exps; shared_expert_gate [1, H] -> [H]; Qwen3.5 with
Hk != Hv: value heads reordered from grouped to tiled. A byte-level "gpt2" vocabulary of the model's size (256 byte
tokens, one merge, then filler tokens) lets llama.cpp tokenize a prompt byte by byte.
"""
from __future__ import annotations

import re

import numpy as np

GGUF_ARCH = {"qwen3_next": "qwen3next", "qwen3_5_text": "qwen35", "qwen3_5_moe_text": "qwen35moe"}


def _byte_tokens() -> list[str]:
    """GPT-2's bytes_to_unicode: the printable stand-in of each byte."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), 256))
    chars, extra = {}, 0
    for b in range(256):
        if b in keep:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    return [chars[b] for b in range(256)]


def _regroup_qkvz(w, hf):
    hk, dk, dv = hf["linear_num_key_heads"], hf["linear_key_head_dim"], hf["linear_value_head_dim"]
    r = hf["linear_num_value_heads"] // hk
    per = w.reshape(hk, 2 * dk + 2 * r * dv, -1)
    q, k = per[:, :dk], per[:, dk:2 * dk]
    v, z = per[:, 2 * dk:2 * dk + r * dv], per[:, 2 * dk + r * dv:]
    h = w.shape[1]
    return np.concatenate([q.reshape(-1, h), k.reshape(-1, h), v.reshape(-1, h)]), z.reshape(-1, h)


def _tile(w, axis, hk, hv, width):
    """Grouped value heads (g r + j) -> tiled (j Hk + g) along ``axis``: the converter's _reorder_v_heads."""
    moved = np.moveaxis(w, axis, 0)
    tiled = moved.reshape(hk, hv // hk, width, *moved.shape[1:]).swapaxes(0, 1).reshape(moved.shape)
    return np.ascontiguousarray(np.moveaxis(tiled, 0, axis))


def _v_reorder(name, w, hf):
    hk, hv, dk, dv = (hf[k] for k in ("linear_num_key_heads", "linear_num_value_heads", "linear_key_head_dim",
                                      "linear_value_head_dim"))
    if hk == hv or ".linear_attn." not in name:
        return w
    split = 2 * hk * dk
    if name.endswith(("in_proj_qkv.weight", "conv1d.weight")):
        return np.concatenate([w[:split], _tile(w[split:], 0, hk, hv, dv)])
    if name.endswith("in_proj_z.weight"):
        return _tile(w, 0, hk, hv, dv)
    if name.endswith(("in_proj_a.weight", "in_proj_b.weight", "A_log", "dt_bias")):
        return _tile(w, 0, hk, hv, 1)
    if name.endswith("out_proj.weight"):
        return _tile(w, 1, hk, hv, dv)
    return w


def _stack_experts(tensors: dict) -> dict:
    """Per-expert HF tensors (mlp.experts.{e}.{proj}.weight) stacked into mlp.experts.{proj}.weight [E, out, in],
    as the converter merges them."""
    out, groups = {}, {}
    for name, w in tensors.items():
        m = re.match(r"^(.*\.mlp\.experts)\.(\d+)\.(\w+)\.weight$", name)
        if m:
            groups.setdefault(f"{m.group(1)}.{m.group(3)}.weight", {})[int(m.group(2))] = w
        else:
            out[name] = w
    for name, per in groups.items():
        out[name] = np.stack([per[e] for e in range(len(per))])
    return out


def _converted(tensors: dict, hf: dict, arch: str):
    """(HF-style name, value) pairs after the converter's value changes, before GGUF naming."""
    for name, w in _stack_experts(tensors).items():
        w = np.asarray(w, dtype=np.float32)
        if arch in ("qwen35", "qwen35moe"):
            w = _v_reorder(name, w, hf)
        if name.endswith("norm.weight") and not name.endswith("linear_attn.norm.weight"):
            w = w + np.float32(1.0)
        if name.endswith("A_log"):
            yield name, -np.exp(w)
        elif name.endswith("dt_bias"):
            yield name[:-len("dt_bias")] + "dt_proj.bias", w
        elif "conv1d" in name:
            yield name, w.reshape(w.shape[0], w.shape[-1])
        elif name.endswith("in_proj_qkvz.weight"):
            qkv, z = _regroup_qkvz(w, hf)
            yield name.replace("in_proj_qkvz", "in_proj_qkv"), qkv
            yield name.replace("in_proj_qkvz", "in_proj_z"), z
        elif name.endswith("experts.gate_up_proj"):
            half = w.shape[1] // 2
            yield name[:-len("gate_up_proj")] + "gate_proj.weight", w[:, :half]
            yield name[:-len("gate_up_proj")] + "up_proj.weight", w[:, half:]
        elif name.endswith("experts.down_proj"):
            yield name + ".weight", w
        elif name.endswith("shared_expert_gate.weight"):
            yield name, w.reshape(-1)
        else:
            yield name, w


def write_gguf(path: str, tensors: dict, hf: dict) -> None:
    """Write the HF checkpoint (``tensors``: HF name -> array, ``hf``: its config.json dict) as a llama.cpp GGUF."""
    import gguf
    arch = GGUF_ARCH[hf["model_type"]]
    n = hf["num_hidden_layers"]
    name_map = gguf.get_tensor_name_map(gguf.MODEL_ARCH[arch.upper()], n)
    writer = gguf.GGUFWriter(path, arch)
    _metadata(writer, hf, arch)
    special = {"qwen3next": {"in_proj_qkv": "attn_qkv", "in_proj_z": "attn_gate"}}.get(arch, {})
    for name, w in _converted(tensors, hf, arch):
        gguf_name = _gguf_name(name, name_map, special)
        writer.add_tensor(gguf_name, np.ascontiguousarray(w, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def _gguf_name(name, name_map, special):
    for hf_leaf, stem in special.items():
        if f"linear_attn.{hf_leaf}." in name:
            layer = name.split(".")[2]
            return f"blk.{layer}.{stem}.weight"
    mapped = name_map.get_name(name, try_suffixes=(".weight", ".bias"))
    if mapped is None:
        raise KeyError(f"gguf has no name for {name}")
    return mapped


def _metadata(writer, hf: dict, arch: str) -> None:
    head_dim, n = hf["head_dim"], hf["num_hidden_layers"]
    rope = hf.get("rope_parameters") or {}
    writer.add_block_count(n)
    writer.add_context_length(hf["max_position_embeddings"])
    writer.add_embedding_length(hf["hidden_size"])
    writer.add_feed_forward_length(hf.get("intermediate_size") or 0)
    writer.add_head_count(hf["num_attention_heads"])
    writer.add_head_count_kv(hf["num_key_value_heads"])
    writer.add_key_length(head_dim)
    writer.add_value_length(head_dim)
    writer.add_rope_freq_base(float(rope.get("rope_theta", 10000.0)))
    writer.add_rope_dimension_count(int(head_dim * rope.get("partial_rotary_factor", 0.25)))
    writer.add_layer_norm_rms_eps(hf["rms_norm_eps"])
    writer.add_ssm_conv_kernel(hf["linear_conv_kernel_dim"])
    writer.add_ssm_state_size(hf["linear_key_head_dim"])
    writer.add_ssm_group_count(hf["linear_num_key_heads"])
    writer.add_ssm_time_step_rank(hf["linear_num_value_heads"])
    writer.add_ssm_inner_size(hf["linear_value_head_dim"] * hf["linear_num_value_heads"])
    interval = next((i + 1 for i, t in enumerate(hf["layer_types"]) if t == "full_attention"), n)
    pattern = ["linear_attention" if (i + 1) % interval else "full_attention" for i in range(n)]
    assert hf["layer_types"] == pattern, "this writer stores the layer pattern as full_attention_interval"
    writer.add_full_attention_interval(interval)
    if arch != "qwen35":
        writer.add_expert_count(hf["num_experts"])
        writer.add_expert_used_count(hf["num_experts_per_tok"])
        writer.add_expert_feed_forward_length(hf["moe_intermediate_size"])
        writer.add_expert_shared_feed_forward_length(hf["shared_expert_intermediate_size"])
    if arch != "qwen3next":
        rot = int(head_dim * rope.get("partial_rotary_factor", 0.25)) // 2
        writer.add_rope_dimension_sections([rot - rot // 2, rot // 2, 0, 0])
    _vocabulary(writer, hf["vocab_size"])


def _vocabulary(writer, vocab_size: int) -> None:
    tokens = _byte_tokens() + ["ab"] + [f"<|extra_{i}|>" for i in range(vocab_size - 257)]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types([1] * 257 + [3] * (vocab_size - 257))  # normal bytes and "ab", control fillers
    writer.add_token_merges(["a b"])  # llama.cpp requires a merges list
    writer.add_bos_token_id(258)
    writer.add_eos_token_id(259)
    writer.add_add_bos_token(False)
