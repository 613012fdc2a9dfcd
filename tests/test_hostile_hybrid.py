"""Hostile metadata and tensor tables of the hybrid linear-attention architectures (Qwen3-Next, Qwen3.5, Qwen3.5-MoE):
their config.json fields and GGUF keys are type-, range- and cross-field-checked (impnb/config_validate_hybrid.py),
their tensors against the geometry and as a whole table (one source per weight), each violation one ConfigError /
FormatError naming the file, the field, the value and the rule."""
from __future__ import annotations

import numpy as np
import pytest

from impnb import ConfigError, FormatError, Unsupported
from impnb.config import ModelConfig
from impnb.config_validate import check_tensor_shapes
from impnb.loaders.tables import check_unique_sources

SOURCE = "models/q/config.json"
QWEN35 = dict(model_type="qwen3_5_text", vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=4,
              num_attention_heads=4, num_key_value_heads=2, head_dim=8, max_position_embeddings=128,
              linear_num_key_heads=2, linear_num_value_heads=4, linear_key_head_dim=8, linear_value_head_dim=6,
              linear_conv_kernel_dim=4, rope_parameters={"rope_type": "default", "rope_theta": 1e6,
                                                         "partial_rotary_factor": 0.5, "mrope_section": [1, 1, 0]})
NEXT = dict(QWEN35, model_type="qwen3_next", num_experts=4, num_experts_per_tok=2, moe_intermediate_size=16,
            shared_expert_intermediate_size=24)


def _refused(config: dict, field: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        ModelConfig.from_hf(config, SOURCE)
    err = info.value
    assert field in err.field and err.source.startswith(SOURCE) and err.rule
    assert SOURCE in str(err) and "\n" not in str(err)
    return err


@pytest.mark.parametrize("key, value", [
    ("linear_num_key_heads", 0), ("linear_num_value_heads", "4"), ("linear_key_head_dim", 2.5),
    ("linear_value_head_dim", True), ("linear_conv_kernel_dim", 10**6), ("linear_conv_kernel_dim", -1),
    ("full_attention_interval", 0), ("full_attention_interval", [4]), ("attn_output_gate", "yes"),
    ("layer_types", "linear_attention"), ("layer_types", [1, 2, 3, 4]),
])
def test_field_type_and_range(key, value):
    err = _refused({**QWEN35, key: value}, key)
    assert err.value == (value[0] if err.field.endswith("[0]") else value)


@pytest.mark.parametrize("key, value", [
    ("shared_expert_intermediate_size", 0), ("norm_topk_prob", "true"), ("decoder_sparse_step", 0),
    ("mlp_only_layers", [-1]), ("num_experts_per_tok", 5),
])
def test_moe_field_type_and_range(key, value):
    _refused({**NEXT, key: value}, key)


@pytest.mark.parametrize("value", ["11,11,10", [-1, 1, 0], [1] * 5, [1.5, 1, 0]])
def test_mrope_section_is_checked(value):
    _refused({**QWEN35, "rope_parameters": {**QWEN35["rope_parameters"], "mrope_section": value}}, "mrope_section")


@pytest.mark.parametrize("change, field", [
    ({"linear_num_value_heads": 3}, "linear_num_value_heads"),                # not a multiple of 2 key heads
    ({"layer_types": ["linear_attention"] * 3}, "layer_types"),               # 3 entries for 4 layers
    ({"layer_types": ["linear_attention", "sliding_attention"] * 2}, "layer_types[1]"),
    ({"num_hidden_layers": 0}, "num_hidden_layers"),
    ({"linear_num_value_heads": 4096, "linear_key_head_dim": 4096, "linear_value_head_dim": 4096,
      "linear_num_key_heads": 1}, "linear attention state"),                 # 6.9e10 floats per layer
])
def test_cross_field_rules(change, field):
    _refused({**QWEN35, **change}, field)


def test_legal_odd_values_load():
    """mrope sections wider than the rotation (transformers' default [11, 11, 10] on a tiny head), a multi-section
    RoPE type, every layer linear, value heads equal to key heads, conv kernel 1, the multimodal wrapper."""
    wide = {**QWEN35["rope_parameters"], "mrope_section": [11, 11, 10], "rope_type": "mrope"}
    cfg = ModelConfig.from_hf({**QWEN35, "rope_parameters": wide})
    assert cfg.layers[3].rope.kind == "default" and cfg.layers[3].rotary_dim == 4
    cfg = ModelConfig.from_hf({**QWEN35, "full_attention_interval": 5, "linear_num_value_heads": 2,
                               "linear_conv_kernel_dim": 1})
    assert [lc.kind for lc in cfg.layers] == ["linear"] * 4 and cfg.linear_attention.conv_kernel == 1
    wrapped = ModelConfig.from_hf({"model_type": "qwen3_5", "text_config": QWEN35})
    assert wrapped.arch == "qwen3_5_text" and wrapped.linear_attention.value_head_dim == 6


# ---- GGUF metadata -------------------------------------------------------------------------------------------------
def _gguf(**keys) -> dict:
    a = "qwen35"
    meta = {"general.architecture": a, f"{a}.block_count": 4, f"{a}.embedding_length": 32,
            f"{a}.attention.head_count": 4, f"{a}.attention.head_count_kv": 2, f"{a}.attention.key_length": 8,
            f"{a}.attention.value_length": 8, f"{a}.rope.dimension_count": 4, f"{a}.context_length": 128,
            f"{a}.ssm.conv_kernel": 4, f"{a}.ssm.state_size": 8, f"{a}.ssm.group_count": 2,
            f"{a}.ssm.time_step_rank": 4, f"{a}.ssm.inner_size": 32, f"{a}.full_attention_interval": 4,
            "tokenizer.ggml.tokens": ["t"] * 64}
    meta.update({f"{a}.{k}": v for k, v in keys.items()})
    return meta


def test_gguf_metadata_builds():
    cfg = ModelConfig.from_gguf(_gguf())
    assert [lc.kind for lc in cfg.layers] == ["linear"] * 3 + ["full"] and cfg.layers[3].rotary_dim == 4


@pytest.mark.parametrize("key, value, field", [
    ("ssm.conv_kernel", 0, "ssm.conv_kernel"), ("ssm.state_size", "8", "ssm.state_size"),
    ("ssm.group_count", 2**40, "ssm.group_count"), ("ssm.inner_size", 30, "ssm.inner_size"),   # 30 % 4 heads
    ("ssm.group_count", 3, "ssm.time_step_rank"),                                               # 4 % 3
    ("nextn_predict_layers", 4, "nextn_predict_layers"),                                        # no text layer
    ("attention.recurrent_layers", [True, True], "attention.recurrent_layers"),                 # 2 for 4 layers
    ("attention.recurrent_layers", ["yes"] * 4, "attention.recurrent_layers"),
    ("full_attention_interval", 0, "full_attention_interval"), ("rope.dimension_count", 10, "partial_rotary"),
    ("ssm.inner_size", None, "ssm.inner_size"),                                                 # required
])
def test_gguf_metadata_is_checked(key, value, field):
    with pytest.raises(ConfigError) as info:
        ModelConfig.from_gguf(_gguf(**{key: value}), "q.gguf")
    assert info.value.source == "q.gguf" and field in info.value.field


def test_gguf_value_length_other_than_key_length_is_unsupported():
    with pytest.raises(Unsupported, match="value_length = 16"):
        ModelConfig.from_gguf(_gguf(**{"attention.value_length": 16}), "q.gguf")


def test_gguf_recurrent_layers_with_mtp_entries():
    cfg = ModelConfig.from_gguf(_gguf(**{"block_count": 5, "nextn_predict_layers": 1,
                                         "attention.recurrent_layers": [1, 0, 1, 1, 0]}))
    assert cfg.n_layers == 4 and [lc.kind for lc in cfg.layers] == ["linear", "full", "linear", "linear"]


# ---- tensors --------------------------------------------------------------------------------------------------------
def _shapes(cfg) -> dict:
    """canonical name -> shape of every tensor a valid checkpoint of ``cfg`` holds (Qwen3.5 split projections)."""
    lin, h = cfg.linear_attention, cfg.hidden_size
    out = {"embed_tokens.weight": (cfg.vocab_size, h), "norm.weight": (h,)}
    for lc in cfg.layers:
        p = f"layers.{lc.index}."
        out.update({p + "input_layernorm.weight": (h,), p + "post_attention_layernorm.weight": (h,),
                    p + "mlp.gate_proj.weight": (48, h), p + "mlp.down_proj.weight": (h, 48)})
        if lc.kind == "linear":
            a = p + "linear_attn."
            out.update({a + "in_proj_qkv.weight": (lin.conv_channels, h), a + "in_proj_z.weight": (lin.value_dim, h),
                        a + "in_proj_b.weight": (4, h), a + "in_proj_a.weight": (4, h),
                        a + "conv1d.weight": (lin.conv_channels, 1, lin.conv_kernel), a + "A_log": (4,),
                        a + "dt_bias": (4,), a + "norm.weight": (6,), a + "out_proj.weight": (h, lin.value_dim)})
        else:
            s = p + "self_attn."
            out.update({s + "q_proj.weight": (64, h), s + "k_proj.weight": (16, h), s + "v_proj.weight": (16, h),
                        s + "o_proj.weight": (h, 32), s + "q_norm.weight": (8,), s + "k_norm.weight": (8,)})
    return out


def test_valid_tensor_shapes_pass_and_an_ungated_q_proj_too():
    cfg = ModelConfig.from_hf(QWEN35)
    shapes = _shapes(cfg)
    check_tensor_shapes(cfg, shapes, SOURCE)
    check_tensor_shapes(cfg, {**shapes, "layers.3.self_attn.q_proj.weight": (32, 32)}, SOURCE)
    check_tensor_shapes(cfg, {**shapes, "layers.0.linear_attn.conv1d.weight": (56, 4)}, SOURCE)  # GGUF's [C, K]


@pytest.mark.parametrize("name, shape", [
    ("layers.0.linear_attn.in_proj_qkv.weight", (55, 32)), ("layers.0.linear_attn.in_proj_z.weight", (25, 32)),
    ("layers.1.linear_attn.in_proj_b.weight", (2, 32)), ("layers.0.linear_attn.conv1d.weight", (56, 1, 3)),
    ("layers.0.linear_attn.A_log", (3,)), ("layers.2.linear_attn.dt_bias", (8,)),
    ("layers.0.linear_attn.norm.weight", (8,)), ("layers.0.linear_attn.out_proj.weight", (32, 25)),
    ("layers.3.self_attn.q_proj.weight", (96, 32)), ("layers.3.self_attn.q_norm.weight", (4,)),
    ("layers.0.linear_attn.in_proj_qkvz.weight", (81, 32)), ("layers.0.linear_attn.in_proj_ba.weight", (4, 32)),
])
def test_tensor_shapes_against_the_geometry(name, shape):
    cfg = ModelConfig.from_hf(QWEN35)
    with pytest.raises(ConfigError) as info:
        check_tensor_shapes(cfg, {**_shapes(cfg), name: shape}, SOURCE)
    assert name in info.value.field and info.value.value == shape


def test_shared_expert_shapes():
    cfg = ModelConfig.from_hf(NEXT)
    p = "layers.0.mlp."
    good = {p + "gate.weight": (4, 32), p + "shared_expert.gate_proj.weight": (24, 32),
            p + "shared_expert.down_proj.weight": (32, 24), p + "shared_expert_gate.weight": (1, 32),
            **{f"layers.{i}.input_layernorm.weight": (32,) for i in range(4)}}
    check_tensor_shapes(cfg, good, SOURCE)
    for name, shape in ((p + "shared_expert.up_proj.weight", (16, 32)), (p + "shared_expert_gate.weight", (2, 32))):
        with pytest.raises(ConfigError, match="shared_expert"):
            check_tensor_shapes(cfg, {**good, name: shape}, SOURCE)


@pytest.mark.parametrize("extra", ["in_proj_qkv.weight", "in_proj_z.weight_packed"])
def test_a_fused_projection_beside_its_parts_is_two_sources(extra):
    p = "model.layers.0.linear_attn."
    names = [p + "in_proj_qkvz.weight", p + "in_proj_ba.weight", p + "conv1d.weight"]
    check_unique_sources(names, "m.safetensors")
    with pytest.raises(FormatError, match="fused and split"):
        check_unique_sources(names + [p + extra], "m.safetensors")
    with pytest.raises(FormatError, match="in_proj_ba"):
        check_unique_sources(names + [p + "in_proj_b.weight"], "m.safetensors")


def test_hybrid_geometry_on_a_gguf_file(tmp_path):
    """A GGUF whose ssm_a holds 8 value heads for a config of 4 is refused before any tensor is read."""
    gguf = pytest.importorskip("gguf")
    a = "qwen35"
    w = gguf.GGUFWriter(str(tmp_path / "q.gguf"), a)
    for key, value in _gguf().items():
        if key.startswith(f"{a}.") and isinstance(value, int):
            w.add_uint32(key, value)
    w.add_array("tokenizer.ggml.tokens", ["t"] * 64)
    w.add_tensor("token_embd.weight", np.zeros((64, 32), np.float32))
    for i in range(4):
        w.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(32, np.float32))
    w.add_tensor("blk.0.ssm_a", -np.ones(8, np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    import impnb
    from impnb.loaders import check_config_against_tensors
    with pytest.warns(UserWarning, match="not been verified"), pytest.raises(ConfigError, match="A_log"):
        check_config_against_tensors(impnb.load_checkpoint(tmp_path / "q.gguf"))
