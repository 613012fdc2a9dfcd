"""GPU checks of the engine built from registered ops (marker ``gpu``: they skip without a GPU; run them on the
device machine with ``python -m pytest -q tests/test_gpu_engine.py tests/test_crosscheck.py tests/test_cuda_model.py
tests/test_cuda_infra.py``):

  * every fused op (each engine kernel's op) against its reference at REAL shapes (the cases' "real" size),
    through the tolerance table with canaries around every output;
  * greedy 64-token continuations on the CUDA backend equal the reference for SmolLM2-, Gemma-3- and
    Qwen3-MoE-shaped random models (the graph-captured engine) and Gemma-4- and gpt-oss-shaped ones (op by op on
    the registry's CUDA ops, weights and KV cache resident on the device);
  * check mode: a bug planted in a fused kernel's wrapper (a wrong eps) is reported at the right op and layer, by
    the engine's op-by-op replay of its decode step and by the op-by-op model.

Decode speed before / after a change (same machine, same run), e.g. against the commit before the engine became
registered ops:
    git worktree add /tmp/impnb-before 814cced && (cd /tmp/impnb-before && python tools/bench_generate.py --no-hf \\
        --out /tmp/before.json) && python tools/bench_generate.py --no-hf --out /tmp/after.json \\
        --random-weights smollm2-135m,gemma3-270m,qwen3-30b-a3b
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest

from impnb import ops

pytestmark = pytest.mark.gpu

FUSED = sorted(n for n, s in ops.OPS.items() if any(k for k in s.kernels) and n not in (
    "fp8_e4m3_encode", "fp8_e4m3_decode", "e2m1_encode", "e2m1_decode", "fp4_pack", "fp4_unpack", "nvfp4_quantize",
    "fake_quantize_nvfp4_activations"))


def _real_cases():
    from impnb.conformance.cases import load_all
    cases = load_all()
    for name in FUSED:
        for c in cases[name]:
            yield pytest.param(c, id=str(c))


@pytest.mark.parametrize("case", list(_real_cases()))
def test_engine_op_matches_reference_at_real_shapes(case):
    from tests.test_crosscheck import run_checked
    args, kwargs = case.make(np.random.default_rng(17), "real")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        run_checked(case.op, *args, **kwargs)


def _reference_greedy(model, prompt, n):
    cache = model.new_cache(len(prompt) + n)
    logits = model.forward(np.asarray(prompt), cache, last_only=True)[-1]
    ids = []
    for i in range(n):
        ids.append(int(np.argmax(logits)))
        if i + 1 < n:
            logits = model.forward(np.asarray(ids[-1:]), cache)[-1]
    return ids


ENGINE_ARCHS = ["smollm2-135m", "gemma3-270m", "qwen3_moe"]


@pytest.mark.parametrize("arch", ENGINE_ARCHS)
def test_greedy_64_tokens_on_the_engine_equal_the_reference(arch):
    from impnb.config import ModelConfig
    from impnb.engine.model import EngineModel
    from impnb.model import Model
    from tests.test_cuda_model import TINY_ARCHS
    from tools.random_models import config_for, host_tensors
    cfg = ModelConfig.from_hf(TINY_ARCHS[arch]) if arch in TINY_ARCHS else config_for(arch)
    tensors = host_tensors(cfg, "bf16", seed=7)
    prompt = np.random.default_rng(3).integers(0, cfg.vocab_size, size=40 if arch in TINY_ARCHS else 96).tolist()
    want = _reference_greedy(Model(cfg, tensors, backend="reference"), prompt, 64)
    assert EngineModel(cfg, tensors, max_context=1024).generate_greedy(prompt, 64) == want


@pytest.mark.parametrize("arch", ["gemma4_moe_dual_geometry", "gemma4_ple_kv_sharing", "gpt_oss_sinks"])
def test_greedy_64_tokens_op_by_op_on_the_gpu_equal_the_reference(arch, tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    import impnb
    from impnb.api import _build_model
    from impnb.model import Model
    from tests.test_model_oracle import _build, _configs
    config, _ = _configs()[arch]
    _build(config, tmp_path)
    ck = impnb.load_checkpoint(tmp_path)
    fast = _build_model(ck.config, ck.tensors, "cuda", None)  # the engine refuses these: op by op on CUDA ops
    assert isinstance(fast, Model) and fast.xp is not np, "weights and KV cache must be resident on the device"
    prompt = np.random.default_rng(5).integers(0, ck.config.vocab_size, size=30).tolist()
    want = _reference_greedy(Model(ck.config, ck.tensors, backend="reference"), prompt, 64)
    assert _reference_greedy(fast, prompt, 64) == want


def test_planted_eps_in_a_fused_kernel_wrapper_is_reported_at_its_op_and_layer(monkeypatch):
    from impnb.config import ModelConfig
    from impnb.cuda import linear as linear_ops
    from impnb.engine.model import CheckedModel
    from impnb.errors import CrossCheckError
    from tests.test_cuda_model import TINY_ARCHS
    from tools.random_models import host_tensors
    cfg = ModelConfig.from_hf(TINY_ARCHS["llama"])
    model = CheckedModel(cfg, host_tensors(cfg, "bf16", seed=2))
    cache = model.new_cache(32)
    ids = np.arange(12) * 7
    model.forward(ids, cache)
    model.forward(ids[:1], cache)  # a decode step checked op by op, clean
    target = model.fast.engine.w.layers[1].ffn_norm
    original = linear_ops.rms_norm_gemv

    def planted(w, x, y, *, norm, eps, **kw):  # the hook: layer 1's gate|up GEMV normalises with a wrong eps
        return original(w, x, y, norm=norm, eps=eps * 1e4 if norm is target else eps, **kw)

    monkeypatch.setattr(linear_ops, "rms_norm_gemv", planted)
    with pytest.raises(CrossCheckError) as info:
        model.forward(ids[1:2], cache)
    assert (info.value.op, info.value.layer) == ("rms_norm_linear", 1)
    assert "layer 1 of the engine's decode step" in str(info.value)


def test_planted_eps_in_a_cuda_op_is_reported_op_by_op(monkeypatch):
    from impnb.config import ModelConfig
    from impnb.cuda import norms as norm_ops
    from impnb.errors import CrossCheckError
    from impnb.model import Model
    from tests.test_cuda_model import TINY_ARCHS
    from tools.random_models import host_tensors
    cfg = ModelConfig.from_hf(TINY_ARCHS["qwen3"])
    model = Model(cfg, host_tensors(cfg, "bf16", seed=3), backend="check")
    target = model.layers[2]["ffn_norm"]
    original = norm_ops.rms_norm

    def planted(x, weight, *, eps, offset=0.0):
        return original(x, weight, eps=eps * 1e4 if weight is target else eps, offset=offset)

    monkeypatch.setattr(norm_ops, "rms_norm", planted)
    with pytest.raises(CrossCheckError) as info:
        model.logits(np.arange(9))
    assert (info.value.op, info.value.layer) == ("rms_norm", 2)
