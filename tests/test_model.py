"""Model API on random NumPy checkpoints (no torch needed): chunked prefill, decode, last_only, taps, errors,
NVFP4 weights dequantized once at load, QK-norm over chunks of head_dim."""
from __future__ import annotations

import numpy as np
import pytest

from impnb import FormatError, ops
from impnb.config import ModelConfig
from impnb.kvcache import ContextOverflow
from impnb.model import Model, blocks

GEMMA3 = {"model_type": "gemma3_text", "vocab_size": 97, "hidden_size": 32, "intermediate_size": 48,
          "num_hidden_layers": 3, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16,
          "sliding_window": 5, "query_pre_attn_scalar": 16, "max_position_embeddings": 256,
          "layer_types": ["sliding_attention", "sliding_attention", "full_attention"]}
LLAMA = {"model_type": "llama", "vocab_size": 97, "tie_word_embeddings": True, "hidden_size": 32, "intermediate_size": 48,
         "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 256}


def random_tensors(cfg: ModelConfig, rng, *, qk_norm_dim=None) -> dict:
    h = cfg.hidden_size

    def n(*shape, scale=None):
        return (rng.standard_normal(shape) * (scale or shape[-1] ** -0.5)).astype(np.float32)

    t = {"model.embed_tokens.weight": n(cfg.vocab_size, h, scale=1.0), "model.norm.weight": n(h, scale=0.1)}
    for lc in cfg.layers:
        p, d, i = f"model.layers.{lc.index}.", lc.head_dim, lc.intermediate_size
        t.update({p + "self_attn.q_proj.weight": n(lc.n_heads * d, h), p + "self_attn.k_proj.weight":
                  n(lc.n_kv_heads * d, h), p + "self_attn.v_proj.weight": n(lc.n_kv_heads * d, h),
                  p + "self_attn.o_proj.weight": n(h, lc.n_heads * d), p + "mlp.gate_proj.weight": n(i, h),
                  p + "mlp.up_proj.weight": n(i, h), p + "mlp.down_proj.weight": n(h, i),
                  p + "input_layernorm.weight": n(h, scale=0.1) + 1, p + "post_attention_layernorm.weight":
                  n(h, scale=0.1) + 1})
        if cfg.sandwich_norms:
            t[p + "pre_feedforward_layernorm.weight"] = n(h, scale=0.1)
            t[p + "post_feedforward_layernorm.weight"] = n(h, scale=0.1)
        if cfg.qk_norm:
            t[p + "self_attn.q_norm.weight"] = n(qk_norm_dim or d, scale=0.1)
            t[p + "self_attn.k_norm.weight"] = n(qk_norm_dim or d, scale=0.1)
    return t


@pytest.fixture
def gemma(rng):
    cfg = ModelConfig.from_hf(GEMMA3)
    return Model(cfg, random_tensors(cfg, rng), backend="reference")


def test_chunked_prefill_and_decode_equal_one_pass(gemma, rng):
    ids = rng.integers(0, 97, size=23)
    one = gemma.forward(ids, gemma.new_cache(32, chunk=32))
    chunked = gemma.forward(ids, gemma.new_cache(32, chunk=3))  # the window-5 rings wrap several times
    cache = gemma.new_cache(32, chunk=4)
    stepped = np.concatenate([gemma.forward(ids[:4], cache)] + [gemma.forward([i], cache) for i in ids[4:]])
    scale = np.abs(one).max()
    assert np.abs(chunked - one).max() < 1e-5 * scale and np.abs(stepped - one).max() < 1e-5 * scale
    last = gemma.forward(ids, gemma.new_cache(32, chunk=5), last_only=True)
    assert last.shape == (1, 97) and np.abs(last[0] - one[-1]).max() < 1e-5 * scale
    assert np.array_equal(gemma.logits(ids), one)


def test_taps_in_graph_order(gemma, rng):
    class Taps:
        def __init__(self):
            self.keys = []

        def tap(self, name, layer, array):
            assert array.shape[0] == 6
            self.keys.append(name if layer is None else f"blk.{layer}.{name}")

    taps = Taps()
    gemma.forward(rng.integers(0, 97, size=6), gemma.new_cache(8), taps=taps)
    per_layer = ["attn_norm", "q", "k", "v", "attn_out", "ffn_norm", "ffn_out", "residual"]
    assert taps.keys == ["embedding"] + [f"blk.{i}.{n}" for i in range(3) for n in per_layer] + ["final_norm",
                                                                                                  "logits"]


def test_prompt_past_the_cache_is_a_clear_error(gemma):
    cache = gemma.new_cache(8)
    gemma.forward(np.arange(6), cache)
    with pytest.raises(ContextOverflow, match="3 new tokens after 6 cached ones exceed the cache of 8"):
        gemma.forward(np.arange(3), cache)
    with pytest.raises(ContextOverflow, match="context of 256"):
        gemma.new_cache(1000)


def test_missing_or_misshapen_tensor_names_it(rng):
    cfg = ModelConfig.from_hf(LLAMA)
    tensors = random_tensors(cfg, rng)
    del tensors["model.layers.1.mlp.up_proj.weight"]
    with pytest.raises(FormatError, match="layers.1.mlp.up_proj.weight"):
        Model(cfg, tensors)
    untied = ModelConfig.from_hf({**LLAMA, "tie_word_embeddings": False})
    with pytest.raises(FormatError, match="lacks lm_head.weight.*tie_word_embeddings=false"):
        Model(untied, random_tensors(untied, rng))  # no lm_head in the checkpoint
    tensors = random_tensors(cfg, rng)
    tensors["model.layers.0.self_attn.k_proj.weight"] = tensors["model.layers.0.self_attn.q_proj.weight"]
    with pytest.raises(FormatError, match=r"k_proj.weight: shape \(32, 32\), expected \(16, 32\)"):
        Model(cfg, tensors)


def test_nvfp4_weights_are_dequantized_once_at_load(rng):
    cfg = ModelConfig.from_hf(LLAMA)
    tensors = random_tensors(cfg, rng)
    quantized = dict(tensors)
    for name, w in tensors.items():
        if name.endswith("_proj.weight"):
            quantized[name] = ops.nvfp4_quantize(w, backend="reference")
    dequantized = {k: (ops.nvfp4_dequantize(v, backend="reference") if k.endswith("_proj.weight") else v)
                   for k, v in quantized.items()}
    ids = rng.integers(0, 97, size=7)
    a = Model(cfg, quantized).logits(ids)
    b = Model(cfg, dequantized).logits(ids)
    assert np.array_equal(a, b)
    assert not np.allclose(a, Model(cfg, tensors).logits(ids), atol=1e-6)  # the quantization did something


def test_qk_norm_over_chunks_of_head_dim(rng):
    cfg = ModelConfig.from_hf({**LLAMA, "model_type": "qwen3", "head_dim": 8})
    model = Model(cfg, random_tensors(cfg, rng, qk_norm_dim=4))  # head_dim 8, norm per chunk of 4
    x = rng.standard_normal((3, 4, 8)).astype(np.float32)
    w = model.layers[0]["q_norm"]
    got = blocks._qk_norm(model.ops, x, w, cfg)
    x64 = x.astype(np.float64).reshape(3, 4, 2, 4)
    want = x64 / np.sqrt((x64 ** 2).mean(-1, keepdims=True) + cfg.rms_eps) * w
    np.testing.assert_allclose(got, want.reshape(3, 4, 8), rtol=1e-5, atol=1e-6)
    assert np.isfinite(model.logits([1, 2, 3])).all()
    bad = random_tensors(cfg, rng, qk_norm_dim=3)
    with pytest.raises(FormatError, match="does not divide head_dim 8"):
        Model(cfg, bad)


def test_unused_checkpoint_tensors_are_reported(rng):
    cfg = ModelConfig.from_hf(LLAMA)
    tensors = random_tensors(cfg, rng)
    tensors["model.layers.0.mlp.gate_proj.lora_A"] = np.zeros((2, 2), np.float32)
    tensors["model.vision_tower.patch_embed.weight"] = np.zeros((2, 2), np.float32)  # multimodal: ignorable
    with pytest.warns(UserWarning, match="1 checkpoint tensors are not used.*layers.0.mlp.gate_proj.lora_A"):
        model = Model(cfg, tensors)
    assert model.unused_tensors == ["layers.0.mlp.gate_proj.lora_A", "vision_tower.patch_embed.weight"]


def test_any_chunking_equals_one_pass_through_the_whole_model(rng):
    """Hypothesis over windows and chunk sizes: the full model's logits do not depend on how prefill is chunked."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    tensors_by_window = {}

    @settings(max_examples=12, deadline=None)
    @given(window=st.integers(1, 6), chunk=st.integers(1, 7), n=st.integers(1, 30))
    def check(window, chunk, n):
        cfg = ModelConfig.from_hf({**GEMMA3, "sliding_window": window})
        tensors = tensors_by_window.setdefault(window, random_tensors(cfg, np.random.default_rng(window)))
        model = Model(cfg, tensors)
        ids = np.random.default_rng(n).integers(0, 97, size=n)
        one = model.forward(ids, model.new_cache(n, chunk=n))
        chunked = model.forward(ids, model.new_cache(n, chunk=chunk))
        assert np.abs(chunked - one).max() <= 1e-5 * np.abs(one).max()

    check()
