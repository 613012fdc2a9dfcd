"""Tokenizer files for a checkpoint converted from GGUF: tokenizer.json and tokenizer_config.json.

The GGUF file embeds its vocabulary (tokenizer.ggml.*) and chat template (tokenizer.chat_template); impnb.tokenizer
turns the vocabulary into a ``tokenizers.Tokenizer``, whose ``to_str()`` is tokenizer.json. tokenizer_config.json
carries what transformers' ``PreTrainedTokenizerFast`` needs beside it: the special tokens by content, add_bos /
add_eos, and the chat template (the GGUF's own, byte for byte).
"""
from __future__ import annotations

import json


def gguf_tokenizer_files(ckpt, mc) -> dict[str, bytes]:
    from ..tokenizer import load_tokenizer
    tok = load_tokenizer(ckpt.path)
    info = ckpt.tokenizer or {}
    backend = getattr(tok, "backend", tok)  # impnb's Tokenizer wraps a tokenizers.Tokenizer
    files = {"tokenizer.json": backend.to_str(pretty=True).encode("utf-8")}
    files["tokenizer_config.json"] = _config_bytes(tokenizer_config(backend, info, mc))
    return files


def _token(backend, token_id) -> str | None:
    if token_id is None:
        return None
    return backend.id_to_token(int(token_id))


def tokenizer_config(backend, info: dict, mc) -> dict:
    """tokenizer_config.json from the GGUF tokenizer keys (info: tokenizer.* without the prefix)."""
    bos_id = info.get("ggml.bos_token_id", mc.bos_token_id)
    eos_id = info.get("ggml.eos_token_id", mc.eos_token_ids[0] if mc.eos_token_ids else None)
    cfg = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": _token(backend, bos_id),
        "eos_token": _token(backend, eos_id),
        "unk_token": _token(backend, info.get("ggml.unknown_token_id")),
        "pad_token": _token(backend, info.get("ggml.padding_token_id")),
        "add_bos_token": bool(info.get("ggml.add_bos_token", False)),
        "add_eos_token": bool(info.get("ggml.add_eos_token", False)),
        "clean_up_tokenization_spaces": False,
        "model_max_length": int(mc.max_position_embeddings),
    }
    template = info.get("chat_template")
    if template:
        cfg["chat_template"] = template
    return {k: v for k, v in cfg.items() if v is not None}


def _config_bytes(obj) -> bytes:
    return (json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")
