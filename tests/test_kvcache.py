"""Ring-buffer KV cache + view-frame masks (impnb/kvcache.py, impnb.reference.masks).

The property: attention through a sliding layer's ring buffer (capacity window + chunk, written chunk by chunk)
equals attention over a full cache with the plain sliding-window mask, for random windows, chunk sizes and
4x-the-window sequences. The absolute-frame mask bug (mask in absolute coordinates, read by view index) must be caught.
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from impnb.config import ModelConfig
from impnb.kvcache import ContextOverflow, KVCache
from impnb.reference.attention import attention
from impnb.reference.masks import attention_mask

HKV, HQ, D = 1, 2, 4


def _config(window: int, n_ctx: int = 4096) -> ModelConfig:
    return ModelConfig.from_hf({"model_type": "gemma3_text", "vocab_size": 16, "hidden_size": 8,
                                "intermediate_size": 8, "num_hidden_layers": 2, "num_attention_heads": HQ,
                                "num_key_value_heads": HKV, "head_dim": D, "sliding_window": window,
                                "max_position_embeddings": n_ctx,
                                "layer_types": ["sliding_attention", "full_attention"]})


def _view_mask(q_pos, slot_pos, window, written, capacity):
    return attention_mask(q_pos, slot_pos, window=window)


def _absolute_frame_mask(q_pos, slot_pos, window, written, capacity):
    """The absolute-frame mask bug: assume view slot s holds position ring_win_start + s (contiguous, absolute frame)."""
    start = max(0, written - capacity)
    return attention_mask(q_pos, start + np.arange(slot_pos.size), window=window)


def _ring_vs_full(window, chunk, n_tokens, mask_fn, seed=0):
    """Max |ring - full| over all queries, and whether every query saw the same key set."""
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((n_tokens, HQ, D)).astype(np.float32)
    k = rng.standard_normal((n_tokens, HKV, D)).astype(np.float32)
    v = rng.standard_normal((n_tokens, HKV, D)).astype(np.float32)
    full = attention(q, k, v, attention_mask(np.arange(n_tokens), np.arange(n_tokens), window=window), scale=0.5)
    cache = KVCache(_config(window), n_tokens, chunk=chunk)
    ring = cache.layers[0]
    outs, same_sets = [], True
    for start in range(0, n_tokens, chunk):
        pos = cache.positions(min(chunk, n_tokens - start))
        ring.write(pos, k[pos], v[pos])
        keys, values, slot_pos = ring.view()
        mask = mask_fn(pos, slot_pos, window, int(pos[-1]) + 1, ring.capacity)
        for row, p in zip(mask, pos):
            expected = set(range(max(0, p - window + 1), p + 1))
            same_sets &= set(slot_pos[row].tolist()) == expected
        outs.append(attention(q[pos], keys, values, mask, scale=0.5))
        cache.advance(pos.size)
    return float(np.abs(np.concatenate(outs) - full).max()), same_sets


@settings(max_examples=60, deadline=None)
@given(window=st.integers(1, 12), chunk=st.integers(1, 10), extra=st.integers(0, 7), seed=st.integers(0, 2**16))
def test_ring_cache_equals_full_cache_with_sliding_mask(window, chunk, extra, seed):
    err, same_sets = _ring_vs_full(window, chunk, 4 * window + extra, _view_mask, seed)
    assert same_sets, "a query saw a different key set through the ring than through the full cache"
    assert err < 1e-5


def test_absolute_frame_mask_is_caught():
    """Inject the bug: the mask indexed by absolute position instead of the view slot. The property must fail."""
    err, same_sets = _ring_vs_full(window=5, chunk=3, n_tokens=40, mask_fn=_absolute_frame_mask)
    assert not same_sets and err > 1e-3
    err, same_sets = _ring_vs_full(window=5, chunk=3, n_tokens=40, mask_fn=_view_mask)
    assert same_sets and err < 1e-5


def test_wraparound_gives_non_monotonic_slots_and_a_correct_mask():
    cache = KVCache(_config(4), 64, chunk=3)
    ring = cache.layers[0]
    assert ring.capacity == 7 and ring.ring
    for _ in range(4):  # 12 positions through a 7-slot ring
        pos = cache.positions(3)
        ring.write(pos, np.zeros((3, HKV, D), np.float32), np.zeros((3, HKV, D), np.float32))
        cache.advance(3)
    _, _, slot_pos = ring.view()
    assert slot_pos.tolist() == [7, 8, 9, 10, 11, 5, 6]  # newest tokens sit in the low slots
    mask = attention_mask(np.array([9, 10, 11]), slot_pos, window=4)
    assert mask.astype(int).tolist() == [[1, 1, 1, 0, 0, 0, 1],   # 9 sees 6..9
                                         [1, 1, 1, 1, 0, 0, 0],   # 10 sees 7..10
                                         [0, 1, 1, 1, 1, 0, 0]]   # 11 sees 8..11


def test_full_layer_keeps_every_position_and_empty_slots_are_masked():
    cache = KVCache(_config(4), 10, chunk=4)
    full = cache.layers[1]
    assert full.capacity == 10 and not full.ring
    pos = cache.positions(6)
    full.write(pos, np.ones((6, HKV, D), np.float32), np.ones((6, HKV, D), np.float32))
    assert full.view()[2].tolist() == list(range(6))
    assert not attention_mask(np.array([5]), np.array([-1, 0, 3]))[0, 0]


def test_chunk_larger_than_ring_headroom_is_refused():
    cache = KVCache(_config(4), 64, chunk=2)
    with pytest.raises(ValueError, match="does not fit a ring"):
        cache.layers[0].write(np.arange(5), np.zeros((5, HKV, D), np.float32), np.zeros((5, HKV, D), np.float32))


def test_prompt_past_the_cache_and_context_is_a_clear_error():
    cache = KVCache(_config(4, n_ctx=32), 16)
    cache.reserve(16)
    with pytest.raises(ContextOverflow, match="exceed the cache of 16 tokens"):
        cache.reserve(17)
    with pytest.raises(ContextOverflow, match="exceeds the model's context of 32"):
        KVCache(_config(4, n_ctx=32), 33)


def test_dual_geometry_layers_get_their_own_buffers():
    cfg = ModelConfig.from_hf({"model_type": "gemma4_text", "vocab_size": 16, "hidden_size": 8,
                               "intermediate_size": 8, "num_hidden_layers": 2, "num_attention_heads": 4,
                               "num_key_value_heads": 2, "head_dim": 4, "global_head_dim": 8,
                               "attention_k_eq_v": True, "num_global_key_value_heads": 1, "sliding_window": 4,
                               "hidden_size_per_layer_input": 0,
                               "layer_types": ["sliding_attention", "full_attention"]})
    cache = KVCache(cfg, 32, chunk=4)
    assert cache.layers[0].k.shape == (8, 2, 4) and cache.layers[1].k.shape == (32, 1, 8)
    assert (cfg.max_head_dim, cfg.max_kv_heads) == (8, 2)
