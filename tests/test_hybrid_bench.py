"""The Qwen3.5-shaped benchmark stack (tools/bench_hybrid.py, ``bench_generate.py --random-weights qwen3.5-9b``): its random
weights load into the model with nothing missing or left over (CPU, a shrunken copy), and on a GPU the op-by-op
CUDA model with the real linear-layer geometry matches the reference model."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from impnb import tolerances
from impnb.cuda._runtime import to_host
from impnb.model import Model

ROOT = Path(__file__).resolve().parent.parent


def _bench():
    spec = importlib.util.spec_from_file_location("bench_hybrid", ROOT / "tools" / "bench_hybrid.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _small_stack(bench, **override):
    """qwen3.5-9b with a small hidden size / vocabulary (the linear-layer geometry as given)."""
    arch = dict(bench.HYBRID_ARCHS["qwen3.5-9b"], **override)
    bench.HYBRID_ARCHS["test-stack"] = arch
    return bench.hybrid_config("test-stack", 4)[0]


def test_qwen35_preset_weights_load_and_run():
    bench = _bench()
    cfg, _ = bench.hybrid_config("qwen3.5-9b", 8)
    assert [lc.kind for lc in cfg.layers] == ["linear", "linear", "linear", "full"] * 2
    assert (cfg.linear_attention.n_key_heads, cfg.linear_attention.key_head_dim) == (16, 128)
    assert (cfg.linear_attention.n_value_heads, cfg.linear_attention.value_head_dim) == (32, 128)
    small = _small_stack(bench, hidden_size=64, intermediate_size=96, vocab_size=300, head_dim=32,
                         linear_num_key_heads=2, linear_num_value_heads=4, linear_key_head_dim=16,
                         linear_value_head_dim=16)
    model = Model(small, bench.hybrid_host_tensors(small), backend="reference")
    assert model.unused_tensors == []
    logits = model.logits(np.arange(70) % 300)
    assert np.isfinite(logits).all() and logits.std() > 0


@pytest.mark.gpu
def test_op_by_op_cuda_model_matches_the_reference_at_real_linear_geometry():
    """16 key heads x 128 and 32 value heads x 128 in the linear layers; a 100-token prefill (chunked delta rule)
    then 4 decode steps (recurrent form) on the CUDA ops, against the reference model."""
    bench = _bench()
    cfg = _small_stack(bench, hidden_size=512, intermediate_size=1024, vocab_size=2048)
    tensors = bench.hybrid_host_tensors(cfg, seed=1)
    ref, fast = Model(cfg, tensors, backend="reference"), Model(cfg, tensors, backend="cuda")
    ids = list(np.random.default_rng(2).integers(0, cfg.vocab_size, size=100))
    caches = ref.new_cache(110), fast.new_cache(110)
    want, got = ref.forward(ids, caches[0]), fast.forward(ids, caches[1])
    tolerances.assert_close("engine_logits", want, to_host(got), args=(want,))
    for token in (5, 17, 99, 1000):
        want, got = ref.forward([token], caches[0]), fast.forward([token], caches[1])
        tolerances.assert_close("engine_logits", want, to_host(got), args=(want,))
