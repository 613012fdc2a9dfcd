"""ModelConfig of the hybrid architectures from the config.json forms found in the wild (legacy top-level RoPE keys,
transformers-5 rope_parameters with multi-section keys, the multimodal wrapper, architectures without model_type)
and from llama.cpp GGUF metadata; malformed configs are clear errors."""
from __future__ import annotations

import pytest

from impnb.config import ModelConfig

BASE = dict(vocab_size=1000, hidden_size=128, num_hidden_layers=8, num_attention_heads=4, num_key_value_heads=2,
            head_dim=64, linear_num_key_heads=2, linear_num_value_heads=4, linear_key_head_dim=32,
            linear_value_head_dim=48, rms_norm_eps=1e-6)


def test_qwen3_next_legacy_keys_interval_and_moe_layers():
    cfg = ModelConfig.from_hf({**BASE, "model_type": "qwen3_next", "rope_theta": 1e7, "partial_rotary_factor": 0.5,
                               "rope_scaling": None, "full_attention_interval": 4, "num_experts": 8,
                               "num_experts_per_tok": 2, "decoder_sparse_step": 2, "mlp_only_layers": [5],
                               "norm_topk_prob": False, "tie_word_embeddings": True})
    assert "".join(lc.kind[0] for lc in cfg.layers) == "lllflllf"
    assert [lc.moe for lc in cfg.layers] == [False, True, False, True, False, False, False, True]
    assert cfg.moe.renormalize is False and cfg.moe.n_shared_experts == 1 and cfg.tie_embeddings
    full = cfg.layers[3]
    assert full.rope.theta == 1e7 and full.rotary_dim == 32 and full.scale == 64 ** -0.5
    assert cfg.norm_offset == 1.0 and cfg.qk_norm
    lin = cfg.linear_attention
    assert (lin.key_dim, lin.value_dim, lin.conv_channels) == (64, 192, 320)


def test_qwen3_5_multimodal_wrapper_with_mrope_parameters():
    text = {**BASE, "layer_types": ["linear_attention", "full_attention"] * 4, "rope_parameters": {
        "rope_type": "default", "rope_theta": 1e7, "partial_rotary_factor": 0.25, "mrope_interleaved": True,
        "mrope_section": [11, 11, 10]}}
    cfg = ModelConfig.from_hf({"model_type": "qwen3_5", "text_config": text, "tie_word_embeddings": True})
    assert cfg.arch == "qwen3_5_text" and cfg.tie_embeddings and cfg.moe is None
    assert "".join(lc.kind[0] for lc in cfg.layers) == "lf" * 4
    assert cfg.layers[1].rope.partial_rotary_factor == 0.25 and cfg.layers[1].rope.kind == "default"


def test_architectures_only_and_defaults():
    moe = ModelConfig.from_hf({**BASE, "architectures": ["Qwen3_5MoeForCausalLM"], "num_experts": 8,
                               "num_experts_per_tok": 2, "norm_topk_prob": False})
    assert moe.arch == "qwen3_5_moe_text" and all(lc.moe for lc in moe.layers)
    assert moe.moe.renormalize  # Qwen3.5-MoE's router always renormalises
    dense = ModelConfig.from_hf({"model_type": "qwen3_5_text"})  # transformers' defaults: the Qwen3.5-9B shape
    assert dense.n_layers == 32 and dense.layers[0].rotary_dim == 64 and dense.layers[3].kind == "full"
    assert dense.linear_attention.n_value_heads == 32 and dense.linear_attention.key_head_dim == 128


def test_yarn_rope_scaling_is_kept():
    cfg = ModelConfig.from_hf({**BASE, "model_type": "qwen3_next", "num_experts": 0, "rope_scaling": {
        "rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32768}, "rope_theta": 1e6})
    assert cfg.layers[3].rope.kind == "yarn" and cfg.layers[3].rope.factor == 4.0 and cfg.moe is None


@pytest.mark.parametrize("change,match", [
    ({"layer_types": ["linear_attention", "sliding_attention"] * 4}, "layer type"),
    ({"layer_types": ["linear_attention"] * 3}, "entries"),
    ({"linear_num_value_heads": 3}, "multiple"),
])
def test_malformed_configs_are_value_errors(change, match):
    with pytest.raises(ValueError, match=match):
        ModelConfig.from_hf({**BASE, "model_type": "qwen3_5_text", **change})


def test_gguf_metadata_recurrent_layers_and_mtp_layers():
    a = "qwen35moe"
    meta = {"general.architecture": a, f"{a}.block_count": 5, f"{a}.nextn_predict_layers": 1,
            f"{a}.embedding_length": 128, f"{a}.attention.head_count": 4, f"{a}.attention.head_count_kv": 2,
            f"{a}.attention.key_length": 64, f"{a}.rope.freq_base": 1e7, f"{a}.rope.dimension_count": 16,
            f"{a}.attention.layer_norm_rms_epsilon": 1e-6, f"{a}.ssm.conv_kernel": 4, f"{a}.ssm.state_size": 32,
            f"{a}.ssm.group_count": 2, f"{a}.ssm.time_step_rank": 4, f"{a}.ssm.inner_size": 128,
            f"{a}.attention.recurrent_layers": [True, False, True, True, False], f"{a}.expert_count": 8,
            f"{a}.expert_used_count": 2, f"{a}.expert_feed_forward_length": 32,
            f"{a}.expert_shared_feed_forward_length": 64, "tokenizer.ggml.tokens": ["a"] * 1000}
    cfg = ModelConfig.from_gguf(meta)
    assert cfg.arch == "qwen3_5_moe_text" and cfg.n_layers == 4  # the MTP layer is not a text layer
    assert [lc.kind for lc in cfg.layers] == ["linear", "full", "linear", "linear"]
    assert cfg.layers[1].rotary_dim == 16 and cfg.linear_attention.value_head_dim == 32
    assert cfg.moe.shared_intermediate_size == 64 and cfg.vocab_size == 1000
