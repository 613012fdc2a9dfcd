"""Random-weight models with the exact architecture of real ones, for the engine's tests and benchmarks.

Real checkpoints cannot travel to the GPU machine, so tests/test_cuda_model.py and tools/bench_generate.py build
the architectures of SmolLM2-135M, Gemma-3-270M and a Qwen3-30B-A3B-style MoE stack from their config.json values
(below, from the released configs) and fill them with random weights:

  * ``host_tensors(config, fmt)``: NumPy tensors under canonical HF names, for the reference model AND the engine:
    fmt "bf16" gives ml_dtypes bfloat16 arrays (exact in both backends), "nvfp4" gives NVFP4Tensors for every
    linear (the reference dequantizes them exactly, the engine runs them natively).
  * ``device_tensors(config, fmt)``: the same architecture built directly on the GPU (ready DeviceLinears of random
    NVFP4 bytes or bf16 values), for benchmarks of models too large to build on the host.

Dimension legend: V vocab, Dm hidden, H / HKV / D heads, I FFN width, E experts.
"""
from __future__ import annotations

import numpy as np

ARCHS = {
    # HuggingFaceTB/SmolLM2-135M(-Instruct) config.json
    "smollm2-135m": dict(model_type="llama", vocab_size=49152, hidden_size=576, intermediate_size=1536,
                         num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3, head_dim=64,
                         rms_norm_eps=1e-5, rope_theta=100000.0, max_position_embeddings=8192,
                         tie_word_embeddings=True, hidden_act="silu"),
    # google/gemma-3-270m config.json (text model)
    "gemma3-270m": dict(model_type="gemma3_text", vocab_size=262144, hidden_size=640, intermediate_size=2048,
                        num_hidden_layers=18, num_attention_heads=4, num_key_value_heads=1, head_dim=256,
                        rms_norm_eps=1e-6, rope_theta=1000000.0, rope_local_base_freq=10000.0, sliding_window=512,
                        query_pre_attn_scalar=256, max_position_embeddings=32768, tie_word_embeddings=True,
                        hidden_activation="gelu_pytorch_tanh",
                        layer_types=(["sliding_attention"] * 5 + ["full_attention"]) * 3),
    # Qwen/Qwen3-30B-A3B config.json (48 layers there; the benchmark stacks fewer, see tools/bench_generate.py)
    "qwen3-30b-a3b": dict(model_type="qwen3_moe", vocab_size=151936, hidden_size=2048, intermediate_size=6144,
                          moe_intermediate_size=768, num_experts=128, num_experts_per_tok=8, norm_topk_prob=True,
                          num_hidden_layers=48, num_attention_heads=32, num_key_value_heads=4, head_dim=128,
                          rms_norm_eps=1e-6, rope_theta=1000000.0, max_position_embeddings=40960,
                          tie_word_embeddings=False, hidden_act="silu", decoder_sparse_step=1, mlp_only_layers=[]),
}


def config_for(name: str, **overrides):
    from impnb.config import ModelConfig
    return ModelConfig.from_hf({**ARCHS[name], **overrides})


def _linear_shapes(cfg):
    """(name, [N, K]) of every dense linear, and (name, [E, N, K]) of stacked experts."""
    dm = cfg.hidden_size
    out = []
    for lc in cfg.layers:
        p, hd = f"model.layers.{lc.index}.", lc.head_dim
        out += [(p + "self_attn.q_proj.weight", (lc.n_heads * hd, dm)),
                (p + "self_attn.k_proj.weight", (lc.n_kv_heads * hd, dm)),
                (p + "self_attn.v_proj.weight", (lc.n_kv_heads * hd, dm)),
                (p + "self_attn.o_proj.weight", (dm, lc.n_heads * hd))]
        if lc.moe:
            m = cfg.moe
            out += [(p + "mlp.gate.weight", (m.n_experts, dm)),
                    (p + "mlp.experts.gate_proj.weight", (m.n_experts, m.intermediate_size, dm)),
                    (p + "mlp.experts.up_proj.weight", (m.n_experts, m.intermediate_size, dm)),
                    (p + "mlp.experts.down_proj.weight", (m.n_experts, dm, m.intermediate_size))]
        else:
            i = lc.intermediate_size
            out += [(p + "mlp.gate_proj.weight", (i, dm)), (p + "mlp.up_proj.weight", (i, dm)),
                    (p + "mlp.down_proj.weight", (dm, i))]
    return out


def _norm_names(cfg):
    names = [("model.norm.weight", cfg.hidden_size)]
    per = ["input_layernorm", "post_attention_layernorm"]
    if cfg.sandwich_norms:
        per += ["pre_feedforward_layernorm", "post_feedforward_layernorm"]
    for lc in cfg.layers:
        names += [(f"model.layers.{lc.index}.{n}.weight", cfg.hidden_size) for n in per]
        if cfg.qk_norm:
            names += [(f"model.layers.{lc.index}.self_attn.{n}.weight", lc.head_dim) for n in ("q_norm", "k_norm")]
    return names


def _norm_values(rng, n, offset):
    """Norm weights off their trivial init: w ~ 1 +- 0.1 as used (offset + w)."""
    return (np.float32(1.0 - offset) + 0.1 * rng.standard_normal(n)).astype(np.float32)


def host_tensors(cfg, fmt: str = "bf16", seed: int = 0, std: float = 0.05) -> dict:
    """Random tensors [canonical HF name -> array / NVFP4Tensor] on the host (see the module docstring)."""
    import ml_dtypes
    from impnb import ops
    rng = np.random.default_rng(seed)
    t = {name: _norm_values(rng, n, cfg.norm_offset) for name, n in _norm_names(cfg)}
    t["model.embed_tokens.weight"] = (rng.standard_normal((cfg.vocab_size, cfg.hidden_size)) * 0.5
                                      ).astype(ml_dtypes.bfloat16)
    for name, shape in _linear_shapes(cfg):
        w = (rng.standard_normal(shape, dtype=np.float32) * np.float32(std / np.sqrt(shape[-1] / 64)))
        if fmt == "nvfp4" and len(shape) == 2 and not name.endswith("mlp.gate.weight"):
            q = ops.nvfp4_quantize(w)
            t[name] = q.to_host() if hasattr(q, "to_host") else q
        else:
            t[name] = w.astype(ml_dtypes.bfloat16)
    if not cfg.tie_embeddings:
        t["lm_head.weight"] = (rng.standard_normal((cfg.vocab_size, cfg.hidden_size)) * 0.05
                               ).astype(ml_dtypes.bfloat16)
    if cfg.arch == "qwen2":  # attention biases on q, k, v
        for lc in cfg.layers:
            for n, heads in (("q_proj", lc.n_heads), ("k_proj", lc.n_kv_heads), ("v_proj", lc.n_kv_heads)):
                t[f"model.layers.{lc.index}.self_attn.{n}.bias"] = (
                    0.1 * rng.standard_normal(heads * lc.head_dim)).astype(np.float32)
    return t


def _device_linear(shape, fmt: str, rng):
    """A ready DeviceLinear of random NVFP4 bytes (scales ~2^-6..2^-4, gs 1) or random bf16 values."""
    import cupy as cp
    from impnb.cuda._kernels import FMT_BF16, FMT_NVFP4
    from impnb.cuda._device_weights import DeviceLinear, bf16_bits
    rows = int(np.prod(shape[:-1]))
    n, k = int(shape[-2]), int(shape[-1])
    experts = int(shape[0]) if len(shape) == 3 else 0
    if fmt == "nvfp4":
        packed = rng.integers(0, 256, size=(rows, k // 2), dtype=cp.int32).astype(cp.uint8)
        scales = (rng.integers(0x18, 0x28, size=(rows, k // 16), dtype=cp.int32)).astype(cp.uint8)  # ~0.008..0.06
        lin = DeviceLinear(FMT_NVFP4, n, k, packed, scales, cp.full(rows, 16384.0, cp.float32),
                           cp.ones(rows, cp.float32), True)
    else:
        w = rng.standard_normal((rows, k), dtype=cp.float32) * cp.float32(0.05 / np.sqrt(k / 64))
        lin = DeviceLinear(FMT_BF16, n, k, bf16_bits(w))
    lin.experts = experts
    return lin


def device_tensors(cfg, fmt: str = "nvfp4", seed: int = 0) -> dict:
    """The architecture's weights built on the GPU (ready DeviceLinears; fused q|k|v and gate|up are built by the
    engine from the separate parts). Embedding: bf16. For benchmarks (values random, never compared)."""
    import cupy as cp
    from impnb.cuda._kernels import FMT_BF16
    from impnb.cuda._device_weights import DeviceLinear, bf16_bits
    rng = cp.random.default_rng(seed)
    host = np.random.default_rng(seed)
    t = {name: _norm_values(host, n, cfg.norm_offset) for name, n in _norm_names(cfg)}
    emb = rng.standard_normal((cfg.vocab_size, cfg.hidden_size), dtype=cp.float32) * cp.float32(0.5)
    t["model.embed_tokens.weight"] = DeviceLinear(FMT_BF16, cfg.vocab_size, cfg.hidden_size, bf16_bits(emb))
    del emb
    for name, shape in _linear_shapes(cfg):
        if name.endswith("experts.gate_proj.weight"):
            e, i, k = shape
            t[name.replace("gate_proj.weight", "gate_up_device")] = _device_linear((e, 2 * i, k), fmt, rng)
        elif name.endswith("experts.up_proj.weight"):
            continue
        elif name.endswith("experts.down_proj.weight"):
            t[name.replace("down_proj.weight", "down_device")] = _device_linear(shape, fmt, rng)
        else:
            t[name] = _device_linear(shape, "bf16" if name.endswith("mlp.gate.weight") else fmt, rng)
    if not cfg.tie_embeddings or fmt == "nvfp4":
        t["lm_head.weight"] = _device_linear((cfg.vocab_size, cfg.hidden_size), fmt, rng)
    cp.cuda.Device().synchronize()
    return t
