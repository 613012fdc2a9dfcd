"""Tiny random HF checkpoints for the quantizer tests (written in-test; no network, no real model).

Legend: H = hidden, I = MLP width, V = vocab, L = layers. K (in features) is a multiple of 16 everywhere except
where a test asks for an odd projection, so that every Linear can be quantized.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from impnb.loaders.safetensors import save_safetensors

H, I, V, L, N_HEADS, N_KV = 64, 96, 128, 2, 4, 2
HEAD_DIM = H // N_HEADS
PROJ_SHAPES = {"self_attn.q_proj": (N_HEADS * HEAD_DIM, H), "self_attn.k_proj": (N_KV * HEAD_DIM, H),
               "self_attn.v_proj": (N_KV * HEAD_DIM, H), "self_attn.o_proj": (H, N_HEADS * HEAD_DIM),
               "mlp.gate_proj": (I, H), "mlp.up_proj": (I, H), "mlp.down_proj": (H, I)}


def llama_config(tied: bool) -> dict:
    return dict(architectures=["LlamaForCausalLM"], model_type="llama", vocab_size=V, hidden_size=H,
                intermediate_size=I, num_hidden_layers=L, num_attention_heads=N_HEADS, num_key_value_heads=N_KV,
                head_dim=HEAD_DIM, rms_norm_eps=1e-5, max_position_embeddings=256, tie_word_embeddings=tied,
                hidden_act="silu", rope_theta=10000.0, bos_token_id=1, eos_token_id=2)


def llama_tensors(rng, tied: bool) -> dict[str, np.ndarray]:
    """Random weights whose 16-blocks have very different magnitudes (so block scales differ)."""
    t = {"model.embed_tokens.weight": rng.normal(0, 0.5, (V, H)), "model.norm.weight": 1 + 0.1 * rng.normal(size=H)}
    for i in range(L):
        p = f"model.layers.{i}."
        t[p + "input_layernorm.weight"] = 1 + 0.1 * rng.normal(size=H)
        t[p + "post_attention_layernorm.weight"] = 1 + 0.1 * rng.normal(size=H)
        for name, shape in PROJ_SHAPES.items():
            scale = rng.choice([0.02, 0.1, 0.5], (shape[0], shape[1] // 16, 1))
            t[p + name + ".weight"] = (rng.normal(0, 1, (shape[0], shape[1] // 16, 16)) * scale).reshape(shape)
    if not tied:
        t["lm_head.weight"] = rng.normal(0, 0.5, (V, H))
    return {k: v.astype(np.float32) for k, v in t.items()}


def write_tokenizer(d: Path) -> None:
    """A word-level tokenizer over V tokens: <unk> <s> </s> then w3 .. w{V-1} (enough for generate to run)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, **{f"w{i}": i for i in range(3, V)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.add_special_tokens(["<s>", "</s>"])
    tok.save(str(d / "tokenizer.json"))
    (d / "tokenizer_config.json").write_text(json.dumps({"bos_token": "<s>", "eos_token": "</s>",
                                                         "unk_token": "<unk>", "add_bos_token": True}))


def write_tiny_llama(directory, rng, *, tied: bool = True, dtype=np.float32) -> Path:
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.astype(dtype) for k, v in llama_tensors(rng, tied).items()}
    save_safetensors(d / "model.safetensors", tensors)
    (d / "config.json").write_text(json.dumps(llama_config(tied), indent=2))
    write_tokenizer(d)
    return d


def dir_bytes(d) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(Path(d).iterdir()) if p.is_file()}
