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
"""
from __future__ import annotations

CONTROL, UNKNOWN, USER_DEFINED = 3, 2, 4


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
        # does. tokenizers' BPE (transformers, impnb) drops it BEFORE merging, so its neighbours may merge: the two
        # differ on such text. `knows_all_bytes` tells the tests which texts to compare.
        return [self.vocab[w] for w in word if w in self.vocab]

    def knows_all_bytes(self, text: str) -> bool:
        return all(self.alphabet[b] in self.vocab for b in text.encode())

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
    def knows_all_bytes(self, text: str) -> bool:
        return True      # byte fallback covers every byte

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
