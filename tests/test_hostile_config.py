"""Model metadata from hostile files: every config field is type- and range-checked in one place
(impnb/config_validate.py) and refused with a ConfigError naming the file, the field, the value and the rule, before
anything is allocated; nothing that would make a finite model produce NaN is accepted."""
from __future__ import annotations

import ast
import math
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from impnb import ConfigError, FormatError, Unsupported
from impnb.config import ModelConfig
from impnb.config_validate import check_tensor_shapes
from impnb.reference.rope import rope_inv_freq

LLAMA = dict(model_type="llama", vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
             num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-5, max_position_embeddings=128,
             rope_theta=10000.0)
QWEN_MOE = dict(LLAMA, model_type="qwen3_moe", num_experts=4, num_experts_per_tok=2, moe_intermediate_size=16)
GEMMA3 = dict(LLAMA, model_type="gemma3_text", head_dim=8, sliding_window=16, query_pre_attn_scalar=8)


def _refused(config: dict, field: str, source="models/x/config.json") -> ConfigError:
    with pytest.raises(ConfigError) as info:
        ModelConfig.from_hf(config, source)
    err = info.value
    assert field in err.field and err.source.startswith(source) and err.rule, str(err)
    assert source in str(err) and field in str(err)   # one line naming file, field, value and rule
    return err


@pytest.mark.parametrize("key, value", [
    ("num_hidden_layers", "12"), ("num_hidden_layers", -1), ("num_hidden_layers", 0), ("num_hidden_layers", 10**9),
    ("num_hidden_layers", 2.5), ("num_hidden_layers", True), ("num_hidden_layers", [2]),
    ("num_attention_heads", 0), ("hidden_size", float("nan")), ("vocab_size", 2**40),
    ("max_position_embeddings", 0), ("max_position_embeddings", -1), ("head_dim", 10**6),
    ("rms_norm_eps", 0.0), ("rms_norm_eps", -1e-6), ("rms_norm_eps", float("nan")),
    ("rope_theta", 0.0), ("rope_theta", -10000.0), ("rope_theta", float("nan")), ("rope_theta", float("inf")),
    ("partial_rotary_factor", 0.0), ("partial_rotary_factor", 1.5), ("tie_word_embeddings", "yes"),
    ("eos_token_id", -3), ("bos_token_id", "<s>"),
])
def test_field_type_and_range(key, value):
    err = _refused({**LLAMA, key: value}, key)
    assert err.value is value or err.value == value or (isinstance(value, float) and math.isnan(value))


@pytest.mark.parametrize("rope, field", [
    ({"rope_type": "linear", "factor": 0.0}, "rope_scaling.factor"),
    ({"rope_type": "linear", "factor": float("nan")}, "rope_scaling.factor"),
    ({"rope_type": "llama3", "factor": -8.0}, "rope_scaling.factor"),
    ({"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 0}, "original_max_position_embeddings"),
    ({"rope_type": "no-such-kind"}, "rope_type"),
])
def test_rope_parameters_that_would_give_nan(rope, field):
    _refused({**LLAMA, "rope_scaling": rope}, field)


def test_known_but_unsupported_values_are_unsupported():
    with pytest.raises(Unsupported, match="dynamic"):
        ModelConfig.from_hf({**LLAMA, "rope_scaling": {"rope_type": "dynamic", "factor": 2.0}})
    with pytest.raises(Unsupported, match="activation 'relu2'"):
        ModelConfig.from_hf({**LLAMA, "hidden_act": "relu2"})


@pytest.mark.parametrize("config, field", [
    ({**LLAMA, "num_key_value_heads": 3}, "num_key_value_heads"),          # 4 heads are not a multiple of 3
    ({**LLAMA, "head_dim": 7}, "partial_rotary_factor"),                    # rotary pairs need an even head
    ({**LLAMA, "partial_rotary_factor": 0.01}, "partial_rotary_factor"),    # rotary dim 0
    ({**LLAMA, "num_attention_heads": 64}, "num_attention_heads"),          # head_dim 32 // 64 = 0
    ({**GEMMA3, "sliding_window_pattern": 0}, "sliding_window_pattern"),    # period 0: modulo by zero
    ({**GEMMA3, "query_pre_attn_scalar": 0}, "query_pre_attn_scalar"),
    ({**GEMMA3, "query_pre_attn_scalar": 1e-300}, "attention scale"),       # 1e150: inf in float32
    ({**LLAMA, "rms_norm_eps": 1e-300}, "rms_norm_eps"),                    # 0 in float32
    ({**GEMMA3, "final_logit_softcapping": 0.0}, "final_logit_softcapping"),
    ({**QWEN_MOE, "num_experts_per_tok": 5}, "num_experts_per_tok"),       # top-k > experts
    ({**QWEN_MOE, "decoder_sparse_step": 0}, "decoder_sparse_step"),        # modulo by zero
    ({**GEMMA3, "layer_types": ["full_attention"]}, "layer_types"),         # one entry for two layers
])
def test_cross_field_rules(config, field):
    _refused(config, field)


def test_special_token_ids_outside_the_vocabulary_are_ignored_with_a_warning():
    """Small checkpoints cut from a real model keep its BOS / EOS ids (transformers loads them): the ids name no
    token of this model, so they are dropped (never a stop id, never prepended), with a warning."""
    with pytest.warns(UserWarning, match=r"\[99999, 64\] are outside the vocabulary of 64"):
        cfg = ModelConfig.from_hf({**LLAMA, "eos_token_id": [2, 64], "bos_token_id": 99999})
    assert cfg.eos_token_ids == (2,) and cfg.bos_token_id is None
    _refused({**LLAMA, "eos_token_id": [2, -1]}, "eos_token_id")  # not a token id at all


def test_accepted_configs_give_finite_rope_everywhere():
    for config in (LLAMA, QWEN_MOE, GEMMA3, {**LLAMA, "partial_rotary_factor": 0.5},
                   {**LLAMA, "rope_scaling": {"rope_type": "yarn", "factor": 4.0,
                                              "original_max_position_embeddings": 32}}):
        cfg = ModelConfig.from_hf(config)
        for lc in cfg.layers:
            inv, scale = rope_inv_freq(lc.rope, lc.head_dim, cfg.max_position_embeddings)
            assert np.isfinite(inv).all() and (inv >= 0).all() and math.isfinite(scale) and scale > 0


def test_huge_counts_are_refused_before_any_list_is_built():
    start = time.perf_counter()
    _refused({**LLAMA, "num_hidden_layers": 2**62}, "num_hidden_layers")
    _refused({**GEMMA3, "layer_types": ["full_attention"] * 100_000}, "layer_types")
    assert time.perf_counter() - start < 1.0


def test_multimodal_wrapper_names_its_text_config():
    err = _refused({"model_type": "gemma3", "text_config": {**GEMMA3, "rms_norm_eps": "1e-6"}}, "rms_norm_eps")
    assert "text_config" in err.source
    _refused({"model_type": "gemma3", "text_config": [1, 2]}, "text_config")


def _gguf(arch="llama", **keys) -> dict:
    meta = {"general.architecture": arch, f"{arch}.block_count": 2, f"{arch}.embedding_length": 32,
            f"{arch}.attention.head_count": 4, f"{arch}.context_length": 128, "tokenizer.ggml.tokens": ["a"] * 64}
    meta.update({f"{arch}.{k}" if not k.startswith("tokenizer") else k: v for k, v in keys.items()})
    return meta


@pytest.mark.parametrize("key, value", [
    ("block_count", "2"), ("block_count", 0), ("block_count", 2**63), ("attention.head_count", 0),
    ("attention.head_count", [4, 4, 4]), ("context_length", 0), ("rope.freq_base", float("nan")),
    ("attention.layer_norm_rms_epsilon", 0.0), ("attention.sliding_window", -5), ("attention.key_length", 2**20),
    ("tokenizer.ggml.eos_token_id", "2"), ("tokenizer.ggml.bos_token_id", -1),
])
def test_gguf_metadata_is_checked(key, value):
    with pytest.raises(ConfigError) as info:
        ModelConfig.from_gguf(_gguf(**{key: value}), "m.gguf")
    assert info.value.source == "m.gguf" and key.split(".")[-1] in info.value.field


def test_gguf_partial_rotary_is_unsupported_not_misread():
    with pytest.raises(Unsupported, match="rope.dimension_count"):
        ModelConfig.from_gguf(_gguf(**{"rope.dimension_count": 4}), "m.gguf")


def test_config_against_tensor_shapes():
    cfg = ModelConfig.from_hf(LLAMA)
    good = {"embed_tokens.weight": (64, 32), "layers.0.self_attn.q_proj.weight": (32, 32),
            "layers.0.self_attn.k_proj.weight": (16, 32), "layers.1.self_attn.q_proj.weight": (32, 32)}
    check_tensor_shapes(cfg, good, "c.json")
    with pytest.raises(ConfigError, match="q_proj"):
        check_tensor_shapes(cfg, {**good, "layers.0.self_attn.q_proj.weight": (64, 32)}, "c.json")
    with pytest.raises(ConfigError, match="num_hidden_layers"):
        check_tensor_shapes(cfg, {**good, "layers.2.input_layernorm.weight": (32,)}, "c.json")
    with pytest.raises(ConfigError, match="vocab_size"):
        check_tensor_shapes(cfg, {**good, "embed_tokens.weight": (65, 32)}, "c.json")


def test_quantization_ignore_regex_cannot_stall_a_load():
    from impnb.loaders.quant import detect_scheme, is_ignored
    qc = {"quant_method": "compressed-tensors", "format": "nvfp4-pack-quantized",
          "config_groups": {"g": {"format": "nvfp4-pack-quantized", "weights": {"group_size": 16}}},
          "ignore": ["re:(a|a)*b", "re:(x+x+)+y", "lm_head"]}
    scheme = detect_scheme({"quantization_config": qc})
    start = time.perf_counter()
    assert not is_ignored("a" * 4000, scheme.ignore) and not is_ignored("x" * 4000, scheme.ignore)
    assert time.perf_counter() - start < 10   # Python's re would take longer than the age of the universe
    with pytest.raises(FormatError, match="regex"):
        detect_scheme({"quantization_config": {**qc, "ignore": ["re:(unclosed"]}})
    with pytest.raises(FormatError, match="list"):
        detect_scheme({"quantization_config": {**qc, "ignore": "lm_head"}})


@pytest.mark.parametrize("pattern", [r".*lm_head", r"model\.layers\.\d+\.mlp\.gate$", r".*self_attn\.(q|k|v)_proj$",
                                     r"^(?:a|b)+c\Z", r"x{2,3}\b", r"[^.]*\.[0-9]+", r"(?s).*", r"a*?b"])
def test_safe_regex_answers_what_re_match_answers(pattern):
    import re

    from impnb.loaders.safe_regex import SafeRegex
    subjects = ["model.lm_head", "lm_head", "model.layers.12.mlp.gate", "model.layers.1.mlp.gate_up",
                "model.layers.0.self_attn.k_proj", "abac", "ababc", "xx y", "xxxx", "a.12", "", "aab", "\n"]
    rx = SafeRegex(pattern)
    assert [rx.match(s) for s in subjects] == [re.match(pattern, s) is not None for s in subjects]


def test_config_modules_import_no_builder_circle():
    """config_types (the dataclasses) imports neither builder; the builders import neither each other nor
    impnb.config; impnb.config imports them all."""
    root = Path(__file__).resolve().parents[1] / "impnb"

    def imports(name):
        tree = ast.parse((root / f"{name}.py").read_text())
        return {n.module.lstrip(".") for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}

    assert not imports("config_types") & {"config", "config_archs", "config_gguf"}
    assert not imports("config_archs") & {"config", "config_gguf"}
    assert not imports("config_gguf") & {"config", "config_archs"}
    assert not imports("config_validate") & {"config", "config_archs", "config_gguf"}
    code = "import impnb.config_gguf, sys; print('impnb.config_archs' in sys.modules, 'impnb.config' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.split() == ["False", "False"], out.stderr


def test_rope_reference_refuses_parameters_out_of_range():
    from impnb.config import RopeConfig
    for rope, head_dim in ((RopeConfig(theta=0.0), 64), (RopeConfig(kind="linear", factor=0.0), 64),
                           (RopeConfig(theta=float("nan")), 64), (RopeConfig(partial_rotary_factor=1.5), 64),
                           (RopeConfig(kind="yarn", factor=4.0, original_max_position_embeddings=0), 64),
                           (RopeConfig(), 0)):
        with pytest.raises(ValueError, match="rope"):
            rope_inv_freq(rope, head_dim, 0 if rope.kind == "yarn" else 128)
