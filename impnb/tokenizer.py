"""Tokenizer: text <-> token ids for a checkpoint, backed by the `tokenizers` library.

    tok = Tokenizer.from_path("model.gguf")            # GGUF-embedded vocabulary (impnb/loaders/gguf_vocab.py)
    tok = Tokenizer.from_path("checkpoint_dir/")       # tokenizer.json + tokenizer_config.json (+ generation_config)
    ids = tok.encode("Hello", add_special_tokens=True) # BOS/EOS added as the checkpoint says (add_bos / add_eos)
    tok.decode(ids)                                    # special tokens kept unless skip_special_tokens=True

Special-token strings inside the text ("<|im_start|>", "<start_of_turn>") are matched whole, as Hugging Face and
llama.cpp (parse_special) do, so a rendered chat template tokenizes to the ids the model was trained on;
encode(..., parse_special=False) reads them as plain text instead.

Stop tokens: `eos_id`, plus `eot_ids`, the end-of-turn tokens a chat model ends its reply with. Many GGUFs omit
tokenizer.ggml.eot_token_id (Gemma's <end_of_turn> among them), so the vocabulary is also
searched for the end-of-turn spellings in END_OF_TURN_TOKENS; generation_config.json's eos_token_id list
(safetensors checkpoints) is added too.

Untrusted input: tokenizer.json and GGUF vocabularies are checked (impnb/tokenizer_checks.py) before the Rust
library sees them, JSON side files are read with size and depth limits, and a panic inside the library becomes a
FormatError. A checkpoint without any tokenizer gives ``Tokenizer.from_checkpoint(ckpt) is None``: the model then
runs on token ids only.
"""
from __future__ import annotations

import os
from pathlib import Path

from tokenizers import Tokenizer as _Backend

from .errors import FormatError, ImpnbError
from .loaders.jsonfile import MAX_TOKENIZER_BYTES, read_json_file
from .loaders.safetensors import parse_json_object
from .tokenizer_checks import check_gguf_vocabulary, check_tokenizer_json

END_OF_TURN_TOKENS = ("<end_of_turn>", "<|im_end|>", "<|eot_id|>", "<|eom_id|>", "<|end|>", "<|endoftext|>",
                      "<|return|>", "<|end_of_text|>", "<turn|>", "<|END_OF_TURN_TOKEN|>")


class Tokenizer:
    """A `tokenizers.Tokenizer` plus the checkpoint's special-token facts."""

    def __init__(self, backend: _Backend, *, bos_id=None, eos_id=None, pad_id=None, unk_id=None,
                 add_bos=False, add_eos=False, extra_stop_ids=(), source=""):
        self.backend, self.source = backend, source
        self.bos_id, self.eos_id, self.pad_id, self.unk_id = bos_id, eos_id, pad_id, unk_id
        self.add_bos, self.add_eos = bool(add_bos and bos_id is not None), bool(add_eos and eos_id is not None)
        vocab = backend.get_vocab(with_added_tokens=True)
        found = list(extra_stop_ids) + [vocab[t] for t in END_OF_TURN_TOKENS if t in vocab]
        self.eot_ids = frozenset(found)
        self.eot_id = found[0] if found else None     # the preferred end-of-turn token (may equal eos_id)
        self.special_ids = frozenset(i for i, t in backend.get_added_tokens_decoder().items() if t.special)

    # ---- text <-> ids --------------------------------------------------------------------------------------
    def encode(self, text: str, add_special_tokens: bool = True, parse_special: bool = True) -> list[int]:
        """parse_special=False: special-token spellings in the text are text (llama.cpp's --no-parse-special)."""
        before = self.backend.encode_special_tokens
        self.backend.encode_special_tokens = not parse_special
        try:
            ids = _guarded(lambda: self.backend.encode(text, add_special_tokens=False).ids, self.source, "encode")
        finally:
            self.backend.encode_special_tokens = before
        if add_special_tokens:
            ids = ([self.bos_id] if self.add_bos else []) + ids + ([self.eos_id] if self.add_eos else [])
        return ids

    def decode(self, ids, skip_special_tokens: bool = False) -> str:
        ids = [int(i) for i in ids]
        return _guarded(lambda: self.backend.decode(ids, skip_special_tokens=skip_special_tokens), self.source,
                        "decode")

    def token_to_id(self, token: str) -> int | None:
        return self.backend.token_to_id(token)

    def id_to_token(self, token_id: int) -> str | None:
        return self.backend.id_to_token(int(token_id))

    @property
    def vocab_size(self) -> int:
        return self.backend.get_vocab_size(with_added_tokens=True)

    @property
    def bos_token(self) -> str | None:
        return None if self.bos_id is None else self.id_to_token(self.bos_id)

    @property
    def eos_token(self) -> str | None:
        return None if self.eos_id is None else self.id_to_token(self.eos_id)

    @property
    def stop_ids(self) -> frozenset[int]:
        return self.eot_ids | ({self.eos_id} if self.eos_id is not None else set())

    @property
    def special_tokens(self) -> dict[str, int]:
        """Named special tokens present in this vocabulary: {"bos": 1, "eos": 2, ...}."""
        named = {"bos": self.bos_id, "eos": self.eos_id, "pad": self.pad_id, "unk": self.unk_id, "eot": self.eot_id}
        return {k: v for k, v in named.items() if v is not None}

    def __repr__(self):
        return (f"Tokenizer({self.source!r}, vocab={self.vocab_size}, bos={self.bos_token!r}, "
                f"eos={self.eos_token!r}, add_bos={self.add_bos}, stop_ids={sorted(self.stop_ids)})")

    # ---- construction --------------------------------------------------------------------------------------
    @classmethod
    def from_gguf_info(cls, info: dict, arch: str, source: str = "gguf") -> "Tokenizer":
        """From GGUFFile.tokenizer_info (tokenizer.* metadata without the prefix) and general.architecture."""
        from .loaders.gguf_vocab import tokenizer_from_gguf_vocab
        check_gguf_vocabulary(info, source)
        backend = _guarded(lambda: tokenizer_from_gguf_vocab(info), source, "build")
        n = backend.get_vocab_size(with_added_tokens=True)

        def token_id(key):
            value = info.get(f"ggml.{key}")
            if value is None:
                return None
            if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < n:
                raise FormatError(f"{source}: tokenizer.ggml.{key} = {value!r} is not a token id below {n}")
            return value

        model = info.get("ggml.model")
        # llama.cpp adds BOS to a SentencePiece vocabulary unless the file says otherwise; BPE files say it.
        add_bos = _flag(info, "ggml.add_bos_token", model == "llama", source)
        extra = [i for i in (token_id("eot_token_id"), token_id("eom_token_id")) if i is not None]
        return cls(backend, bos_id=token_id("bos_token_id"), eos_id=token_id("eos_token_id"),
                   pad_id=token_id("padding_token_id"), unk_id=token_id("unknown_token_id"), add_bos=add_bos,
                   add_eos=_flag(info, "ggml.add_eos_token", False, source), extra_stop_ids=extra, source=source)

    @classmethod
    def from_gguf(cls, path) -> "Tokenizer":
        from .loaders.gguf import read_gguf
        gf = read_gguf(path)
        return cls.from_gguf_info(gf.tokenizer_info, gf.architecture, source=str(path))

    @classmethod
    def from_directory(cls, directory) -> "Tokenizer":
        """tokenizer.json, with tokenizer_config.json and generation_config.json beside it when present."""
        directory = Path(directory)
        path = directory / "tokenizer.json"
        if not path.is_file():
            raise FormatError(f"{directory}: no tokenizer.json")
        backend = _backend_from_json(path)
        config = read_json_file(directory / "tokenizer_config.json") or {}
        generation = read_json_file(directory / "generation_config.json") or {}
        ids = {k: _special_id(backend, config.get(f"{k}_token")) for k in ("bos", "eos", "pad", "unk")}
        add_bos, add_eos = _template_adds(backend, ids["bos"], ids["eos"], config)
        backend.post_processor = None   # BOS/EOS are added by encode(), from add_bos/add_eos
        if ids["eos"] is None:
            ids["eos"] = next(iter(_id_list(generation.get("eos_token_id"))), None)
        return cls(backend, bos_id=ids["bos"], eos_id=ids["eos"], pad_id=ids["pad"], unk_id=ids["unk"],
                   add_bos=add_bos, add_eos=add_eos, extra_stop_ids=_id_list(generation.get("eos_token_id")),
                   source=str(directory))

    @classmethod
    def from_path(cls, path) -> "Tokenizer":
        """A .gguf file, a checkpoint directory, or a file inside one (its directory is used)."""
        path = Path(path)
        if path.is_file() and _is_gguf(path):
            return cls.from_gguf(path)
        return cls.from_directory(path if path.is_dir() else path.parent)

    @classmethod
    def from_checkpoint(cls, ckpt) -> "Tokenizer | None":
        """From what impnb.load_checkpoint returns (GGUF: its embedded vocabulary; else the files beside it).
        None when the checkpoint has no tokenizer at all (no tokenizer.ggml.tokens, no tokenizer.json)."""
        if ckpt.format == "gguf":
            if not (ckpt.tokenizer or {}).get("ggml.tokens"):
                return None
            arch = (ckpt.raw_config or {}).get("general.architecture", "")
            return cls.from_gguf_info(ckpt.tokenizer or {}, arch, source=str(ckpt.path))
        path = Path(ckpt.path)
        directory = path if path.is_dir() else path.parent
        return cls.from_directory(directory) if (directory / "tokenizer.json").is_file() else None


def _is_gguf(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(4) == b"GGUF"


def _flag(info: dict, key: str, default: bool, source) -> bool:
    value = info.get(key, default)
    if not isinstance(value, bool):
        raise FormatError(f"{source}: tokenizer.{key} = {str(value)[:40]!r} must be true or false")
    return value


def _guarded(call, source, what: str):
    """Run a tokenizers-library call; its plain Exceptions and its panics (pyo3's PanicException, a
    BaseException) become FormatError."""
    try:
        return call()
    except (ImpnbError, KeyboardInterrupt, SystemExit, MemoryError):
        raise
    except BaseException as exc:  # noqa: BLE001 - PanicException derives from BaseException
        if not isinstance(exc, Exception) and type(exc).__name__ != "PanicException":
            raise
        raise FormatError(f"{source}: the tokenizer failed to {what} ({type(exc).__name__}: "
                          f"{str(exc).splitlines()[0][:200] if str(exc) else ''})") from None


def _backend_from_json(path: Path) -> _Backend:
    """tokenizer.json, size- and depth-limited and checked (impnb/tokenizer_checks.py) before the library parses it."""
    size = os.path.getsize(path)
    if size > MAX_TOKENIZER_BYTES:
        raise FormatError(f"{path}: {size} bytes is over the {MAX_TOKENIZER_BYTES}-byte limit for tokenizer.json")
    raw = path.read_bytes()
    check_tokenizer_json(parse_json_object(path, raw, "tokenizer.json"), path)
    return _guarded(lambda: _Backend.from_str(raw.decode("utf-8")), path, "load tokenizer.json")


def _special_id(backend: _Backend, token) -> int | None:
    """tokenizer_config.json spells a special token as a string or as {"content": ...}."""
    if isinstance(token, dict):
        token = token.get("content")
    return backend.token_to_id(token) if isinstance(token, str) else None


def _id_list(value) -> list[int]:
    if isinstance(value, int) and not isinstance(value, bool):
        return [value]
    return [v for v in value if isinstance(v, int)] if isinstance(value, list) else []


def _template_adds(backend: _Backend, bos: int | None, eos: int | None, config: dict) -> tuple[bool, bool]:
    """Does this checkpoint add BOS / EOS? Ask tokenizer.json's post-processor; tokenizer_config.json overrides."""
    probe = (_guarded(lambda: backend.encode("a", add_special_tokens=True).ids, "tokenizer.json", "encode")
             if backend.post_processor is not None else [])
    add_bos = bool(probe) and bos is not None and probe[0] == bos
    add_eos = bool(probe) and eos is not None and probe[-1] == eos
    add_bos = bool(config.get("add_bos_token", add_bos))
    add_eos = bool(config.get("add_eos_token", add_eos))
    return add_bos, add_eos

