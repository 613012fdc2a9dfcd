"""Fuzzing of the model-metadata readers (hypothesis): config.json dicts of every architecture and GGUF metadata
with random fields replaced by values of every JSON / GGUF kind (huge and negative integers, NaN and infinities,
strings, lists, objects, null), and random RoPE blocks; the hybrid linear-attention architectures' fields too.
Each case must end in a ModelConfig or in FormatError / Unsupported; an accepted config must be one a finite model
can run: head counts that divide, rotary dims inside the head, RoPE frequencies finite up to the context, positive
windows, top-k inside the experts, linear-attention value heads a multiple of key heads.
``IMPNB_FUZZ_EXAMPLES=N`` runs N examples per target (a few seconds each by default)."""
from __future__ import annotations

import math
import os

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from impnb import FormatError, Unsupported
from impnb.config import ModelConfig
from impnb.config_validate import GGUF_FIELDS, HF_FIELDS, ROPE_FIELDS
from impnb.config_validate_hybrid import GGUF_FIELDS as HYBRID_GGUF_FIELDS
from impnb.config_validate_hybrid import HF_FIELDS as HYBRID_HF_FIELDS
from impnb.reference.rope import rope_inv_freq

EXAMPLES = int(os.environ.get("IMPNB_FUZZ_EXAMPLES", 300))
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow])
CASES = {"accepted": 0, "refused": 0}

TINY = dict(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=4, num_attention_heads=4,
            num_key_value_heads=2, head_dim=8, max_position_embeddings=128)
LINEAR = dict(linear_num_key_heads=2, linear_num_value_heads=4, linear_key_head_dim=8, linear_value_head_dim=8,
              linear_conv_kernel_dim=4)
BASES = [
    dict(TINY, model_type="llama"), dict(TINY, model_type="mistral", sliding_window=16),
    dict(TINY, model_type="qwen2", use_sliding_window=True, sliding_window=16, max_window_layers=2),
    dict(TINY, model_type="qwen3"),
    dict(TINY, model_type="qwen3_moe", num_experts=4, num_experts_per_tok=2, moe_intermediate_size=16),
    dict(TINY, model_type="gemma3_text", sliding_window=16, query_pre_attn_scalar=8),
    {"model_type": "gemma3", "text_config": dict(TINY, sliding_window=16)},
    dict(TINY, model_type="gemma4_text", global_head_dim=16, sliding_window=16, hidden_size_per_layer_input=0),
    dict(TINY, model_type="gpt_oss", num_local_experts=4, num_experts_per_tok=2, sliding_window=16),
    dict(TINY, model_type="qwen3_5_text", **LINEAR),
    dict(TINY, model_type="qwen3_next", num_experts=4, num_experts_per_tok=2, moe_intermediate_size=16,
         shared_expert_intermediate_size=16, **LINEAR),
    {"model_type": "qwen3_5_moe", "text_config": dict(TINY, num_experts=4, num_experts_per_tok=2,
                                                      moe_intermediate_size=16, **LINEAR)},
]
NASTY_NUMBERS = [0, 1, 2, 3, -1, 2**31, 2**63, 2**64 + 1, 10**30, 0.5, 1.5, -0.0, 1e-300, 1e300,
                 float("nan"), float("inf"), float("-inf")]
VALUES = st.one_of(
    st.sampled_from(NASTY_NUMBERS), st.integers(-(2**70), 2**70), st.floats(allow_nan=True, allow_infinity=True),
    st.none(), st.booleans(), st.text(max_size=6), st.lists(st.sampled_from(NASTY_NUMBERS + ["x"]), max_size=5),
    st.dictionaries(st.sampled_from(list(ROPE_FIELDS)), st.sampled_from(NASTY_NUMBERS), max_size=3),
    st.sampled_from(["sliding_attention", "full_attention", "silu", "gelu_pytorch_tanh", "default", "yarn"]),
)
ROPE_TYPES = st.sampled_from(["default", "linear", "llama3", "yarn", "proportional", "dynamic", "longrope", "zzz"])
ROPES = st.fixed_dictionaries({"rope_type": ROPE_TYPES}, optional={
    key: st.one_of(st.sampled_from(NASTY_NUMBERS), st.floats(0.01, 64)) for key in ROPE_FIELDS if key != "rope_type"})
KEYS = st.sampled_from(sorted(HF_FIELDS) + sorted(HYBRID_HF_FIELDS) + [
    "rope_scaling", "rope_parameters", "text_config", "per_layer_config", "layer_types", "architectures"])


def _assert_runnable(cfg) -> None:
    """What the forward pass relies on, for a config that was accepted."""
    assert 1 <= cfg.n_layers == len(cfg.layers) and cfg.vocab_size >= 1 and cfg.hidden_size >= 1
    assert np.float32(cfg.rms_eps) > 0 and np.isfinite(np.float32(cfg.embedding_scale))   # float32, as computed
    for lc in cfg.layers:
        assert lc.n_heads % lc.n_kv_heads == 0 and lc.head_dim >= 1 and 0 < np.float32(lc.scale) < np.inf
        # q.k of unit-size vectors times the scale stays finite in float32
        assert np.isfinite(np.float32(lc.scale) * np.float32(lc.head_dim) * np.float32(1e4))
        if lc.kind == "sliding":
            assert lc.window >= 1
        if lc.kind == "linear":
            lin = cfg.linear_attention
            assert min(lin.n_key_heads, lin.key_head_dim, lin.value_head_dim, lin.conv_kernel) >= 1
            assert lin.n_value_heads % lin.n_key_heads == 0
        with np.errstate(all="raise"):
            inv, scale = rope_inv_freq(lc.rope, lc.head_dim, cfg.max_position_embeddings)
        assert 2 * inv.shape[0] <= lc.head_dim and np.isfinite(inv).all() and (inv >= 0).all()
        assert np.isfinite(np.float32(cfg.max_position_embeddings) * inv).all() and math.isfinite(scale) and scale > 0
    if cfg.moe is not None:
        assert 1 <= cfg.moe.top_k <= cfg.moe.n_experts
    assert all(0 <= e < cfg.vocab_size for e in cfg.eos_token_ids)


def _check(build) -> None:
    try:
        cfg = build()
    except (FormatError, Unsupported):
        CASES["refused"] += 1
        return
    CASES["accepted"] += 1
    _assert_runnable(cfg)


@SETTINGS
@given(base=st.sampled_from(BASES), changes=st.dictionaries(KEYS, VALUES, max_size=4), rope=st.none() | ROPES)
def test_fuzz_hf_config(base, changes, rope):
    config = {**base, **changes}
    if rope is not None:
        config["rope_scaling"] = rope
    _check(lambda: ModelConfig.from_hf(config, "fuzz/config.json"))


GGUF_BASE = {"general.architecture": "llama", "llama.block_count": 2, "llama.embedding_length": 32,
             "llama.attention.head_count": 4, "llama.attention.head_count_kv": 2, "llama.context_length": 128,
             "llama.rope.freq_base": 10000.0, "tokenizer.ggml.tokens": ["t"] * 64, "tokenizer.ggml.eos_token_id": 2}
GGUF_ARCHS = ["llama", "mistral", "qwen2", "qwen3", "qwen3moe", "gemma3", "gpt-oss", "qwen3next", "qwen35",
              "qwen35moe", "no-such-arch"]
GGUF_KEYS = st.sampled_from(sorted(GGUF_FIELDS) + sorted(HYBRID_GGUF_FIELDS) + ["rope.scaling.type"])
HYBRID_GGUF = {"ssm.conv_kernel": 4, "ssm.state_size": 8, "ssm.group_count": 2, "ssm.time_step_rank": 4,
               "ssm.inner_size": 32, "rope.dimension_count": 4, "attention.key_length": 8}


@SETTINGS
@given(arch=st.sampled_from(GGUF_ARCHS), changes=st.dictionaries(GGUF_KEYS, VALUES, max_size=4),
       eos=st.sampled_from(NASTY_NUMBERS))
def test_fuzz_gguf_metadata(arch, changes, eos):
    meta = {k.replace("llama.", f"{arch}.", 1): v for k, v in GGUF_BASE.items()}
    meta.update({f"{arch}.expert_count": 4, f"{arch}.expert_used_count": 2, f"{arch}.expert_feed_forward_length": 16})
    if arch.startswith("qwen3") and arch not in ("qwen3", "qwen3moe"):
        meta.update({f"{arch}.{k}": v for k, v in HYBRID_GGUF.items()})
    meta.update({f"{arch}.{k}": v for k, v in changes.items()})
    meta["tokenizer.ggml.eos_token_id"] = eos
    _check(lambda: ModelConfig.from_gguf(meta, "fuzz.gguf"))


def test_zz_report():
    print(f"\nconfig fuzz: {CASES}")
    assert CASES["accepted"] and CASES["refused"]   # both outcomes were reached
