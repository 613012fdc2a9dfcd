"""The CUDA engine (impnb/engine/) against the reference model, on random-weight models with the exact
architecture of SmolLM2-135M and Gemma-3-270M, and on tiny models of every architecture the engine runs.

GPU tests (marker ``gpu``) run on the device machine:
  * greedy continuations of 64 tokens are IDENTICAL between the engine (graph-captured decode, device argmax) and
    the reference, for bf16 and NVFP4 weights; Gemma's prompt is longer than its 512-token window, so the ring
    buffers wrap. On a difference the failure prints the golden diff (first diverging tap) and the reference's
    top-2 logit gap at that step;
  * graph replay == eager launches, and a replayed generation is deterministic (no warm-up / capture
    state leaks into the next generation);
  * every engine architecture's prefill logits are within the ``engine_logits`` tolerance and greedy tokens agree;
  * ``--backend check`` passes on agreement, and on a planted weight corruption names the first diverging tap and
    writes both golden dumps.
CPU tests: unsupported features raise Unsupported by name (the kernels' nvcc build: tests/test_kernels_compile.py).
"""
from __future__ import annotations


import numpy as np
import pytest

from tools.random_models import config_for, host_tensors
from impnb.errors import Unsupported



def _reference_greedy(model, prompt, n):
    cache = model.new_cache(len(prompt) + n)
    logits = model.forward(np.asarray(prompt), cache, last_only=True)[-1]
    ids, gaps = [], []
    for i in range(n):
        top2 = np.partition(logits, -2)[-2:]
        gaps.append(float(top2[1] - top2[0]))
        ids.append(int(np.argmax(logits)))
        if i + 1 < n:
            logits = model.forward(np.asarray(ids[-1:]), cache)[-1]
    return ids, gaps


def _golden_table(ref, fast, ids, tmp_path):
    from impnb import golden
    paths = []
    for label, model in (("reference", ref), ("cuda", fast)):
        rec = golden.GoldenRecorder()
        model.forward(np.asarray(ids), model.new_cache(len(ids)), taps=rec)
        paths.append(str(tmp_path / f"{label}.safetensors"))
        golden.save(paths[-1], rec, token_ids=list(map(int, ids)), backend=label)
    rows = golden.compare(golden.load(paths[0]), golden.load(paths[1]))
    return golden.format_table(rows, 1e-3)[0]


# ---------------------------------------------------------------- CPU
def test_unsupported_features_are_named():
    from impnb.engine.layers import check_supported
    cfg = config_for("smollm2-135m", num_hidden_layers=2)
    check_supported(cfg)  # the llama family runs
    from dataclasses import replace
    with pytest.raises(Unsupported, match="per-layer output scalars"):
        check_supported(replace(cfg, layer_scalar=True))
    with pytest.raises(Unsupported, match="QK-norm over chunks"):
        check_supported(replace(cfg, qk_norm=True, qk_norm_dim=32))


# ---------------------------------------------------------------- GPU
GREEDY_CASES = [("smollm2-135m", "bf16", 96), ("smollm2-135m", "nvfp4", 96),
                ("gemma3-270m", "bf16", 600), ("gemma3-270m", "nvfp4", 600)]


@pytest.mark.gpu
@pytest.mark.parametrize("arch,fmt,prompt_len", GREEDY_CASES, ids=[f"{a}-{f}" for a, f, _ in GREEDY_CASES])
def test_greedy_64_tokens_identical_to_reference(arch, fmt, prompt_len, tmp_path):
    from impnb.engine.model import EngineModel
    from impnb.model import Model
    cfg = config_for(arch)
    tensors = host_tensors(cfg, fmt, seed=7)
    ref = Model(cfg, tensors, backend="reference")
    fast = EngineModel(cfg, tensors, max_context=1024)
    prompt = np.random.default_rng(3).integers(0, cfg.vocab_size, size=prompt_len).tolist()
    want, gaps = _reference_greedy(ref, prompt, 64)
    got = fast.generate_greedy(prompt, 64)
    k = fast.engine.kernels_per_step.get(True)
    print(f"{arch} {fmt}: {sum(a == b for a, b in zip(got, want))}/64 tokens equal, {k} kernels per decode step, "
          f"min top-2 gap {min(gaps):.3e}")
    if got != want:
        i = next(j for j, (a, b) in enumerate(zip(got, want)) if a != b)
        table = _golden_table(ref, fast, prompt + want[:i], tmp_path)
        pytest.fail(f"{arch}/{fmt}: token {i} differs (cuda {got[i]} vs reference {want[i]}; reference top-2 gap "
                    f"{gaps[i]:.3e}); golden diff over prompt + {i} tokens:\n{table}")


@pytest.mark.gpu
def test_graph_replay_equals_eager_and_is_deterministic():
    from impnb.engine.engine import Engine
    cfg = config_for("gemma3-270m", num_hidden_layers=6, sliding_window=32, vocab_size=4096,
                     layer_types=["sliding_attention"] * 5 + ["full_attention"])
    eng = Engine(cfg, host_tensors(cfg, "bf16", seed=1), max_context=512, prefill_chunk=16)
    prompt = np.random.default_rng(5).integers(0, cfg.vocab_size, size=75).tolist()  # > 2 windows, odd chunks
    first = eng.generate_greedy(prompt, 48)
    again = eng.generate_greedy(prompt, 48)
    eager = eng.generate_greedy(prompt, 48, use_graph=False)
    assert first == again == eager
    eng.reset()
    eng.prefill(prompt)
    graph_logits = eng.decode_logits(first[0]).get()
    eng.reset()
    eng.prefill(prompt)
    eager_logits = eng.decode_logits(first[0], use_graph=False).get()
    np.testing.assert_array_equal(graph_logits, eager_logits)


TINY = dict(vocab_size=512, hidden_size=128, intermediate_size=256, num_hidden_layers=3, num_attention_heads=4,
            num_key_value_heads=2, head_dim=32, max_position_embeddings=512)
TINY_ARCHS = {
    "llama": dict(TINY, model_type="llama", rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                                          "high_freq_factor": 4.0,
                                                          "original_max_position_embeddings": 64},
                  rope_theta=500000.0),
    "mistral_window16": dict(TINY, model_type="mistral", sliding_window=16),
    "qwen2_bias": dict(TINY, model_type="qwen2"),
    "qwen3": dict(TINY, model_type="qwen3"),
    "qwen3_moe": dict(TINY, model_type="qwen3_moe", num_experts=8, num_experts_per_tok=2, moe_intermediate_size=64,
                      norm_topk_prob=True),
    "gemma3_window16": dict(TINY, model_type="gemma3_text", sliding_window=16, query_pre_attn_scalar=24,
                            layer_types=["sliding_attention", "sliding_attention", "full_attention"],
                            final_logit_softcapping=30.0),
}


@pytest.mark.gpu
@pytest.mark.parametrize("name", sorted(TINY_ARCHS))
def test_every_engine_architecture_matches_reference(name):
    from impnb.config import ModelConfig
    from impnb.engine.model import EngineModel
    from impnb.model import Model
    from impnb.tolerances import assert_close
    cfg = ModelConfig.from_hf(TINY_ARCHS[name])
    tensors = host_tensors(cfg, "bf16", seed=11)
    ref = Model(cfg, tensors, backend="reference")
    fast = EngineModel(cfg, tensors, max_context=256, prefill_chunk=8)  # rings of 16 + 8 slots wrap in prefill
    ids = np.random.default_rng(4).integers(0, cfg.vocab_size, size=70)
    want = ref.forward(ids, ref.new_cache(len(ids), chunk=8))
    got = fast.logits(ids)
    rel = float(np.abs(got - want).max() / np.abs(want).max())
    print(f"{name}: prefill max relative logit difference {rel:.2e}")
    assert_close("engine_logits", want, got, args=(want,))
    want_ids, _ = _reference_greedy(ref, ids[:20].tolist(), 24)
    assert fast.generate_greedy(ids[:20].tolist(), 24) == want_ids


@pytest.mark.gpu
def test_check_backend_passes_then_names_the_first_diverging_tap(tmp_path):
    from impnb.config import ModelConfig
    from impnb.engine.model import CheckedModel
    cfg = ModelConfig.from_hf(TINY_ARCHS["llama"])
    model = CheckedModel(cfg, host_tensors(cfg, "bf16", seed=2), dump_prefix=str(tmp_path / "check"))
    ids = np.arange(12) * 7
    cache = model.new_cache(32)
    model.forward(ids, cache)
    model.forward(ids[:1], cache)  # a decode step, checked too
    model.fast.engine.w.layers[1].o.data[:, :8] = 0  # plant a bug in layer 1's o_proj
    with pytest.raises(AssertionError, match=r"first diverging tap: blk\.1\.attn_out"):
        model.forward(ids, model.new_cache(32))
    assert (tmp_path / "check.reference.safetensors").exists() and (tmp_path / "check.cuda.safetensors").exists()


def test_cuda_backend_without_gpu_is_a_clear_error_not_a_reroute():
    from impnb.api import _build_model
    from impnb.config import ModelConfig
    from impnb.cuda import _runtime as runtime
    from impnb.errors import BackendUnavailable
    if runtime.gpu_usable():
        pytest.skip("a GPU is present: the engine would load")
    cfg = ModelConfig.from_hf(TINY_ARCHS["llama"])
    with pytest.raises(BackendUnavailable):
        _build_model(cfg, host_tensors(cfg, "bf16"), "cuda", None)


def test_quantize_nvfp4_rewrites_linears_only_and_unties_the_head():
    from impnb.config import ModelConfig
    from impnb.model.quantized import QuantizedLinears
    from impnb.formats import NVFP4Tensor
    from impnb.model import Model
    cfg = ModelConfig.from_hf({**TINY_ARCHS["llama"], "tie_word_embeddings": True})
    raw = host_tensors(cfg, "bf16", seed=3)
    q = QuantizedLinears(cfg, raw)
    assert isinstance(q["model.layers.0.self_attn.q_proj.weight"], NVFP4Tensor)
    assert isinstance(q["model.layers.2.mlp.down_proj.weight"], NVFP4Tensor)
    assert isinstance(q["lm_head.weight"], NVFP4Tensor) and "lm_head.weight" in q
    assert q["model.embed_tokens.weight"] is raw["model.embed_tokens.weight"]
    assert q["model.norm.weight"] is raw["model.norm.weight"]
    ref = Model(cfg, q, backend="reference")
    plain = Model(cfg, raw, backend="reference")
    ids = np.arange(10) * 13
    a, b = ref.logits(ids), plain.logits(ids)
    rel = float(np.abs(a - b).max() / np.abs(b).max())
    assert 0 < rel < 0.2, rel  # W4 quantization changes the logits, boundedly
