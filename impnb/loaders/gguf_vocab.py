"""A GGUF-embedded vocabulary (tokenizer.ggml.*) -> an equivalent `tokenizers.Tokenizer`.

GGUF keys used: model ("gpt2" byte-level BPE | "llama" SentencePiece-style BPE), pre (pre-tokenizer name),
tokens [V], token_type [V] (1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte),
merges ("left right" strings, gpt2 only), scores [V] (llama only), unknown_token_id, add_space_prefix.

gpt2: the tokens are already spelled in GPT-2's byte-to-unicode alphabet, merges are given. A byte the vocabulary
lacks (SmolLM2 has no token for 21 of the 256, e.g. 0xF1, which only code points of planes 4-16 use) is dropped,
as llama.cpp and transformers drop it. The pre-tokenizer is
not stored, only its name (`tokenizer.ggml.pre`); llama.cpp (src/llama-vocab.cpp) maps each name to a sequence of
split regexes, reproduced in PRE_TOKENIZER_SPLITS. An unknown name raises `Unsupported`: a wrong split produces
plausible but different token ids.

llama (SentencePiece BPE): no merges are stored. SentencePiece merges the adjacent pair whose merged piece ranks
best, so the merges are recovered from the vocabulary: every split of a token into two tokens, ranked by the merged
token (by score, as llama.cpp's llm_tokenizer_spm does; for Gemma by position in the file, which equals the
score order on normal tokens and puts Gemma's whitespace-run pieces, stored with score -1000, where its reference
tokenizer has them). Control and byte tokens take no part in merges. Text gets " " -> "▁" and, where
add_space_prefix says so, a leading "▁" per text fragment (as llama.cpp); unknown bytes fall back to <0xNN> tokens.

Gemma files store pieces made only of spaces with real spaces ("  "); they are spelled "▁▁" here so that the
normalised text (spaces already replaced) can reach them.
"""
from __future__ import annotations

from tokenizers import AddedToken, Regex, Tokenizer, decoders, normalizers, pre_tokenizers
from tokenizers.models import BPE

from ..errors import FormatError, Unsupported

NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6
SPM_SPACE = "\u2581"

_GPT2_WORDS = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
_LLAMA3 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
           r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_QWEN2 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
          r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")

# tokenizer.ggml.pre -> the regexes llama.cpp splits with, in order (each splits every piece of the previous one).
PRE_TOKENIZER_SPLITS = {
    **{name: (_GPT2_WORDS,) for name in ("gpt2", "default", "mpt", "olmo", "jais")},
    **{name: (r"\p{N}", _GPT2_WORDS) for name in ("smollm", "starcoder", "refact", "command-r", "codeshell",
                                                   "exaone", "minerva")},
    **{name: (_LLAMA3,) for name in ("llama-bpe", "llama3", "llama-v3", "falcon3", "smaug-bpe", "dbrx", "pixtral")},
    **{name: (_QWEN2,) for name in ("qwen2", "deepseek-r1-qwen", "stablelm2", "megrez")},
}
# llama.cpp ignores merges for words that are whole tokens under the Llama-3 pre-tokenizer (tokenizer.json too).
IGNORE_MERGES_PRE = frozenset({"llama-bpe", "llama3", "llama-v3", "falcon3", "smaug-bpe", "dbrx", "pixtral"})
POSITION_RANKED_ARCHS = frozenset({"gemma", "gemma2", "gemma3"})


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


# key -> (check of the value, what it must be); a value of the wrong kind is a FormatError, never a crash later
_KINDS = {
    "tokens": (lambda v: isinstance(v, list) and all(isinstance(t, str) for t in v), "a list of strings"),
    "merges": (lambda v: isinstance(v, list) and all(isinstance(t, str) for t in v), "a list of strings"),
    "token_type": (lambda v: isinstance(v, list) and all(_is_int(t) for t in v), "a list of integers"),
    "scores": (lambda v: isinstance(v, list) and all(isinstance(t, (int, float)) for t in v), "a list of numbers"),
    "model": (lambda v: isinstance(v, str), "a string"),
    "pre": (lambda v: isinstance(v, str), "a string"),
}


def _get(info: dict, key: str, default=None, required: bool = False):
    value = info.get(f"ggml.{key}", default)
    if required and value is None:
        raise FormatError(f"GGUF vocabulary: tokenizer.ggml.{key} is missing")
    check, kind = _KINDS.get(key, (lambda v: True, ""))
    if value is not None and not check(value):
        raise FormatError(f"GGUF vocabulary: tokenizer.ggml.{key} must be {kind}, got {type(value).__name__}")
    return value


def _tokens(info: dict) -> list[str]:
    tokens = _get(info, "tokens", required=True)
    empty = next((i for i, t in enumerate(tokens) if not t), None)
    if empty is not None:
        raise FormatError(f"GGUF vocabulary: token {empty} is an empty string")
    if len(set(tokens)) != len(tokens):
        raise FormatError("GGUF vocabulary: duplicate tokens")
    return tokens


def _token_types(info: dict, n: int) -> list[int]:
    types = _get(info, "token_type") or [NORMAL] * n
    if len(types) != n:
        raise FormatError(f"GGUF vocabulary: {len(types)} token types for {n} tokens")
    return types


def _added_tokens(tokens: list[str], types: list[int], vocab: dict) -> tuple[list, list]:
    """Control tokens become special added tokens; user-defined ones plain added tokens, matched whole."""
    special = [AddedToken(t, special=True, normalized=False) for t, k in zip(tokens, types) if k == CONTROL]
    plain = [AddedToken(t, special=False, normalized=False)
             for t, k in zip(tokens, types) if k == USER_DEFINED and t in vocab]
    return special, plain


def _finish(tok: Tokenizer, tokens: list[str], types: list[int], vocab: dict) -> Tokenizer:
    special, plain = _added_tokens(tokens, types, vocab)
    tok.add_special_tokens(special)
    tok.add_tokens(plain)
    return tok


def gpt2_tokenizer(info: dict) -> Tokenizer:
    tokens = _tokens(info)
    merges = _get(info, "merges", required=True)
    pre = _get(info, "pre", "default")
    if pre not in PRE_TOKENIZER_SPLITS:
        raise Unsupported(f"GGUF vocabulary: pre-tokenizer {pre!r} is not known; known: "
                          f"{sorted(PRE_TOKENIZER_SPLITS)}")
    vocab = {t: i for i, t in enumerate(tokens)}
    pairs = []
    for m in merges:
        left, sep, right = m.partition(" ")
        if not (sep and left and right) or left not in vocab or right not in vocab or left + right not in vocab:
            raise FormatError(f"GGUF vocabulary: merge {m!r} is not two vocabulary tokens making a third")
        pairs.append((left, right))
    tok = Tokenizer(BPE(vocab, pairs, fuse_unk=False, byte_fallback=False, ignore_merges=pre in IGNORE_MERGES_PRE))
    splits = [pre_tokenizers.Split(Regex(rx), behavior="isolated") for rx in PRE_TOKENIZER_SPLITS[pre]]
    tok.pre_tokenizer = pre_tokenizers.Sequence(splits + [pre_tokenizers.ByteLevel(add_prefix_space=False,
                                                                                    use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    return _finish(tok, tokens, _token_types(info, len(tokens)), vocab)


def _spm_merges(tokens: list[str], types: list[int], rank: list[float]) -> list[tuple[str, str]]:
    """Every (left, right) whose concatenation is a mergeable token, best-ranked merged token first."""
    vocab = {t: i for i, t in enumerate(tokens)}
    mergeable = {t for t, k in zip(tokens, types) if k in (NORMAL, USER_DEFINED, UNUSED)}
    found = []
    for i, t in enumerate(tokens):
        if t not in mergeable or len(t) < 2:
            continue
        for cut in range(1, len(t)):
            left, right = t[:cut], t[cut:]
            if left in mergeable and right in mergeable:
                found.append((rank[i], -len(left), vocab[left], vocab[right], left, right))
    found.sort()
    return [(left, right) for *_, left, right in found]


def spm_tokenizer(info: dict, arch: str) -> Tokenizer:
    raw = _tokens(info)
    types = _token_types(info, len(raw))
    tokens = [SPM_SPACE * len(t) if t and not t.strip(" ") else t for t in raw]
    if arch in POSITION_RANKED_ARCHS:
        rank = list(range(len(tokens)))
    else:
        scores = _get(info, "scores", required=True)
        if len(scores) != len(tokens):
            raise FormatError(f"GGUF vocabulary: {len(scores)} scores for {len(tokens)} tokens")
        rank = [-s for s in scores]
    vocab = {t: i for i, t in enumerate(tokens)}
    if len(vocab) != len(tokens):   # distinct in the file, equal once all-space pieces are respelled
        raise FormatError("GGUF vocabulary: duplicate tokens")
    unk = _get(info, "unknown_token_id")
    unk_token = tokens[unk] if isinstance(unk, int) and 0 <= unk < len(tokens) else None
    tok = Tokenizer(BPE(vocab, _spm_merges(tokens, types, rank), unk_token=unk_token, fuse_unk=True,
                        byte_fallback=BYTE in types))
    prefix = bool(_get(info, "add_space_prefix", True))
    # llama.cpp's llm_tokenizer_spm puts " " before every text fragment that starts the input or follows a
    # special token; a normalizer Prepend does exactly that (it runs once per fragment between added tokens).
    # (tokenizers' Metaspace "first" differs: it skips the prefix when the text already starts with a space.)
    replace = normalizers.Replace(" ", SPM_SPACE)
    tok.normalizer = normalizers.Sequence([normalizers.Prepend(SPM_SPACE), replace]) if prefix else replace
    steps = [decoders.Replace(SPM_SPACE, " "), decoders.ByteFallback(), decoders.Fuse()]
    tok.decoder = decoders.Sequence(steps + ([decoders.Strip(" ", 1, 0)] if prefix else []))
    return _finish(tok, tokens, types, vocab)


def tokenizer_from_gguf_vocab(info: dict, arch: str) -> Tokenizer:
    """`info` is GGUFFile.tokenizer_info (the tokenizer.* keys without the prefix)."""
    model = _get(info, "model", required=True)
    if model == "gpt2":
        return gpt2_tokenizer(info)
    if model == "llama":
        return spm_tokenizer(info, arch)
    raise Unsupported(f"GGUF vocabulary: tokenizer model {model!r} is not supported (supported: 'gpt2', 'llama')")
