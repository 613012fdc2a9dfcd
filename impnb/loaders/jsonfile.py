"""JSON side files (config.json, tokenizer.json, tokenizer_config.json, generation_config.json, chat_template.json,
hf_quant_config.json, model.safetensors.index.json), read with a size and a depth limit.

``read_json_file(path, what)`` -> dict, or None when the file does not exist. The size is checked before a byte is
read, the JSON is strict (UTF-8, no duplicate keys, no NaN / Infinity), nested at most MAX_JSON_DEPTH levels, and
an object at the top; anything else is a FormatError naming the file.
"""
from __future__ import annotations

import os
from pathlib import Path

from ..errors import FormatError
from .safetensors import MAX_JSON_DEPTH, parse_json_object

MAX_CONFIG_BYTES = 16 << 20          # config / tokenizer_config / generation / index files: real ones are < 2 MB
MAX_TOKENIZER_BYTES = 64 << 20       # tokenizer.json: Gemma-3's (262k tokens) is 33 MB

__all__ = ["read_json_file", "MAX_CONFIG_BYTES", "MAX_TOKENIZER_BYTES", "MAX_JSON_DEPTH"]


def read_json_file(path, what: str | None = None, max_bytes: int = MAX_CONFIG_BYTES) -> dict | None:
    """The JSON object in ``path`` (None if there is no such file); see the module docstring. ``what`` names the
    kind of file in messages (default: its file name)."""
    path = Path(path)
    what = what or path.name
    try:
        if not path.is_file():
            return None
        size = os.path.getsize(path)
        if size > max_bytes:
            raise FormatError(f"{what} {path}: {size} bytes is over the {max_bytes}-byte limit")
        raw = path.read_bytes()
    except OSError as exc:
        raise FormatError(f"{what} {path}: cannot read ({exc})") from None
    return parse_json_object(path, raw, what)
