"""ModelConfig keyword arguments of the hybrid linear-attention architectures: Qwen3-Next, Qwen3.5 and Qwen3.5-MoE.

These models interleave gated-DeltaNet layers ("linear_attention": a short convolution and the gated delta rule
over a fixed-size state, impnb/model/linear_attention.py) with softmax-attention layers ("full_attention"),
by default three linear layers then one full layer (``full_attention_interval`` 4, or an explicit ``layer_types``).
Facts from transformers 5.25 (configuration_qwen3_next.py, configuration_qwen3_5(_moe).py, modeling_*.py) and
llama.cpp's converter (conversion/qwen.py) and loaders (src/models/qwen3next.cpp, qwen35.cpp, qwen35moe.cpp):

  * every RMSNorm is zero-centred, (1 + w) (norm_offset 1), q_norm / k_norm included; the linear layers' output norm
    is a gated RMSNorm with a plain weight;
  * full attention: QK-norm, partial RoPE (partial_rotary_factor, default 0.25; neox pairs), and an output gate:
    q_proj yields per head [query (D) | gate (D)], the attention output is multiplied by sigmoid(gate) before o_proj;
  * Qwen3.5's interleaved multi-section RoPE (mrope_section) gives every section the same angle when the three
    position components are equal, as they are for text: it is then exactly the partial RoPE above;
  * MoE (Qwen3-Next, Qwen3.5-MoE): softmax router, top-k, renormalised (norm_topk_prob; always for Qwen3.5-MoE), plus
    one shared expert scaled by sigmoid(shared_expert_gate x); Qwen3-Next picks MoE layers with decoder_sparse_step
    and mlp_only_layers, Qwen3.5-MoE uses MoE everywhere.

Every field read here is type- and range-checked first: the common ones by impnb/config_validate.py (check_hf,
check_gguf), the linear-attention ones by impnb/config_validate_hybrid.py, which also holds the cross-field and
tensor-shape rules of these models. A violation is a ConfigError naming the file, the field, the value and the rule.
"""
from __future__ import annotations

from dataclasses import replace

from .config_archs import _act, _common, _layer, _model, _rope_params
from .config_types import LayerConfig, LinearAttentionConfig, MoEConfig, RopeConfig
from .config_validate_hybrid import check_hybrid_gguf, check_hybrid_hf, recurrent_flags
from .errors import ConfigError, Unsupported

__all__ = ["HF_BUILDERS", "HF_WRAPPERS", "HF_ARCH_CLASSES", "GGUF_ARCHS", "LinearAttentionConfig", "build_from_gguf"]

DEFAULT_PARTIAL_ROTARY = 0.25  # transformers: kwargs.setdefault("partial_rotary_factor", 0.25) in all three configs
DEFAULT_INTERVAL = 4           # transformers: kwargs.pop("full_attention_interval", 4)


# ---- HF config.json ----------------------------------------------------------------------------------------------
_LINEAR = dict(linear_conv_kernel_dim=4, linear_key_head_dim=128, linear_value_head_dim=128, linear_num_key_heads=16,
               linear_num_value_heads=32, hidden_act="silu", rms_norm_eps=1e-6, max_position_embeddings=32768,
               tie_word_embeddings=False, head_dim=256, num_attention_heads=16)
_QWEN3_NEXT = dict(_LINEAR, vocab_size=151936, hidden_size=2048, intermediate_size=5632, num_hidden_layers=48,
                   num_key_value_heads=2, decoder_sparse_step=1, moe_intermediate_size=512,
                   shared_expert_intermediate_size=512, num_experts_per_tok=10, num_experts=512, norm_topk_prob=True,
                   mlp_only_layers=[])
_QWEN3_5 = dict(_LINEAR, vocab_size=248320, hidden_size=4096, intermediate_size=12288, num_hidden_layers=32,
                num_key_value_heads=4)
_QWEN3_5_MOE = dict(_LINEAR, vocab_size=248320, hidden_size=2048, num_hidden_layers=40, num_key_value_heads=2,
                    moe_intermediate_size=512, shared_expert_intermediate_size=512, num_experts_per_tok=8,
                    num_experts=256)
_LAYER_TYPES = {"linear_attention": "linear", "full_attention": "full"}


def _linear_config(d: dict) -> LinearAttentionConfig:
    return LinearAttentionConfig(
        n_key_heads=d["linear_num_key_heads"], n_value_heads=d["linear_num_value_heads"],
        key_head_dim=d["linear_key_head_dim"], value_head_dim=d["linear_value_head_dim"],
        conv_kernel=d["linear_conv_kernel_dim"], attn_output_gate=bool(d.get("attn_output_gate", True)))


def _hybrid_kinds(d: dict) -> list[str]:
    n, types = d["num_hidden_layers"], d.get("layer_types")
    if types is None:
        interval = d.get("full_attention_interval") or DEFAULT_INTERVAL
        return ["linear" if (i + 1) % interval else "full" for i in range(n)]
    for i, t in enumerate(types):
        if t not in _LAYER_TYPES:
            raise ConfigError(d["_source"], f"layer_types[{i}]", t,
                              f"must be a layer type of this architecture ({' / '.join(_LAYER_TYPES)})")
    if len(types) != n:
        raise ConfigError(d["_source"], "layer_types", f"<{len(types)} entries>",
                          f"must have one entry per layer (num_hidden_layers = {n})")
    return [_LAYER_TYPES[t] for t in types]


def _hybrid_rope(d: dict) -> RopeConfig:
    """Partial neox RoPE; multi-section (mrope) parameters reduce to it for text positions (module docstring)."""
    params = d.get("rope_parameters")
    if isinstance(params, dict) and params.get("rope_type") in ("mrope", "default_mrope"):
        d = {**d, "rope_parameters": {**params, "rope_type": "default"}}
    scaling = d.get("rope_scaling")
    if isinstance(scaling, dict) and (scaling.get("rope_type") or scaling.get("type")) in ("mrope", "default_mrope"):
        d = {**d, "rope_scaling": {k: v for k, v in scaling.items() if k not in ("type", "rope_type")}}
    rope = _rope_params(d, None, 10000.0)
    given = "partial_rotary_factor" in d or (isinstance(d.get("rope_parameters"), dict)
                                             and "partial_rotary_factor" in d["rope_parameters"])
    return rope if given else replace(rope, partial_rotary_factor=DEFAULT_PARTIAL_ROTARY)


def _moe_flags(d: dict, everywhere: bool) -> list[bool]:
    n, experts = d["num_hidden_layers"], d.get("num_experts") or 0
    if everywhere:
        return [experts > 0] * n
    step, dense_only = d.get("decoder_sparse_step") or 1, set(d.get("mlp_only_layers") or [])
    return [i not in dense_only and experts > 0 and (i + 1) % step == 0 for i in range(n)]


def _hybrid_moe(d: dict, renormalize: bool) -> MoEConfig:
    return MoEConfig(n_experts=d["num_experts"], top_k=d["num_experts_per_tok"],
                     intermediate_size=d["moe_intermediate_size"], gating="softmax", renormalize=renormalize,
                     n_shared_experts=1, shared_intermediate_size=d["shared_expert_intermediate_size"],
                     activation=_act(d["hidden_act"], d))


def _hybrid(arch: str, defaults: dict, moe: str | None):
    """moe: None (dense), "sparse_step" (Qwen3-Next) or "everywhere" (Qwen3.5-MoE)."""
    def build(cfg: dict, source: str) -> dict:
        if cfg.get("num_experts") is None and cfg.get("num_local_experts") is not None:
            cfg = {**cfg, "num_experts": cfg["num_local_experts"]}
        d = _common(check_hybrid_hf(cfg, source), defaults, source)
        rope, kinds = _hybrid_rope(d), _hybrid_kinds(d)
        flags = _moe_flags(d, moe == "everywhere") if moe else [False] * len(kinds)
        layers = [_layer(d, i, k, rope, moe=f) for i, (k, f) in enumerate(zip(kinds, flags))]
        moe_cfg = _hybrid_moe(d, bool(d.get("norm_topk_prob", True)) or moe == "everywhere") if any(flags) else None
        return _model(arch, d, layers, activation=_act(d["hidden_act"], d), norm_offset=1.0, qk_norm=True,
                      moe=moe_cfg, linear_attention=_linear_config(d))
    return build


HF_BUILDERS = {
    "qwen3_next": _hybrid("qwen3_next", _QWEN3_NEXT, "sparse_step"),
    "qwen3_5_text": _hybrid("qwen3_5_text", _QWEN3_5, None),
    "qwen3_5_moe_text": _hybrid("qwen3_5_moe_text", _QWEN3_5_MOE, "everywhere"),
}
HF_WRAPPERS = {"qwen3_5": "qwen3_5_text", "qwen3_5_moe": "qwen3_5_moe_text"}  # multimodal -> text_config type
HF_ARCH_CLASSES = {"Qwen3NextForCausalLM": "qwen3_next", "Qwen3_5ForCausalLM": "qwen3_5_text",
                   "Qwen3_5ForConditionalGeneration": "qwen3_5", "Qwen3_5MoeForCausalLM": "qwen3_5_moe_text",
                   "Qwen3_5MoeForConditionalGeneration": "qwen3_5_moe"}


# ---- GGUF metadata (llama.cpp: qwen3next, qwen35, qwen35moe) -------------------------------------------------------
GGUF_ARCHS = {"qwen3next": "qwen3_next", "qwen35": "qwen3_5_text", "qwen35moe": "qwen3_5_moe_text"}


def build_from_gguf(meta: dict, arch: str, source: str) -> dict:
    """llama.cpp keys: ssm.conv_kernel (K), ssm.state_size (Dk = Dv), ssm.group_count (Hk), ssm.time_step_rank
    (Hv), ssm.inner_size (Hv Dv); attention.recurrent_layers, else full_attention_interval; rope.dimension_count
    (the rotary dims). block_count includes nextn_predict_layers multi-token-prediction layers, which are dropped.
    ``meta`` has passed config_validate.check_gguf."""
    from .config_gguf import _Reader
    r = _Reader(check_hybrid_gguf(meta, arch, source), arch, source)
    total = r.get("block_count", required=True)
    n = total - (r.get("nextn_predict_layers") or 0)   # >= 1: check_hybrid_gguf
    hidden = r.get("embedding_length", required=True)
    heads = r.per_layer("attention.head_count", total, required=True)[:n]
    kv = r.per_layer("attention.head_count_kv", total, default=heads[0])[:n]
    ff = r.per_layer("feed_forward_length", total, default=0)[:n]
    head_dim = _head_dim(r, hidden, heads[0])
    inner, hv = r.get("ssm.inner_size", required=True), r.get("ssm.time_step_rank", required=True)
    linear = LinearAttentionConfig(n_key_heads=r.get("ssm.group_count", required=True), n_value_heads=hv,
                                   key_head_dim=r.get("ssm.state_size", required=True),
                                   value_head_dim=inner // hv, conv_kernel=r.get("ssm.conv_kernel", 4))
    rope = replace(r.rope(1e7), partial_rotary_factor=r.get("rope.dimension_count", head_dim) / head_dim)
    kinds = ["linear" if flag else "full" for flag in recurrent_flags(r.meta, arch, n, DEFAULT_INTERVAL, source)]
    experts = r.get("expert_count") or 0
    layers = tuple(LayerConfig(index=i, kind=kinds[i], window=None, head_dim=head_dim, n_heads=heads[i],
                               n_kv_heads=kv[i] or heads[i], scale=head_dim ** -0.5, rope=rope, moe=experts > 0,
                               intermediate_size=ff[i] or 0) for i in range(n))
    moe = None
    if experts:
        moe = MoEConfig(n_experts=experts, top_k=r.get("expert_used_count", required=True),
                        intermediate_size=r.get("expert_feed_forward_length", required=True), gating="softmax",
                        renormalize=bool(r.get("expert_weights_norm", True)), n_shared_experts=1,
                        shared_intermediate_size=r.get("expert_shared_feed_forward_length") or 0)
    eos = meta.get("tokenizer.ggml.eos_token_id")
    return dict(arch=GGUF_ARCHS[arch], vocab_size=r.vocab_size(), hidden_size=hidden, n_layers=n, layers=layers,
                rms_eps=float(r.get("attention.layer_norm_rms_epsilon", 1e-6)), norm_offset=1.0, qk_norm=True,
                moe=moe, linear_attention=linear, max_position_embeddings=r.get("context_length", 4096),
                bos_token_id=meta.get("tokenizer.ggml.bos_token_id"), eos_token_ids=() if eos is None else (eos,),
                source="gguf")


def _head_dim(r, hidden: int, heads: int) -> int:
    """attention.key_length (else hidden / heads); value_length must equal it (one head dim for K and V)."""
    head_dim = r.get("attention.key_length", hidden // heads)
    if head_dim < 1:
        raise ConfigError(r.source, f"{r.arch}.attention.head_count", heads,
                          f"must not exceed embedding_length {hidden} when key_length is not given")
    value = r.get("attention.value_length")
    if value is not None and value != head_dim:
        raise Unsupported(f"{r.source}: {r.arch}.attention.value_length = {value} differs from key_length "
                          f"{head_dim}; impnb runs these models with one head dim for K and V")
    return head_dim
