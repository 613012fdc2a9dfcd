"""Qwen3-Next, Qwen3.5 and Qwen3.5-MoE (hybrid gated-DeltaNet / attention models) against transformers float32 on
tiny random checkpoints built in the test, and the recurrent cache's lifecycle.

Each case builds a model with transformers (config + from_config; norms, A_log and dt_bias jittered off their
init), saves it as safetensors and loads it through ``impnb.load_checkpoint`` + ``impnb.model.Model``. The prompt is
150 tokens: longer than the delta rule's chunk (64), run through impnb's cache in prefill chunks of 50 or 256
tokens, so the chunked prefill sees partial chunks and states carried across forward calls. Then a greedy decode
of 8 tokens token by token (the recurrent forms) must give transformers' own ``generate`` ids and logits.
"""
from __future__ import annotations

import json
import warnings
from dataclasses import replace

import numpy as np
import pytest

torch = pytest.importorskip("torch")
tf = pytest.importorskip("transformers")

import impnb  # noqa: E402
from impnb.model import Model, OpTable  # noqa: E402
from impnb.recurrent_cache import HybridCache  # noqa: E402

pytestmark = pytest.mark.oracle

TOL = 3e-5  # as tests/test_model_oracle.py (float32 on both sides); observed 2.8e-7 .. 1e-6 here
SMALL = dict(vocab_size=300, hidden_size=64, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
             max_position_embeddings=512, linear_num_key_heads=2, linear_num_value_heads=4, linear_key_head_dim=8,
             linear_value_head_dim=12)
MOE = dict(num_experts=6, num_experts_per_tok=2, moe_intermediate_size=24, shared_expert_intermediate_size=40)


def _configs():
    return {
        # MoE with shared expert, dense layers by decoder_sparse_step and mlp_only_layers, unnormalised top-k, a
        # custom layer pattern, equal key / value head counts, tied embeddings, partial rotary 0.5
        "qwen3_next_moe_sparse_tied": (tf.Qwen3NextConfig(
            **{**SMALL, "linear_num_value_heads": 2}, num_hidden_layers=5, intermediate_size=96, **MOE,
            decoder_sparse_step=2, mlp_only_layers=[3], norm_topk_prob=False, tie_word_embeddings=True,
            layer_types=["linear_attention", "full_attention", "linear_attention", "linear_attention",
                         "full_attention"], rope_parameters={"rope_type": "default", "rope_theta": 5e4,
                                                             "partial_rotary_factor": 0.5}), 50),
        "qwen3_next_default_pattern": (tf.Qwen3NextConfig(**SMALL, num_hidden_layers=4, intermediate_size=96,
                                                          **MOE), 256),
        # Qwen3.5 dense: GQA linear heads (4 value heads per... 2 key heads), multi-section RoPE parameters
        "qwen3_5_dense_mrope": (tf.Qwen3_5TextConfig(
            **SMALL, num_hidden_layers=4, intermediate_size=96, rope_parameters={
                "rope_type": "default", "rope_theta": 1e6, "partial_rotary_factor": 0.25, "mrope_interleaved": True,
                "mrope_section": [1, 1, 0]}), 50),
        "qwen3_5_moe": (tf.Qwen3_5MoeTextConfig(**{**SMALL, "head_dim": 32}, num_hidden_layers=4, **MOE,
                                                layer_types=["linear_attention", "full_attention"] * 2), 256),
    }


CASES = list(_configs())


def _build(config, path):
    torch.manual_seed(0)
    model = tf.AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if any(s in name for s in ("norm", "A_log", "dt_bias")):
                p.add_(torch.randn_like(p) * 0.1)  # off the trivial init (zeros / ones)
    model.save_pretrained(path)
    return model


def _load(path, backend="reference"):
    ckpt = impnb.load_checkpoint(path)
    return ckpt, Model(ckpt.config, ckpt.tensors, backend=backend)


def _rel(a, b):
    return float(np.abs(a - b).max() / np.abs(b).max())


@pytest.mark.parametrize("name", CASES)
def test_logits_and_greedy_decode_match_transformers(name, tmp_path):
    config, chunk = _configs()[name]
    hf = _build(config, tmp_path)
    ckpt, model = _load(tmp_path)
    assert ckpt.config.linear_attention is not None
    assert model.unused_tensors == [], f"checkpoint tensors the model ignored: {model.unused_tensors}"
    ids = np.random.default_rng(1).integers(0, config.vocab_size, size=150)
    cache = model.new_cache(len(ids) + 8, chunk=chunk)
    ours = model.forward(ids, cache)
    with torch.no_grad():
        theirs = hf(torch.tensor(ids[None])).logits[0].numpy()
    rel = _rel(ours, theirs)
    print(f"{name}: prefill max relative logit difference {rel:.2e}")
    assert np.isfinite(ours).all() and rel < TOL
    steps, tokens = [], [int(ours[-1].argmax())]
    for _ in range(7):
        steps.append(model.forward([tokens[-1]], cache)[0])
        tokens.append(int(steps[-1].argmax()))
    with torch.no_grad():
        gen = hf.generate(torch.tensor(ids[None]), max_new_tokens=8, do_sample=False, output_logits=True,
                          return_dict_in_generate=True, pad_token_id=0)
    assert gen.sequences[0, len(ids):].tolist() == tokens
    decode_rel = max(_rel(a, b[0].numpy()) for a, b in zip(steps, gen.logits[1:]))
    print(f"{name}: decode max relative logit difference {decode_rel:.2e}")
    assert decode_rel < TOL


def test_multimodal_wrapper_checkpoint_loads_its_text_model(tmp_path):
    """Qwen3_5ForConditionalGeneration layout: model_type qwen3_5 with text_config, tensors under
    model.language_model., a vision tower and multi-token-prediction tensors the text model ignores."""
    from impnb.loaders import save_safetensors
    config, _ = _configs()["qwen3_5_dense_mrope"]
    hf = _build(config, tmp_path / "text")
    ckpt, model = _load(tmp_path / "text")
    wrapped = {k.replace("model.", "model.language_model.", 1): np.asarray(v) for k, v in ckpt.tensors.items()}
    wrapped["model.visual.blocks.0.attn.qkv.weight"] = np.ones((3, 3), np.float32)
    wrapped["mtp.layers.0.self_attn.q_proj.weight"] = np.ones((3, 3), np.float32)
    (tmp_path / "mm").mkdir()
    save_safetensors(str(tmp_path / "mm" / "model.safetensors"), wrapped)
    text = json.loads((tmp_path / "text" / "config.json").read_text())
    (tmp_path / "mm" / "config.json").write_text(json.dumps({"model_type": "qwen3_5", "architectures": [
        "Qwen3_5ForConditionalGeneration"], "text_config": text, "vision_config": {}, "tie_word_embeddings": False}))
    ids = np.arange(20) % 300
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the vision / mtp tensors are known-ignorable: no "unused tensors" warning
        _, mm = _load(tmp_path / "mm")
    np.testing.assert_array_equal(mm.logits(ids), model.logits(ids))
    with torch.no_grad():
        np.testing.assert_allclose(mm.logits(ids), hf(torch.tensor(ids[None])).logits[0].numpy(), rtol=0, atol=1e-4)


# ---- the recurrent cache ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def hybrid(tmp_path_factory):
    path = tmp_path_factory.mktemp("qwen3_5_moe")
    _build(_configs()["qwen3_5_moe"][0], path)
    return _load(path)[1]


def test_cache_is_hybrid_with_fixed_size_states(hybrid):
    cache = hybrid.new_cache(100)
    assert isinstance(cache, HybridCache)
    lin = hybrid.config.linear_attention
    states = [layer for layer, lc in zip(cache.layers, hybrid.config.layers) if lc.kind == "linear"]
    assert len(states) == 2
    assert states[0].conv.shape == (lin.conv_kernel - 1, lin.conv_channels)
    assert states[0].delta.shape == (lin.n_value_heads, lin.key_head_dim, lin.value_head_dim)
    before = cache.nbytes
    hybrid.forward(np.arange(30) % 300, cache)
    assert cache.nbytes == before  # no growth: states are fixed, KV slots preallocated


def test_turns_on_one_cache_equal_one_pass_and_reset_equals_fresh(hybrid):
    ids = np.random.default_rng(4).integers(0, 300, size=40)
    full = hybrid.logits(ids)
    cache = hybrid.new_cache(64, chunk=16)
    turns = np.concatenate([hybrid.forward(ids[:23], cache), hybrid.forward(ids[23:24], cache),
                            hybrid.forward(ids[24:], cache)])
    np.testing.assert_allclose(turns, full, rtol=0, atol=2e-5 * np.abs(full).max())
    cache.reset()
    assert cache.position == 0
    np.testing.assert_array_equal(hybrid.forward(ids[:23], cache), hybrid.forward(ids[:23], hybrid.new_cache(
        64, chunk=16)))


def test_snapshot_restore_regenerates_a_turn_and_rewind_needs_a_snapshot(hybrid):
    ids = np.random.default_rng(5).integers(0, 300, size=30)
    cache = hybrid.new_cache(64)
    hybrid.forward(ids[:12], cache)
    snap = cache.snapshot()
    first = hybrid.forward(ids[12:20], cache)  # a reply that gets regenerated
    with pytest.raises(ValueError, match="snapshot"):
        cache.rewind(12)
    cache.rewind(12, snap)
    assert cache.position == 12
    np.testing.assert_array_equal(hybrid.forward(ids[12:20], cache), first)
    np.testing.assert_allclose(hybrid.forward(ids[20:], cache), hybrid.logits(ids)[20:], rtol=0,
                               atol=2e-5 * np.abs(first).max())


def test_golden_dump_holds_the_recurrent_states(hybrid):
    from impnb.golden import GoldenRecorder
    rec = GoldenRecorder()
    ids = np.arange(70) % 300
    hybrid.forward(ids, hybrid.new_cache(80, chunk=32), taps=rec)  # 3 prefill chunks
    lin = hybrid.config.linear_attention
    assert rec.tensors["blk.0.recurrent_state"].shape == (3, lin.n_value_heads, lin.key_head_dim,
                                                            lin.value_head_dim)
    assert rec.tensors["blk.0.conv_state"].shape == (3, lin.conv_kernel - 1, lin.conv_channels)
    assert rec.tensors["blk.0.delta_out"].shape == (70, lin.n_value_heads, lin.value_head_dim)
    assert rec.tensors["blk.1.q"].shape == (70, 4, 32) and "blk.1.recurrent_state" not in rec.tensors
    assert np.abs(rec.tensors["blk.2.recurrent_state"]).max() > 0


def test_linear_layers_run_their_cuda_ops_in_check_mode(hybrid, monkeypatch):
    """The layer code unchanged on another backend: the new ops through impnb.ops' "check" (Numba kernels in the
    simulator cross-checked against the references on every call), the rest on the reference."""
    from impnb import ops
    from impnb.cuda import _runtime
    if _runtime.mode() is None:
        pytest.skip("no CUDA GPU and no Numba simulator")
    calls = []
    new_ops = ("causal_conv1d", "causal_conv1d_step", "gdn_gates", "gated_delta_rule", "gated_delta_rule_chunked",
               "gated_rms_norm", "sigmoid_gate")
    real_call = ops.call

    def counting(name, *args, backend=None, **kwargs):
        calls.append(name)
        return real_call(name, *args, backend=backend, **kwargs)

    monkeypatch.setattr(ops, "call", counting)
    ids = np.random.default_rng(6).integers(0, 300, size=4)
    want = hybrid.logits(ids)
    saved, config = hybrid.ops, hybrid.config
    try:
        table = OpTable("reference")
        for name in new_ops:
            setattr(table, name, lambda *a, _n=name, **k: ops.call(_n, *a, backend="check", **k))
        hybrid.ops = table  # and delta-rule chunks of 2: the simulator runs a Python thread per (head, i, m) pair
        hybrid.config = replace(config, linear_attention=replace(config.linear_attention, chunk_size=2))
        cache = hybrid.new_cache(16)
        got = np.concatenate([hybrid.forward(ids[:3], cache), hybrid.forward(ids[3:], cache)])  # chunked, then a step
    finally:
        hybrid.ops, hybrid.config = saved, config
    assert set(new_ops) <= set(calls)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * np.abs(want).max())
