"""Valid tiny checkpoints that tools/hostile_cases.py mutates: an HF safetensors directory (llama, gemma3_text,
qwen3_moe; a word-level tokenizer.json; a ChatML chat template), a GGUF file written byte by byte (llama, F32
tensors, a GPT-2 BPE vocabulary, a chat template) with every field's position known, and a walker that finds the
metadata values and tensor infos of a real GGUF file so that they can be overwritten in place.

Dimensions: V = 64 tokens, H = 32 hidden, 4 query heads and 2 KV heads of 8, FFN 64, 2 layers, context 128.
"""
from __future__ import annotations

import json
import struct
from pathlib import Path

import ml_dtypes
import numpy as np

V, H, FFN, LAYERS, HEADS, KV, HEAD_DIM, CONTEXT = 64, 32, 64, 2, 4, 2, 8, 128
CHATML = ("{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
SPECIALS = ["<unk>", "<s>", "</s>", "<|im_start|>", "<|im_end|>"]
HF_CONFIGS = {
    "llama": dict(model_type="llama", architectures=["LlamaForCausalLM"], vocab_size=V, hidden_size=H,
                  intermediate_size=FFN, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
                  num_key_value_heads=KV, head_dim=HEAD_DIM, rms_norm_eps=1e-5, max_position_embeddings=CONTEXT,
                  rope_theta=10000.0, tie_word_embeddings=True, hidden_act="silu", bos_token_id=1,
                  eos_token_id=2),
    "gemma3_text": dict(model_type="gemma3_text", vocab_size=V, hidden_size=H, intermediate_size=FFN,
                        num_hidden_layers=LAYERS, num_attention_heads=HEADS, num_key_value_heads=KV,
                        head_dim=HEAD_DIM, rms_norm_eps=1e-6, max_position_embeddings=CONTEXT, sliding_window=16,
                        query_pre_attn_scalar=8, rope_theta=10000.0, tie_word_embeddings=True, eos_token_id=2,
                        layer_types=["sliding_attention", "full_attention"]),
    "qwen3_moe": dict(model_type="qwen3_moe", vocab_size=V, hidden_size=H, intermediate_size=FFN,
                      num_hidden_layers=LAYERS, num_attention_heads=HEADS, num_key_value_heads=KV,
                      head_dim=HEAD_DIM, rms_norm_eps=1e-6, max_position_embeddings=CONTEXT, num_experts=4,
                      num_experts_per_tok=2, moe_intermediate_size=16, tie_word_embeddings=False, eos_token_id=2),
}


# ---------------------------------------------------------------------------------------------- HF directory
def hf_tensors(arch: str = "llama", seed: int = 0) -> dict:
    from impnb.config import ModelConfig
    from tools.random_models import host_tensors
    cfg = ModelConfig.from_hf(HF_CONFIGS[arch])
    tensors = host_tensors(cfg, "bf16", seed=seed)
    if not cfg.tie_embeddings:
        tensors["lm_head.weight"] = np.asarray(tensors["model.embed_tokens.weight"]).copy()
    return {k: np.asarray(v) for k, v in tensors.items()}


def write_tokenizer(directory: Path, vocab_size: int = V) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers
    vocab = {t: i for i, t in enumerate(SPECIALS)}
    vocab.update({f"w{i}": i for i in range(len(SPECIALS), vocab_size)})
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.add_special_tokens(SPECIALS[1:])
    tok.save(str(directory / "tokenizer.json"))
    (directory / "tokenizer_config.json").write_text(json.dumps(
        {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "add_bos_token": True}))


def write_hf(directory, arch: str = "llama", *, config=None, tensors=None, dtypes=None, template=CHATML,
             tokenizer: bool = True) -> Path:
    """A loadable tiny checkpoint directory; ``config`` / ``tensors`` replace the defaults when given."""
    from impnb.loaders.safetensors import save_safetensors
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    save_safetensors(d / "model.safetensors", hf_tensors(arch) if tensors is None else tensors, {"format": "pt"},
                     dtypes)
    raw = json.dumps(HF_CONFIGS[arch] if config is None else config, allow_nan=True)
    (d / "config.json").write_text(raw)
    if tokenizer:
        write_tokenizer(d)
    if template is not None:
        (d / "chat_template.jinja").write_text(template)
    return d


# ---------------------------------------------------------------------------------------------- GGUF writer
# value type ids: 0 u8, 1 i8, 2 u16, 3 i16, 4 u32, 5 i32, 6 f32, 7 bool, 8 string, 9 array, 10 u64, 11 i64, 12 f64
_FMT = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}


def gguf_string(s) -> bytes:
    raw = s.encode("utf-8", "surrogatepass") if isinstance(s, str) else bytes(s)
    return struct.pack("<Q", len(raw)) + raw


def gguf_value(vtype: int, value, elem=None) -> bytes:
    if vtype == 8:
        return gguf_string(value)
    if vtype == 9:
        return struct.pack("<IQ", elem, len(value)) + b"".join(gguf_value(elem, v) for v in value)
    return struct.pack(_FMT[vtype], value)


def gguf_bytes(kvs, tensors, *, version=3, alignment=32, n_tensors=None, n_kv=None) -> bytes:
    """kvs: [(key, vtype, value, elem_type)]; tensors: [(name, ne, ggml_type, data, offset or None)]."""
    out = bytearray(b"GGUF" + struct.pack("<IQQ", version, len(tensors) if n_tensors is None else n_tensors,
                                          len(kvs) if n_kv is None else n_kv))
    for key, vtype, value, elem in kvs:
        out += gguf_string(key) + struct.pack("<I", vtype) + gguf_value(vtype, value, elem)
    cursor, offsets = 0, []
    for _, _, _, data, offset in tensors:
        offsets.append(cursor if offset is None else offset)
        cursor += -(-len(data) // alignment) * alignment
    for (name, ne, gtype, _, _), offset in zip(tensors, offsets):
        out += gguf_string(name) + struct.pack("<I", len(ne)) + b"".join(struct.pack("<Q", d) for d in ne)
        out += struct.pack("<IQ", gtype, offset)
    out += b"\0" * (-len(out) % alignment)
    for _, _, _, data, _ in tensors:
        out += data + b"\0" * (-len(data) % alignment)
    return bytes(out)


def gguf_tokens() -> tuple[list, list, list]:
    letters = [chr(c) for c in range(ord("a"), ord("a") + 26)]
    pairs = [a + b for a in "abc" for b in "abcdefghijklmnopqrstuvwxyz"][: V - len(SPECIALS) - 26 - 1]
    tokens = SPECIALS + letters + ["\u0120"] + pairs
    merges = [f"{p[0]} {p[1]}" for p in pairs]
    types = [3] * len(SPECIALS) + [1] * (len(tokens) - len(SPECIALS))
    return tokens, merges, types


def gguf_base(seed: int = 0) -> tuple[list, list]:
    """(kvs, tensors) of a valid tiny llama GGUF."""
    rng = np.random.default_rng(seed)
    tokens, merges, types = gguf_tokens()
    kvs = [("general.architecture", 8, "llama", None), ("llama.block_count", 4, LAYERS, None),
           ("llama.embedding_length", 4, H, None), ("llama.feed_forward_length", 4, FFN, None),
           ("llama.attention.head_count", 4, HEADS, None), ("llama.attention.head_count_kv", 4, KV, None),
           ("llama.context_length", 4, CONTEXT, None), ("llama.rope.freq_base", 6, 10000.0, None),
           ("llama.attention.layer_norm_rms_epsilon", 6, 1e-5, None), ("llama.vocab_size", 4, V, None),
           ("tokenizer.ggml.model", 8, "gpt2", None), ("tokenizer.ggml.pre", 8, "gpt2", None),
           ("tokenizer.ggml.tokens", 9, tokens, 8), ("tokenizer.ggml.token_type", 9, types, 5),
           ("tokenizer.ggml.merges", 9, merges, 8), ("tokenizer.ggml.bos_token_id", 4, 1, None),
           ("tokenizer.ggml.eos_token_id", 4, 2, None), ("tokenizer.chat_template", 8, CHATML, None)]

    def f32(*shape_ne, scale=0.2, offset=0.0):
        n = int(np.prod(shape_ne))
        return (rng.standard_normal(n) * scale + offset).astype("<f4").tobytes()

    tensors = [("token_embd.weight", (H, V), 0, f32(H, V, scale=0.5), None),
               ("output_norm.weight", (H,), 0, f32(H, scale=0.1, offset=1.0), None)]
    for i in range(LAYERS):
        b = f"blk.{i}."
        tensors += [(b + "attn_norm.weight", (H,), 0, f32(H, scale=0.1, offset=1.0), None),
                    (b + "attn_q.weight", (H, HEADS * HEAD_DIM), 0, f32(H, HEADS * HEAD_DIM), None),
                    (b + "attn_k.weight", (H, KV * HEAD_DIM), 0, f32(H, KV * HEAD_DIM), None),
                    (b + "attn_v.weight", (H, KV * HEAD_DIM), 0, f32(H, KV * HEAD_DIM), None),
                    (b + "attn_output.weight", (HEADS * HEAD_DIM, H), 0, f32(HEADS * HEAD_DIM, H), None),
                    (b + "ffn_norm.weight", (H,), 0, f32(H, scale=0.1, offset=1.0), None),
                    (b + "ffn_gate.weight", (H, FFN), 0, f32(H, FFN), None),
                    (b + "ffn_up.weight", (H, FFN), 0, f32(H, FFN), None),
                    (b + "ffn_down.weight", (FFN, H), 0, f32(FFN, H), None)]
    return kvs, tensors


# ---------------------------------------------------------------------------------------------- GGUF walker
def walk_gguf(raw: bytes) -> tuple[dict, list]:
    """{key: (value offset, vtype, byte length)} and [(name, ne offsets, type offset, offset offset)] of a valid
    GGUF file, so that a value can be overwritten in place (same width: the layout does not move)."""
    pos = 24
    n_tensors, n_kv = struct.unpack_from("<QQ", raw, 8)
    values = {}

    def skip(vtype, at):
        if vtype in _FMT:
            return at + struct.calcsize(_FMT[vtype])
        if vtype == 8:
            return at + 8 + struct.unpack_from("<Q", raw, at)[0]
        elem, count = struct.unpack_from("<IQ", raw, at)
        at += 12
        if elem in _FMT:
            return at + count * struct.calcsize(_FMT[elem])
        for _ in range(count):
            at = skip(elem, at)
        return at

    for _ in range(n_kv):
        length = struct.unpack_from("<Q", raw, pos)[0]
        key = raw[pos + 8:pos + 8 + length].decode()
        pos += 8 + length
        vtype = struct.unpack_from("<I", raw, pos)[0]
        end = skip(vtype, pos + 4)
        values[key] = (pos + 4, vtype, end - pos - 4)
        pos = end
    tensors = []
    for _ in range(n_tensors):
        length = struct.unpack_from("<Q", raw, pos)[0]
        name = raw[pos + 8:pos + 8 + length].decode()
        pos += 8 + length
        n_dims = struct.unpack_from("<I", raw, pos)[0]
        ne_at = [pos + 4 + 8 * d for d in range(n_dims)]
        pos = pos + 4 + 8 * n_dims
        tensors.append((name, ne_at, pos, pos + 4))
        pos += 12
    return values, tensors


def bf16(x) -> np.ndarray:
    return np.asarray(x, dtype=np.float32).astype(ml_dtypes.bfloat16)
