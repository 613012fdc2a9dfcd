"""Tokenizer files for a checkpoint converted from GGUF: tokenizer.json and tokenizer_config.json.

The GGUF file embeds its vocabulary (tokenizer.ggml.*) and chat template (tokenizer.chat_template); impnb.tokenizer
turns the vocabulary into a ``tokenizers.Tokenizer``, whose ``to_str()`` is tokenizer.json. tokenizer_config.json
carries what transformers' ``PreTrainedTokenizerFast`` needs beside it: the special tokens by content, add_bos /
add_eos, and the chat template impnb itself renders with (the GGUF's own, byte for byte, or impnb.chat's fallback
for a GGUF without one, such as the Gemma-3-270M file).
"""
from __future__ import annotations

import json


def gguf_tokenizer_files(ckpt, mc) -> dict[str, bytes]:
    """tokenizer.json, tokenizer_config.json and generation_config.json of a GGUF checkpoint."""
    from ..chat import ChatTemplate
    from ..tokenizer import Tokenizer
    tok = Tokenizer.from_checkpoint(ckpt)
    template = ChatTemplate.from_checkpoint(ckpt, tok).source  # the GGUF's, or impnb's fallback (e.g. Gemma)
    return {"tokenizer.json": with_special_tokens_template(tok).to_str(pretty=True).encode("utf-8"),
            "tokenizer_config.json": _config_bytes(tokenizer_config(tok, template, mc)),
            "generation_config.json": _config_bytes(generation_config(tok, mc))}


def with_special_tokens_template(tok):
    """A copy of the tokenizers backend whose post-processor adds BOS / EOS as the GGUF says (add_bos_token /
    add_eos_token): transformers' fast tokenizer takes them from tokenizer.json, while impnb adds them itself
    (it encodes with add_special_tokens=False, so the template never doubles them)."""
    from tokenizers import Tokenizer as Backend
    from tokenizers.processors import TemplateProcessing
    backend = Backend.from_str(tok.backend.to_str())
    if not (tok.add_bos or tok.add_eos):
        return backend
    bos = [tok.bos_token] if tok.add_bos else []
    eos = [tok.eos_token] if tok.add_eos else []
    single = " ".join([*(f"{t}:0" for t in bos), "$A:0", *(f"{t}:0" for t in eos)])
    pair = single + " " + " ".join([*(f"{t}:1" for t in bos), "$B:1", *(f"{t}:1" for t in eos)])
    specials = sorted({(t, tok.token_to_id(t)) for t in bos + eos}, key=lambda x: x[1])
    backend.post_processor = TemplateProcessing(single=single, pair=pair, special_tokens=specials)
    return backend


def generation_config(tok, mc) -> dict:
    """bos / eos ids; eos lists the config's EOS then the end-of-turn tokens (Gemma's <end_of_turn>, ...), so that
    transformers' generate stops where impnb does."""
    out = {}
    if mc.bos_token_id is not None:
        out["bos_token_id"] = int(mc.bos_token_id)
    eos = [int(e) for e in mc.eos_token_ids]
    eos += sorted(int(e) for e in tok.eot_ids if int(e) not in eos)
    if eos:
        out["eos_token_id"] = eos[0] if len(eos) == 1 else eos
    return out


def tokenizer_config(tok, template: str | None, mc) -> dict:
    """tokenizer_config.json from impnb's Tokenizer and the chat template impnb renders with."""
    cfg = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": _token(tok, tok.bos_id),
        "eos_token": _token(tok, tok.eos_id),
        "unk_token": _token(tok, tok.unk_id),
        "pad_token": _token(tok, tok.pad_id),
        "add_bos_token": tok.add_bos,
        "add_eos_token": tok.add_eos,
        "clean_up_tokenization_spaces": False,
        "model_max_length": int(mc.max_position_embeddings),
    }
    if template:
        cfg["chat_template"] = template
    return {k: v for k, v in cfg.items() if v is not None}


def _token(tok, token_id) -> str | None:
    return None if token_id is None else tok.id_to_token(int(token_id))


def _config_bytes(obj) -> bytes:
    return (json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")
