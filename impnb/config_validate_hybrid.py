"""Validation rules of the hybrid linear-attention architectures (Qwen3-Next, Qwen3.5, Qwen3.5-MoE): the companion of
impnb/config_validate.py, with the same rule objects and the same error (a ConfigError naming the file, the field,
the value and the rule).

    check_hybrid_hf(raw, source)          the config.json fields of the gated-DeltaNet layers, the shared expert,
                                          the layer pattern and the multi-section RoPE keys (after check_hf)
    check_hybrid_gguf(meta, arch, source) the llama.cpp ssm.* keys, attention.recurrent_layers,
                                          full_attention_interval, nextn_predict_layers (after check_gguf)
    check_hybrid_model(config, source)    the built geometry: value heads a multiple of key heads, the recurrent
                                          state within bounds, at least one text layer (from check_model)
    check_hybrid_shapes(config, shapes, source)   every layer's tensors against the geometry: in_proj (split or
                                          fused), conv1d, A_log, dt_bias, the gated norm, out_proj, the gated
                                          q_proj of the full layers, the shared expert (from check_tensor_shapes)

Legend as impnb/model/hybrid_weights.py: H hidden, Hk / Hv key / value heads of the linear layers, Dk / Dv their head
dims, r = Hv / Hk, C = 2 Hk Dk + Hv Dv conv channels, K conv width, Hq / Hkv / D the full layers' attention heads.
"""
from __future__ import annotations

from .config_validate import (MAX_FFN, MAX_HEAD_DIM, MAX_HEADS, MAX_LAYERS, Bool, Int, IntOrList, ListOf, _expect,
                              _unwrap)
from .errors import ConfigError

MAX_CONV_KERNEL = 256      # released models use 4; the conv state keeps K - 1 inputs per channel
MAX_STATE = 1 << 28        # recurrent-state floats over all linear layers (Qwen3-Next-80B: 36 x 32 x 128 x 128 = 1.9e7)

HF_FIELDS = {
    "linear_num_key_heads": Int(1, MAX_HEADS), "linear_num_value_heads": Int(1, MAX_HEADS),
    "linear_key_head_dim": Int(1, MAX_HEAD_DIM), "linear_value_head_dim": Int(1, MAX_HEAD_DIM),
    "linear_conv_kernel_dim": Int(1, MAX_CONV_KERNEL), "full_attention_interval": Int(1, MAX_LAYERS),
    "shared_expert_intermediate_size": Int(1, MAX_FFN), "attn_output_gate": Bool(),
}
MROPE_FIELDS = {"mrope_section": ListOf(Int(0, MAX_HEAD_DIM), 4), "mrope_interleaved": Bool()}
GGUF_FIELDS = {
    "ssm.conv_kernel": Int(1, MAX_CONV_KERNEL), "ssm.state_size": Int(1, MAX_HEAD_DIM),
    "ssm.group_count": Int(1, MAX_HEADS), "ssm.time_step_rank": Int(1, MAX_HEADS),
    "ssm.inner_size": Int(1, MAX_HEADS * MAX_HEAD_DIM), "attention.recurrent_layers": IntOrList(Bool(), MAX_LAYERS),
    "full_attention_interval": Int(1, MAX_LAYERS), "nextn_predict_layers": Int(0, MAX_LAYERS),
    "expert_shared_feed_forward_length": Int(1, MAX_FFN), "rope.dimension_sections": ListOf(Int(0, MAX_HEAD_DIM), 4),
}


# ------------------------------------------------------------------------------------------------------ HF
def check_hybrid_hf(raw: dict, source: str) -> dict:
    """A copy of a (check_hf-checked) config.json dict with the hybrid fields checked too."""
    out = dict(raw)
    for key, rule in HF_FIELDS.items():
        if out.get(key) is not None:
            out[key] = rule.check(out[key], source, key)
    for key in ("rope_parameters", "rope_scaling"):
        block = out.get(key)
        if isinstance(block, dict):
            _check_mrope(block, source, key)
    heads, values = out.get("linear_num_key_heads"), out.get("linear_num_value_heads")
    if heads is not None and values is not None and values % heads:
        raise ConfigError(source, "linear_num_value_heads", values,
                          f"must be a multiple of linear_num_key_heads = {heads}")
    return out


def _check_mrope(block: dict, source: str, name: str) -> None:
    """Multi-section keys: well-formed; their values do not change text positions (impnb/config_hybrid.py)."""
    for key, rule in MROPE_FIELDS.items():
        if block.get(key) is not None:
            rule.check(block[key], source, f"{name}.{key}")


# ------------------------------------------------------------------------------------------------------ GGUF
def check_hybrid_gguf(meta: dict, arch: str, source: str) -> dict:
    """A copy of (check_gguf-checked) metadata with the hybrid keys checked too."""
    out = dict(meta)
    for suffix, rule in GGUF_FIELDS.items():
        key = f"{arch}.{suffix}"
        if meta.get(key) is not None:
            value = meta[key].tolist() if hasattr(meta[key], "tolist") else meta[key]
            out[key] = rule.check(value if isinstance(rule, IntOrList) else _unwrap(value), source, key)
    blocks, nextn = out.get(f"{arch}.block_count"), out.get(f"{arch}.nextn_predict_layers") or 0
    if isinstance(blocks, int) and nextn >= blocks:
        raise ConfigError(source, f"{arch}.nextn_predict_layers", nextn,
                          f"must be below block_count {blocks} (the text model needs at least one layer)")
    inner, values = out.get(f"{arch}.ssm.inner_size"), out.get(f"{arch}.ssm.time_step_rank")
    if inner is not None and values is not None and inner % values:
        raise ConfigError(source, f"{arch}.ssm.inner_size", inner,
                          f"must be a multiple of ssm.time_step_rank = {values} (value heads x value head dim)")
    heads = out.get(f"{arch}.ssm.group_count")
    if heads is not None and values is not None and values % heads:
        raise ConfigError(source, f"{arch}.ssm.time_step_rank", values,
                          f"must be a multiple of ssm.group_count = {heads} (value heads per key head)")
    return out


def recurrent_flags(meta: dict, arch: str, n: int, default_interval: int, source: str) -> list[bool]:
    """Which of the ``n`` text layers are linear: attention.recurrent_layers (one flag per block; the entries past
    ``n`` are the multi-token-prediction layers), else every layer but each full_attention_interval-th."""
    flags = meta.get(f"{arch}.attention.recurrent_layers")
    if flags is None:
        interval = meta.get(f"{arch}.full_attention_interval") or default_interval
        return [bool((i + 1) % interval) for i in range(n)]
    if not isinstance(flags, list):
        return [flags] * n
    total = meta.get(f"{arch}.block_count")
    if not n <= len(flags) <= max(n, total or n):
        raise ConfigError(source, f"{arch}.attention.recurrent_layers", f"<{len(flags)} entries>",
                          f"must have one entry per layer ({n} text layers, block_count {total})")
    return list(flags[:n])


# ------------------------------------------------------------------------------------------------------ model
def check_hybrid_model(config, source: str) -> None:
    """Cross-field rules of a built hybrid ModelConfig (``config.linear_attention`` set)."""
    lin = config.linear_attention
    for name, value, rule in (("linear_num_key_heads", lin.n_key_heads, Int(1, MAX_HEADS)),
                              ("linear_num_value_heads", lin.n_value_heads, Int(1, MAX_HEADS)),
                              ("linear_key_head_dim", lin.key_head_dim, Int(1, MAX_HEAD_DIM)),
                              ("linear_value_head_dim", lin.value_head_dim, Int(1, MAX_HEAD_DIM)),
                              ("linear_conv_kernel_dim", lin.conv_kernel, Int(1, MAX_CONV_KERNEL))):
        rule.check(value, source, name)
    if lin.n_value_heads % lin.n_key_heads:
        raise ConfigError(source, "linear_num_value_heads", lin.n_value_heads,
                          f"must be a multiple of linear_num_key_heads = {lin.n_key_heads}")
    n_linear = sum(lc.kind == "linear" for lc in config.layers)
    state = n_linear * lin.n_value_heads * lin.key_head_dim * lin.value_head_dim
    if state > MAX_STATE:
        raise ConfigError(source, "linear attention state", f"{n_linear} layers x {lin.n_value_heads} x "
                          f"{lin.key_head_dim} x {lin.value_head_dim}", f"must hold at most {MAX_STATE} floats")
    for lc in config.layers:
        if lc.kind == "sliding":
            raise ConfigError(source, f"layer {lc.index} kind", lc.kind, "must be linear or full in a hybrid model")


# ------------------------------------------------------------------------------------------------------ tensors
def check_hybrid_shapes(config, shapes: dict, source: str) -> None:
    """Every hybrid layer's tensors that are present against the config (missing ones are the model's error)."""
    h = config.hidden_size
    for lc in config.layers:
        p = f"layers.{lc.index}."
        for norm in ("input_layernorm.weight", "post_attention_layernorm.weight"):
            _expect(shapes, p + norm, (h,), source, "hidden_size")
        if lc.kind == "linear":
            _linear_shapes(config.linear_attention, h, shapes, p + "linear_attn.", source)
        else:
            _full_shapes(lc, h, shapes, p + "self_attn.", source)
        _ffn_shapes(config, lc, shapes, p + "mlp.", source)


def _linear_shapes(lin, h: int, shapes: dict, p: str, source: str) -> None:
    hk, hv, dk, dv, c, k = (lin.n_key_heads, lin.n_value_heads, lin.key_head_dim, lin.value_head_dim,
                            lin.conv_channels, lin.conv_kernel)
    r, heads = hv // hk, f"linear heads {hk} x {dk} (key), {hv} x {dv} (value), hidden_size {h}"
    for name, shape in (("in_proj_qkv.weight", (c, h)), ("in_proj_z.weight", (hv * dv, h)),
                        ("in_proj_b.weight", (hv, h)), ("in_proj_a.weight", (hv, h)),
                        ("in_proj_qkvz.weight", (hk * (2 * dk + 2 * r * dv), h)), ("in_proj_ba.weight", (2 * hv, h)),
                        ("out_proj.weight", (h, hv * dv)), ("A_log", (hv,)), ("dt_bias", (hv,)),
                        ("norm.weight", (dv,))):
        _expect(shapes, p + name, shape, source, heads)
    _expect_one_of(shapes, p + "conv1d.weight", ((c, 1, k), (c, k)), source,
                   f"conv channels 2 x {hk} x {dk} + {hv} x {dv} and linear_conv_kernel_dim {k}")


def _full_shapes(lc, h: int, shapes: dict, p: str, source: str) -> None:
    """q_proj holds per head [query | output gate] (2 Hq D rows), or the query alone (Hq D rows: ungated)."""
    q_rows, kv_rows = lc.n_heads * lc.head_dim, lc.n_kv_heads * lc.head_dim
    geometry = f"heads x head_dim ({lc.n_heads} x {lc.head_dim}), hidden_size {h}"
    _expect_one_of(shapes, p + "q_proj.weight", ((2 * q_rows, h), (q_rows, h)), source,
                   f"{geometry} (query and output gate per head, or the query alone)")
    _expect(shapes, p + "o_proj.weight", (h, q_rows), source, geometry)
    kv_geometry = f"kv heads x head_dim ({lc.n_kv_heads} x {lc.head_dim}), hidden_size {h}"
    for name in ("k_proj.weight", "v_proj.weight"):
        _expect(shapes, p + name, (kv_rows, h), source, kv_geometry)
    for name in ("q_norm.weight", "k_norm.weight"):
        _expect(shapes, p + name, (lc.head_dim,), source, "head_dim")


def _ffn_shapes(config, lc, shapes: dict, p: str, source: str) -> None:
    h, moe = config.hidden_size, config.moe
    if not lc.moe:
        if lc.intermediate_size:
            width = f"intermediate_size {lc.intermediate_size}, hidden_size {h}"
            _expect(shapes, p + "gate_proj.weight", (lc.intermediate_size, h), source, width)
            _expect(shapes, p + "down_proj.weight", (h, lc.intermediate_size), source, width)
        return
    _expect(shapes, p + "gate.weight", (moe.n_experts, h), source, "num_experts x hidden_size")
    if moe.shared_intermediate_size:
        width = f"shared_expert_intermediate_size {moe.shared_intermediate_size}, hidden_size {h}"
        for name in ("shared_expert.gate_proj.weight", "shared_expert.up_proj.weight"):
            _expect(shapes, p + name, (moe.shared_intermediate_size, h), source, width)
        _expect(shapes, p + "shared_expert.down_proj.weight", (h, moe.shared_intermediate_size), source, width)
    _expect_one_of(shapes, p + "shared_expert_gate.weight", ((1, h), (h,)), source, "hidden_size (one gate row)")


def _expect_one_of(shapes, name, allowed, source, rule) -> None:
    got = shapes.get(name)
    if got is not None and tuple(got) not in allowed:
        raise ConfigError(source, f"the dimensions of {name}", tuple(got),
                          f"must be {' or '.join(map(str, allowed))} from the config's {rule}")
