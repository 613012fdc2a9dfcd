"""The hybrid linear-attention stack of tools/bench_generate.py (``--random-weights qwen3.5-9b``): its preset, random
weights and the op-by-op CUDA timing (the fused engine does not run gated-DeltaNet layers). See bench_random's
docstring for the presets.
"""
from __future__ import annotations

import gc
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))


def timed(fn, sync):
    """Seconds of fn() between two synchronizations."""
    sync()
    t0 = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - t0


# Qwen3.5-9B text model (config.json of Qwen/Qwen3.5-9B = transformers' Qwen3_5TextConfig defaults)
HYBRID_ARCHS = {
    "qwen3.5-9b": dict(model_type="qwen3_5_text", vocab_size=248320, hidden_size=4096, intermediate_size=12288,
                       num_hidden_layers=32, num_attention_heads=16, num_key_value_heads=4, head_dim=256,
                       linear_num_key_heads=16, linear_num_value_heads=32, linear_key_head_dim=128,
                       linear_value_head_dim=128, linear_conv_kernel_dim=4, rms_norm_eps=1e-6,
                       max_position_embeddings=262144, tie_word_embeddings=False, hidden_act="silu",
                       rope_parameters={"rope_type": "default", "rope_theta": 1e7, "partial_rotary_factor": 0.25,
                                        "mrope_interleaved": True, "mrope_section": [11, 11, 10]}),
}


def hybrid_config(name: str, n_layers: int):
    """ModelConfig of a HYBRID_ARCHS entry cut to ``n_layers`` (its 3:1 linear / full pattern kept)."""
    from impnb.config import ModelConfig
    d = dict(HYBRID_ARCHS[name], num_hidden_layers=n_layers)
    d["layer_types"] = ["linear_attention" if (i + 1) % 4 else "full_attention" for i in range(n_layers)]
    return ModelConfig.from_hf(d), d


def hybrid_host_tensors(cfg, seed: int = 0) -> dict:
    """Random float32 weights of a dense (non-MoE) hybrid model under HF names: N(0, 0.02) matrices, norms near their
    init, A_log = log U(1, 16), dt_bias ~ 1 (the layer's own init ranges)."""
    rng = np.random.default_rng(seed)
    lin, h, f32 = cfg.linear_attention, cfg.hidden_size, np.float32

    def mat(n, k):
        return (rng.standard_normal((n, k), dtype=f32) * f32(0.02))

    def near(n, centre):
        return (centre + 0.05 * rng.standard_normal(n)).astype(f32)

    t = {"model.embed_tokens.weight": mat(cfg.vocab_size, h), "model.norm.weight": near(h, 0.0),
         "lm_head.weight": mat(cfg.vocab_size, h)}
    for lc in cfg.layers:
        p = f"model.layers.{lc.index}."
        t.update({p + "input_layernorm.weight": near(h, 0.0), p + "post_attention_layernorm.weight": near(h, 0.0),
                  p + "mlp.gate_proj.weight": mat(lc.intermediate_size, h),
                  p + "mlp.up_proj.weight": mat(lc.intermediate_size, h),
                  p + "mlp.down_proj.weight": mat(h, lc.intermediate_size)})
        if lc.kind == "linear":
            a = p + "linear_attn."
            t.update({a + "in_proj_qkv.weight": mat(lin.conv_channels, h), a + "in_proj_z.weight": mat(lin.value_dim, h),
                      a + "in_proj_b.weight": mat(lin.n_value_heads, h),
                      a + "in_proj_a.weight": mat(lin.n_value_heads, h),
                      a + "conv1d.weight": (0.3 * rng.standard_normal((lin.conv_channels, 1, lin.conv_kernel))).astype(f32),
                      a + "A_log": np.log(rng.uniform(1, 16, lin.n_value_heads)).astype(f32),
                      a + "dt_bias": near(lin.n_value_heads, 1.0), a + "norm.weight": near(lin.value_head_dim, 1.0),
                      a + "out_proj.weight": mat(h, lin.value_dim)})
        else:
            s, d = p + "self_attn.", lc.head_dim
            t.update({s + "q_proj.weight": mat(2 * lc.n_heads * d, h), s + "k_proj.weight": mat(lc.n_kv_heads * d, h),
                      s + "v_proj.weight": mat(lc.n_kv_heads * d, h), s + "o_proj.weight": mat(h, lc.n_heads * d),
                      s + "q_norm.weight": near(d, 0.0), s + "k_norm.weight": near(d, 0.0)})
    return t


def _to_device(obj):
    """NumPy arrays inside the model's weight dicts -> CuPy (the op-by-op CUDA model then reads no host weights)."""
    import cupy as cp
    if isinstance(obj, dict):
        return {k: _to_device(v) for k, v in obj.items()}
    return cp.asarray(obj) if isinstance(obj, np.ndarray) else obj


def bench_impnb_op_by_op(name, cfg, prompt, n_decode):
    """The hybrid model op by op on the CUDA ops (backend "cuda"), weights on the device, greedy decode."""
    import cupy as cp
    from impnb.model import Model
    model = Model(cfg, hybrid_host_tensors(cfg), backend="cuda")
    model.layers = [_to_device(w) for w in model.layers]
    model.embed, model.final_norm = cp.asarray(model.embed), cp.asarray(model.final_norm)
    model.lm_head = cp.asarray(model.lm_head)
    sync = cp.cuda.get_current_stream().synchronize

    def run(n_new):
        cache = model.new_cache(len(prompt) + n_new + 8)
        logits = model.forward(prompt, cache, last_only=True)
        for _ in range(n_new):
            logits = model.forward([int(logits[-1].argmax())], cache, last_only=True)

    run(4)  # compile the Numba kernels, warm cuBLAS
    prefill = [timed(lambda: run(0), sync) for _ in range(3)]
    total = [timed(lambda: run(n_decode), sync) for _ in range(2)]
    t_pre = float(np.median(prefill))
    decode_s = max(float(np.min(total)) - t_pre, 1e-9)
    row = dict(model=name, weights="fp32", engine="impnb-cuda-op-by-op", prefill_tok_s=len(prompt) / t_pre,
               decode_tok_s=n_decode / decode_s, kernels_per_token=None, layers=cfg.n_layers,
               weights_gb=sum(int(np.prod(v.shape)) * 4 for w in model.layers for v in _arrays(w)) / 1e9)
    del model
    gc.collect()
    cp.get_default_memory_pool().free_all_blocks()
    return row


def _arrays(w):
    for v in w.values():
        if isinstance(v, dict):
            yield from _arrays(v)
        elif hasattr(v, "shape") and getattr(v, "ndim", 0):
            yield v
