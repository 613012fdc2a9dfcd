"""The quantizer's rule for the hybrid linear-attention layers (impnb/quantize/plan.py), and NVFP4 checkpoints of
Qwen3-Next / Qwen3.5-MoE in both layouts (compressed-tensors, ModelOpt) loading into the model: their logits are
exactly those of a dense checkpoint holding the dequantized weights."""
from __future__ import annotations

import numpy as np
import pytest

from impnb.quantize.plan import make_plan

H = 64


def _hybrid_shapes():
    p = "model.layers.0."
    return {p + "linear_attn.in_proj_qkv.weight": (96, H), p + "linear_attn.in_proj_z.weight": (48, H),
            p + "linear_attn.in_proj_b.weight": (4, H), p + "linear_attn.in_proj_a.weight": (4, H),
            p + "linear_attn.in_proj_ba.weight": (8, H), p + "linear_attn.conv1d.weight": (96, 1, 4),
            p + "linear_attn.A_log": (4,), p + "linear_attn.dt_bias": (4,), p + "linear_attn.norm.weight": (12,),
            p + "linear_attn.out_proj.weight": (H, 48), p + "mlp.gate.weight": (4, H),
            p + "mlp.shared_expert_gate.weight": (1, H), p + "mlp.shared_expert.up_proj.weight": (32, H),
            p + "mlp.shared_expert.gate_proj.weight": (32, H), p + "mlp.shared_expert.down_proj.weight": (H, 32),
            "model.layers.1.self_attn.q_proj.weight": (128, H), "model.layers.1.self_attn.k_proj.weight": (32, H),
            "model.layers.1.self_attn.v_proj.weight": (32, H), "model.layers.1.self_attn.o_proj.weight": (H, 64),
            "model.layers.1.input_layernorm.weight": (H,), "model.embed_tokens.weight": (300, H),
            "lm_head.weight": (300, H)}


def test_plan_quantizes_the_big_projections_and_keeps_the_gates_dense():
    plan = make_plan(_hybrid_shapes())
    la, mlp = "model.layers.0.linear_attn.", "model.layers.0.mlp."
    assert {la + "in_proj_qkv", la + "in_proj_z", la + "out_proj", "model.layers.1.self_attn.q_proj",
            mlp + "shared_expert.up_proj"} <= set(plan.quantize)
    assert (la + "in_proj_qkv", la + "in_proj_z") in plan.groups  # one global scale: one GEMM in engines
    for dense in ("in_proj_b", "in_proj_a", "in_proj_ba"):
        assert la + dense in plan.ignore and la + dense not in plan.quantize
    assert mlp + "shared_expert_gate" in plan.ignore and "lm_head" in plan.ignore
    assert not any(m.endswith(("conv1d", "A_log", "dt_bias", "norm", "mlp.gate")) for m in plan.quantize)


@pytest.mark.oracle
@pytest.mark.parametrize("layout", ["compressed-tensors", "modelopt"])
@pytest.mark.parametrize("arch", ["qwen3_next", "qwen3_5_moe"])
def test_nvfp4_checkpoint_equals_its_dequantized_twin(tmp_path, layout, arch):
    torch = pytest.importorskip("torch")
    tf = pytest.importorskip("transformers")
    import impnb
    from impnb.formats import NVFP4Tensor
    from impnb.model import Model
    from impnb.model.weights import dense
    from impnb.quantize import quantize_checkpoint
    small = dict(vocab_size=300, hidden_size=H, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
                 head_dim=16, max_position_embeddings=512, linear_num_key_heads=2, linear_num_value_heads=4,
                 linear_key_head_dim=16, linear_value_head_dim=16, num_experts=4, num_experts_per_tok=2,
                 moe_intermediate_size=32, shared_expert_intermediate_size=32)
    config = (tf.Qwen3NextConfig(**small, intermediate_size=96) if arch == "qwen3_next"
              else tf.Qwen3_5MoeTextConfig(**small))
    torch.manual_seed(0)
    tf.AutoModelForCausalLM.from_config(config, dtype=torch.float32).save_pretrained(tmp_path / "hf")
    quantize_checkpoint(str(tmp_path / "hf"), str(tmp_path / "q"), layout=layout, progress=False)
    ckpt = impnb.load_checkpoint(tmp_path / "q")
    assert ckpt.quantization == f"nvfp4-{layout}"
    quantized = [n for n, v in ckpt.tensors.items() if isinstance(v, NVFP4Tensor)]
    assert any("linear_attn.out_proj" in n for n in quantized) and not any("in_proj_b" in n for n in quantized)
    model = Model(ckpt.config, ckpt.tensors)
    assert model.unused_tensors == []
    twin = Model(ckpt.config, {n: dense(v, n) if isinstance(v, NVFP4Tensor) else v for n, v in ckpt.tensors.items()})
    ids = np.random.default_rng(3).integers(0, 300, size=40)
    got = model.logits(ids)
    np.testing.assert_array_equal(got, twin.logits(ids))
    original = impnb.load_checkpoint(tmp_path / "hf")
    base = Model(original.config, original.tensors).logits(ids)
    assert np.abs(got - base).max() < 0.3 * np.abs(base).max()  # 4-bit weights: near, not equal
