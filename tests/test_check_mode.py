"""Check mode at op granularity: a model run with backend="check:<name>" (or "check": the CUDA ops) runs every op
on both paths and stops at the FIRST op whose output leaves its tolerance, naming the op, the decoder layer, the
worst index and both values with their bits. Shown on the CPU with a registered backend that is the reference with
a bug planted through a test-only hook (ops.register_backend)."""
from __future__ import annotations

import numpy as np
import pytest

from impnb import ops
from impnb.config import ModelConfig
from impnb.errors import CrossCheckError
from impnb.model import Model
from impnb.reference.embedding import embedding as ref_embedding
from impnb.reference.norms import rms_norm as ref_rms_norm
from tools.random_models import host_tensors

TINY = dict(vocab_size=96, hidden_size=64, intermediate_size=96, num_hidden_layers=4, num_attention_heads=4,
            num_key_value_heads=2, head_dim=16, max_position_embeddings=64)


@pytest.fixture
def planted():
    """Register backend "planted" = the reference with the given replacements; unregistered afterwards."""
    def register(**replacements):
        ops.register_backend("planted", lambda op: replacements.get(op) or ops.reference_impl(op))
    yield register
    ops.unregister_backend("planted")


def test_a_clean_backend_passes_with_identical_logits(planted):
    cfg = ModelConfig.from_hf({**TINY, "model_type": "llama"})
    tensors = host_tensors(cfg, "bf16", seed=1)
    planted()
    ids = np.arange(9) * 5
    np.testing.assert_array_equal(Model(cfg, tensors, backend="check:planted").logits(ids),
                                  Model(cfg, tensors, backend="reference").logits(ids))


def test_a_wrong_eps_in_one_layers_norm_is_reported_at_that_op_and_layer(planted):
    cfg = ModelConfig.from_hf({**TINY, "model_type": "llama"})
    model = Model(cfg, host_tensors(cfg, "bf16", seed=2), backend="check:planted")
    target = model.layers[2]["ffn_norm"]

    def rms_norm(x, weight, *, eps, offset=0.0):  # the hook: layer 2's FFN norm uses a wrong eps
        return ref_rms_norm(x, weight, eps=0.05 if weight is target else eps, offset=offset)

    planted(rms_norm=rms_norm)
    with pytest.raises(CrossCheckError) as info:
        model.logits(np.arange(7) * 3)
    err = info.value
    assert (err.op, err.layer, err.where) == ("rms_norm", 2, "layer 2")
    message = str(err)
    assert message.startswith("first op outside its tolerance: layer 2, rms_norm:")
    assert err.reference != err.fast and err.reference_bits.startswith("0x") and err.fast_bits.startswith("0x")
    assert err.reference_bits in message and err.fast_bits in message and str(err.index) in message


def test_a_dropped_embedding_scale_is_reported_outside_the_layers(planted):
    cfg = ModelConfig.from_hf({**TINY, "model_type": "gemma3_text", "sliding_window": 8,
                               "query_pre_attn_scalar": 16})
    planted(embedding=lambda ids, table, *, scale=1.0: ref_embedding(ids, table))  # the scale dropped
    model = Model(cfg, host_tensors(cfg, "bf16", seed=3), backend="check:planted")
    with pytest.raises(CrossCheckError) as info:
        model.logits(np.arange(5))
    assert (info.value.op, info.value.layer, info.value.where) == ("embedding", None, "outside the layers")


def test_load_path_builds_an_op_level_checked_model(planted):
    from impnb.api import _build_model
    cfg = ModelConfig.from_hf({**TINY, "model_type": "qwen3"})
    tensors = host_tensors(cfg, "bf16", seed=4)
    model = _build_model(cfg, tensors, "check:planted", None)
    target = model.layers[1]["q_norm"]

    def rms_norm(x, weight, *, eps, offset=0.0):  # QK-norm of layer 1 only
        return ref_rms_norm(x, weight, eps=0.5 if weight is target else eps, offset=offset)

    planted(rms_norm=rms_norm)
    with pytest.raises(CrossCheckError, match=r"layer 1, rms_norm"):
        model.logits(np.arange(6))
