"""Slow, independent pure-Python tokenizers that follow llama.cpp's algorithms (src/llama-vocab.cpp), for tests:

  * tokenizer_st_partition: control, user-defined and unknown tokens are cut out of the raw text first, longest
    token first;
  * llm_tokenizer_bpe ("gpt2"): split each fragment with the pre-tokenizer regexes in turn (matches and the text
    between them both become pieces), spell each piece's UTF-8 bytes in GPT-2's byte alphabet, then repeatedly
    merge the adjacent pair of lowest merge rank (leftmost on ties);
  * llm_tokenizer_spm ("llama"): " " -> "▁" (and a leading "▁" per fragment after a special token when
    add_space_prefix), then repeatedly merge the adjacent pair whose concatenation is the best-scored vocabulary
    token (leftmost on ties); a symbol not in the vocabulary falls back to its <0xNN> byte tokens.

Nothing here is shared with impnb/loaders/gguf_vocab.py (which builds a `tokenizers` BPE instead).

Also: `sentencepiece_model(info)`, a sentencepiece ModelProto over a GGUF "llama" vocabulary (Google's own
implementation then tokenizes with it); the stress corpus (tests/data/tokenizer_stress.json); and the recorder of
llama.cpp's ids for it, `python -m tests.tokenizer_reference PATH/TO/llama-tokenize`, which writes
tests/data/tokenizer_llama_cpp_ids.json (llama-tokenize on weightless GGUF copies of each vocabulary).
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

CONTROL, UNKNOWN, USER_DEFINED, BYTE = 3, 2, 4, 6


def byte_alphabet() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character map."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table, extra = {b: chr(b) for b in printable}, 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def partition(text: str, specials: dict[str, int]) -> list:
    """Text -> fragments (str) and special token ids (int), longest special token first."""
    fragments: list = [text]
    for token in sorted(specials, key=len, reverse=True):
        cut = []
        for frag in fragments:
            if isinstance(frag, int) or token not in frag:
                cut.append(frag)
                continue
            for i, part in enumerate(frag.split(token)):
                cut += ([specials[token]] if i else []) + ([part] if part else [])
        fragments = cut
    return fragments


def _specials(tokens: list[str], types: list[int]) -> dict[str, int]:
    return {t: i for i, (t, k) in enumerate(zip(tokens, types)) if k in (CONTROL, UNKNOWN, USER_DEFINED)}


def _split_isolated(pattern, text: str) -> list[str]:
    pieces, last = [], 0
    for m in pattern.finditer(text):
        if m.start() > last:
            pieces.append(text[last:m.start()])
        if m.end() > m.start():
            pieces.append(m.group())
        last = m.end()
    return pieces + ([text[last:]] if last < len(text) else [])


class BPEReference:
    def __init__(self, tokens, types, merges, regexes):
        import regex
        self.vocab = {t: i for i, t in enumerate(tokens)}
        self.ranks = {tuple(m.split(" ", 1)): r for r, m in enumerate(merges)}
        self.specials = _specials(tokens, types)
        self.patterns = [regex.compile(rx) for rx in regexes]
        self.alphabet = byte_alphabet()

    def _word(self, piece: str) -> list[int]:
        word = [self.alphabet[b] for b in piece.encode()]
        while len(word) > 1:
            ranked = [(self.ranks.get((a, b), float("inf")), i) for i, (a, b) in enumerate(zip(word, word[1:]))]
            rank, i = min(ranked)
            if rank == float("inf"):
                break
            word[i:i + 2] = [word[i] + word[i + 1]]
        # A byte the vocabulary never learned (SmolLM2 lacks 21: six ASCII controls such as 0x04, 0xC0/0xC1, 0xF1,
        # 0xF2, 0xF5-0xFF) stays in the word, blocking merges across it, and is skipped at the end, as llama.cpp
        # does (impnb too; transformers drops it before merging, so its neighbours may merge there).
        return [self.vocab[w] for w in word if w in self.vocab]

    def comparable(self, text: str) -> bool:
        return True

    def encode(self, text: str) -> list[int]:
        out = []
        for frag in partition(text, self.specials):
            if isinstance(frag, int):
                out.append(frag)
                continue
            pieces = [frag]
            for pattern in self.patterns:
                pieces = [p for piece in pieces for p in _split_isolated(pattern, piece)]
            for piece in pieces:
                out += self._word(piece)
        return out


class SPMReference:
    def comparable(self, text: str) -> bool:
        """Byte fallback covers every byte; a literal "▁" is where llama.cpp (this reference: user-defined pieces
        such as Gemma's "  " matched in the raw text) and sentencepiece (impnb: in the normalised text) differ."""
        return "\u2581" not in text

    def __init__(self, tokens, types, scores, add_space_prefix: bool):
        self.vocab = {t: i for i, t in enumerate(tokens)}
        self.scores, self.prefix = scores, add_space_prefix
        self.specials = _specials(tokens, types)
        self.byte_ids = {b: self.vocab[f"<0x{b:02X}>"] for b in range(256) if f"<0x{b:02X}>" in self.vocab}

    def _fragment(self, text: str) -> list[int]:
        symbols = list(text.replace(" ", "\u2581"))
        while len(symbols) > 1:
            best = None
            for i, (a, b) in enumerate(zip(symbols, symbols[1:])):
                token = self.vocab.get(a + b)
                if token is not None and (best is None or self.scores[token] > best[0]):
                    best = (self.scores[token], i)
            if best is None:
                break
            i = best[1]
            symbols[i:i + 2] = [symbols[i] + symbols[i + 1]]
        out = []
        for s in symbols:
            out += [self.vocab[s]] if s in self.vocab else [self.byte_ids[b] for b in s.encode()]
        return out

    def encode(self, text: str) -> list[int]:
        out, after_special = [], True
        for frag in partition(text, self.specials):
            if isinstance(frag, int):
                out.append(frag)
                after_special = True
                continue
            out += self._fragment((" " if self.prefix and after_special else "") + frag)
            after_special = False
        return out


# llama.cpp's regex lists for the pre-tokenizers the real models use (written out here, not taken from impnb)
_GPT2 = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)"
REGEXES = {"gpt2": [_GPT2], "default": [_GPT2], "smollm": [r"\p{N}", _GPT2]}


def reference_for(info: dict):
    """The reference tokenizer for GGUFFile.tokenizer_info."""
    tokens, types = info["ggml.tokens"], info["ggml.token_type"]
    if info["ggml.model"] == "gpt2":
        return BPEReference(tokens, types, info["ggml.merges"], REGEXES[info.get("ggml.pre", "default")])
    return SPMReference(tokens, types, info["ggml.scores"], bool(info.get("ggml.add_space_prefix", True)))


# ---- Google's sentencepiece over a GGUF vocabulary ----------------------------------------------------------------
# A ModelProto (sentencepiece_model.proto) written field by field, so no protobuf package is needed:
#   ModelProto: 1 pieces {1 piece, 2 score (float), 3 type}, 2 trainer_spec, 3 normalizer_spec
#   TrainerSpec: 3 model_type (2 = BPE), 4 vocab_size, 35 byte_fallback, 40 unk_id, 41 bos_id, 42 eos_id, 43 pad_id
#   NormalizerSpec: 1 name, 3 add_dummy_prefix, 4 remove_extra_whitespaces, 5 escape_whitespaces
# Piece types are GGUF's numbers. llama.cpp's converter writes user-defined pieces with "▁" turned into " " and
# may mark the unknown piece as control: both are undone here. The normaliser is the identity (what GGUF
# vocabularies carry: llama.cpp applies none), with the prefix and whitespace flags from the metadata.

def _varint(n: int) -> bytes:
    n &= (1 << 64) - 1                       # negative int32 fields are ten-byte two's complement varints
    out = bytearray()
    while True:
        low, n = n & 0x7F, n >> 7
        out.append(low | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(number: int, value) -> bytes:
    import struct
    if isinstance(value, bytes):
        return _varint(number << 3 | 2) + _varint(len(value)) + value
    if isinstance(value, float):
        return _varint(number << 3 | 5) + struct.pack("<f", value)
    return _varint(number << 3) + _varint(int(value))


def sentencepiece_model(info: dict) -> bytes:
    """A serialized sentencepiece ModelProto (BPE) equivalent to a GGUF "llama" vocabulary."""
    tokens, types, scores = info["ggml.tokens"], list(info["ggml.token_type"]), info["ggml.scores"]
    unk = info.get("ggml.unknown_token_id", 0)
    types[unk] = UNKNOWN
    pieces = [_field(1, _field(1, (t.replace(" ", "\u2581") if k == USER_DEFINED else t).encode())
                     + _field(2, float(s)) + _field(3, k)) for t, k, s in zip(tokens, types, scores)]
    trainer = _field(3, 2) + _field(4, len(tokens)) + _field(35, BYTE in types) + _field(40, unk)
    for number, key in ((41, "bos_token_id"), (42, "eos_token_id"), (43, "padding_token_id")):
        trainer += _field(number, info.get(f"ggml.{key}", -1))
    normalizer = (_field(1, b"identity") + _field(3, bool(info.get("ggml.add_space_prefix", True)))
                  + _field(4, bool(info.get("ggml.remove_extra_whitespaces", False))) + _field(5, True))
    return b"".join(pieces) + _field(2, trainer) + _field(3, normalizer)


def sentencepiece_processor(info: dict):
    import sentencepiece
    return sentencepiece.SentencePieceProcessor(model_proto=sentencepiece_model(info))


# ---- the stress corpus and llama.cpp's ids for it -----------------------------------------------------------------

DATA = Path(__file__).parent / "data"
CORPUS = DATA / "tokenizer_stress.json"
LLAMA_CPP_IDS = DATA / "tokenizer_llama_cpp_ids.json"
PRE_SUBSET = ("digits-", "contractions-", "script-", "emoji-", "marks-", "code-", "special-", "mixed-ws-", "prose-",
              "random-", "long-", "rare-cp-")   # the corpus entries run through every synthetic pre-tokenizer


def stress_corpus() -> dict[str, str]:
    """id -> text, in file order."""
    return {e["id"]: e["text"] for e in json.loads(CORPUS.read_text(encoding="utf-8"))["strings"]}


def vocab_fingerprint(info: dict) -> str:
    """sha256 over everything that decides token ids (a recording is only valid for the same vocabulary)."""
    keys = ("model", "pre", "tokens", "token_type", "merges", "scores", "add_space_prefix", "remove_extra_whitespaces")
    blob = json.dumps({k: info.get(f"ggml.{k}") for k in keys}, ensure_ascii=False, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def variants(infos: dict[str, dict]) -> dict[str, dict]:
    """The recorded vocabularies: the real ones, SmolLM2's tokens and merges under every pre-tokenizer name llama.cpp
    knows that impnb supports, and Gemma-3's vocabulary with a space prefix (Llama-2 style)."""
    from impnb.loaders.gguf_vocab import PRE_TOKENIZER_SPLITS
    out = dict(infos)
    if "smollm2" in infos:
        for pre in sorted(set(PRE_TOKENIZER_SPLITS) - {"gpt2"}):     # "gpt2" is transformers' name, not llama.cpp's
            out[f"smollm2-vocab-pre-{pre}"] = {**infos["smollm2"], "ggml.pre": pre}
    if "gemma3" in infos:
        out["gemma3-vocab-space-prefix"] = {**infos["gemma3"], "ggml.add_space_prefix": True}
    return out


def write_vocab_gguf(path: Path, info: dict) -> None:
    """A weightless GGUF holding `info`'s vocabulary, enough for `llama-tokenize` (it loads the vocabulary only)."""
    import gguf
    w = gguf.GGUFWriter(str(path), "llama")
    for key, value in (("context_length", 2048), ("embedding_length", 64), ("block_count", 1),
                       ("feed_forward_length", 128), ("attention.head_count", 1)):
        w.add_uint32(f"llama.{key}", value)
    w.add_float32("llama.attention.layer_norm_rms_epsilon", 1e-5)
    for key, value in info.items():
        if isinstance(value, bool):
            w.add_bool(f"tokenizer.{key}", value)
        elif isinstance(value, int):
            w.add_uint32(f"tokenizer.{key}", value)
        elif isinstance(value, str):
            w.add_string(f"tokenizer.{key}", value)
        elif key in ("ggml.tokens", "ggml.merges", "ggml.token_type", "ggml.scores"):
            w.add_array(f"tokenizer.{key}", value)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def llama_tokenize(binary: str, model: Path, text: str, parse_special: bool) -> list[int]:
    with tempfile.NamedTemporaryFile("wb", suffix=".txt", delete=False) as f:
        f.write(text.encode())
    cmd = [binary, "-m", str(model), "-f", f.name, "--ids", "--no-bos", "--no-escape", "--log-disable"]
    try:
        out = subprocess.run(cmd + ([] if parse_special else ["--no-parse-special"]), capture_output=True,
                             check=True).stdout.decode()
    finally:
        os.unlink(f.name)
    return json.loads(out.strip().splitlines()[-1])


def record(binary: str) -> None:
    """Run llama-tokenize over the corpus for every vocabulary in `variants` and write LLAMA_CPP_IDS."""
    from impnb.loaders.gguf import read_gguf

    from .gguf_helpers import gemma3_path, smollm2_path
    real = {name: read_gguf(p).tokenizer_info for name, p in (("smollm2", smollm2_path()), ("gemma3", gemma3_path()))}
    corpus = stress_corpus()
    version = subprocess.run([binary, "--version"], capture_output=True).stderr.decode().strip().splitlines()
    result = {"command": f"python -m tests.tokenizer_reference {binary}",
              "llama_tokenize": "llama-tokenize -m MODEL -f TEXT --ids --no-bos --no-escape --log-disable "
                                "[--no-parse-special]",
              "llama_cpp_version": version[0] if version else "", "corpus_sha256":
              hashlib.sha256(CORPUS.read_bytes()).hexdigest(), "vocabularies": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for name, info in variants(real).items():
            model = Path(tmp) / f"{name}.gguf"
            write_vocab_gguf(model, {k: v for k, v in info.items() if k.startswith("ggml.")})
            texts = {k: t for k, t in corpus.items() if name in real or k.startswith(PRE_SUBSET)}
            entry = {"fingerprint": vocab_fingerprint(info), "parse_special": {}, "no_parse_special": {}}
            for key, text in texts.items():
                entry["parse_special"][key] = llama_tokenize(binary, model, text, True)
                if name in real:
                    entry["no_parse_special"][key] = llama_tokenize(binary, model, text, False)
            result["vocabularies"][name] = entry
            print(f"{name}: {len(texts)} strings", file=sys.stderr)
    LLAMA_CPP_IDS.write_text(_compact_json(result))


def _compact_json(value, depth: int = 0) -> str:
    """JSON with one line per leaf list (one string's ids), so the file stays small and diffs by string."""
    if not isinstance(value, dict):
        return json.dumps(value, ensure_ascii=True, separators=(",", ":"))
    pad = " " * (depth + 1)
    items = [f"{pad}{json.dumps(k)}: {_compact_json(v, depth + 1)}" for k, v in value.items()]
    return "{\n" + ",\n".join(items) + "\n" + " " * depth + "}" + ("\n" if depth == 0 else "")


if __name__ == "__main__":
    record(sys.argv[1] if len(sys.argv) > 1 else "llama-tokenize")
