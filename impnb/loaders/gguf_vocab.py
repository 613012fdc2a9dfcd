"""A GGUF-embedded vocabulary (tokenizer.ggml.*) -> an equivalent `tokenizers.Tokenizer`.

GGUF keys used: model ("gpt2" byte-level BPE | "llama" SentencePiece BPE), pre (pre-tokenizer name), tokens [V],
token_type [V] (1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte), merges ("left right", gpt2
only), scores [V] (llama only), unknown_token_id, add_space_prefix, remove_extra_whitespaces.

Both families first cut control and unknown tokens out of the raw text (special added tokens; `encode` can switch
that off, as llama.cpp's parse_special) and user-defined pieces (plain added tokens, always matched). Both cuts
are leftmost-longest.

gpt2: the tokens are spelled in GPT-2's byte-to-unicode alphabet and the merges are given. The pre-tokenizer is
not stored, only its name; llama.cpp (src/llama-vocab.cpp) maps each name to a sequence of split regexes,
reproduced in PRE_TOKENIZER_SPLITS. An unknown name raises `Unsupported`: a wrong split gives plausible but
different ids. A byte the vocabulary lacks (SmolLM2 has no token for 21 of the 256, e.g. 0x04, or 0xF1, which only
code points of planes 4-11 use) is dropped, as llama.cpp drops it: it stays in its word until the merges are
done, so its neighbours never merge across it (it is isolated before the model runs).

llama (SentencePiece BPE), as sentencepiece encodes: the text is normalised (the identity map; with
remove_extra_whitespaces, leading, trailing and repeated spaces go; with add_space_prefix, one " " goes in front;
then " " -> "▁"), user-defined pieces are cut out of the normalised text leftmost-longest and never merged, and the
rest is merged pair by pair, always the adjacent pair whose concatenation is the best-scored normal (or unused)
piece. No merges are stored, so they are recovered from the vocabulary: every split of such a piece into two
such pieces, ranked by the merged piece's score. Control, byte and user-defined pieces take no part in merges. A
character the vocabulary lacks becomes its UTF-8 <0xNN> byte tokens, or, without byte tokens, one unknown token
per run. llama.cpp's converter stores user-defined pieces with "▁" already turned back into " " (Gemma's
whitespace runs are "  ", ...); they are spelled with "▁" again here.

With add_space_prefix, the prefix goes in front of every fragment between cut-out tokens, as llama.cpp does, and
user-defined pieces are then matched in the raw text (sentencepiece adds the prefix once, before the whole text:
the two differ only where a user-defined piece is in such a vocabulary).
"""
from __future__ import annotations

from tokenizers import AddedToken, Regex, Tokenizer, decoders, normalizers, pre_tokenizers
from tokenizers.models import BPE

from ..errors import FormatError, Unsupported

NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6
SPM_SPACE = "\u2581"

_CONTRACTIONS = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])"   # llama.cpp's spelling of (?i:...)
_GPT2_WORDS = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
_LLAMA3 = (_CONTRACTIONS + r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
           r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_QWEN2 = (_CONTRACTIONS + r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
          r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")

# tokenizer.ggml.pre -> the regexes llama.cpp splits with, in order (each splits every piece of the previous one).
# "gpt2" is transformers' name for llama.cpp's "gpt-2".
PRE_TOKENIZER_SPLITS = {
    "default": (r"[\p{P}\$\+<=>\^~\|]+", _GPT2_WORDS, r"\p{N}+", r"[0-9][0-9][0-9]"),
    **{name: (_GPT2_WORDS,) for name in ("gpt2", "gpt-2", "mpt", "olmo", "jais")},
    **{name: (r"\p{N}", _GPT2_WORDS) for name in ("smollm", "starcoder", "refact", "command-r", "codeshell",
                                                   "exaone", "minerva-7b")},
    **{name: (_LLAMA3,) for name in ("llama-bpe", "llama3", "llama-v3", "falcon3", "smaug-bpe", "dbrx", "pixtral")},
    **{name: (_QWEN2,) for name in ("qwen2", "deepseek-r1-qwen", "stablelm2", "megrez")},
}
# llama.cpp emits a word that is a whole token as that token, without merging, for these (tokenizer.json too).
IGNORE_MERGES_PRE = frozenset({"llama-bpe", "llama3", "llama-v3", "falcon3", "pixtral"})


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


def _add_cut_tokens(tok: Tokenizer, tokens: list[str], types: list[int], user_normalized: bool) -> Tokenizer:
    """Control and unknown tokens: special added tokens, matched in the raw text (skipped when special-token
    parsing is off). User-defined pieces: plain added tokens, matched in the normalised text or the raw one."""
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False)
                            for t, k in zip(tokens, types) if k in (CONTROL, UNKNOWN)])
    tok.add_tokens([AddedToken(t, special=False, normalized=user_normalized)
                    for t, k in zip(tokens, types) if k == USER_DEFINED])
    return tok


# ---- gpt2: byte-level BPE -----------------------------------------------------------------------------------------

def byte_to_unicode() -> dict[int, str]:
    """GPT-2's byte alphabet: printable Latin-1 bytes stand for themselves, the other 68 take 256, 257, ..."""
    kept = [*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    others = [b for b in range(256) if b not in kept]
    return {**{b: chr(b) for b in kept}, **{b: chr(256 + i) for i, b in enumerate(others)}}


def _pre_tokenizer(pre: str, vocab: dict) -> pre_tokenizers.PreTokenizer:
    """The regex splits, the byte alphabet, then every byte the vocabulary lacks on its own (it is dropped)."""
    steps = [pre_tokenizers.Split(Regex(rx), behavior="isolated") for rx in PRE_TOKENIZER_SPLITS[pre]]
    steps.append(pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False))
    missing = "".join(ch for ch in byte_to_unicode().values() if ch not in vocab)
    if missing:
        steps.append(pre_tokenizers.Split(Regex("[" + "".join(f"\\x{{{ord(c):x}}}" for c in missing) + "]"),
                                          behavior="isolated"))
    return pre_tokenizers.Sequence(steps)


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
    tok.pre_tokenizer = _pre_tokenizer(pre, vocab)
    tok.decoder = decoders.ByteLevel()
    return _add_cut_tokens(tok, tokens, _token_types(info, len(tokens)), user_normalized=False)


# ---- llama: SentencePiece BPE -------------------------------------------------------------------------------------

def _spm_merges(tokens: list[str], types: list[int], scores: list[float]) -> list[tuple[str, str]]:
    """Every (left, right) whose concatenation is a mergeable piece, best-scored merged piece first."""
    mergeable = {t: i for i, (t, k) in enumerate(zip(tokens, types)) if k in (NORMAL, UNUSED)}
    found = []
    for t, i in mergeable.items():
        for cut in range(1, len(t)):
            left, right = t[:cut], t[cut:]
            if left in mergeable and right in mergeable:
                found.append((-scores[i], -len(left), mergeable[left], mergeable[right], left, right))
    found.sort()
    return [(left, right) for *_, left, right in found]


def _spm_normalizer(prefix: bool, remove_extra_spaces: bool) -> normalizers.Normalizer:
    """sentencepiece's remove_extra_whitespaces drops leading, repeated and trailing " " (an input of spaces only
    becomes empty, without the prefix). sentencepiece also drops a literal trailing "▁"; that is not done here:
    the normaliser also rewrites user-defined pieces before they are matched, and "▁▁" must stay "▁▁"."""
    steps = []
    if remove_extra_spaces:
        steps += [normalizers.Replace(Regex(r"\A +| +\z"), ""), normalizers.Replace(Regex(" {2,}"), " ")]
    if prefix:
        steps.append(normalizers.Prepend(" "))
    steps.append(normalizers.Replace(" ", SPM_SPACE))
    return normalizers.Sequence(steps)


def _spm_spelling(token: str, kind: int, prefix: bool) -> str:
    """User-defined pieces get their "▁" back unless they are matched in the raw text (with a space prefix)."""
    return token.replace(" ", SPM_SPACE) if kind == USER_DEFINED and not prefix else token


def spm_tokenizer(info: dict) -> Tokenizer:
    raw = _tokens(info)
    types = _token_types(info, len(raw))
    scores = _get(info, "scores", required=True)
    if len(scores) != len(raw):
        raise FormatError(f"GGUF vocabulary: {len(scores)} scores for {len(raw)} tokens")
    prefix = bool(_get(info, "add_space_prefix", True))
    squeeze = bool(_get(info, "remove_extra_whitespaces", False))
    if prefix and squeeze and USER_DEFINED in types:
        raise Unsupported("GGUF vocabulary: add_space_prefix with remove_extra_whitespaces and user-defined pieces "
                          "(llama.cpp ignores remove_extra_whitespaces, sentencepiece matches the pieces after it)")
    tokens = [_spm_spelling(t, k, prefix) for t, k in zip(raw, types)]
    vocab = {t: i for i, t in enumerate(tokens)}
    if len(vocab) != len(tokens):   # distinct in the file, equal once user-defined pieces are respelled
        raise FormatError("GGUF vocabulary: duplicate tokens")
    unk = _get(info, "unknown_token_id")
    unk_token = tokens[unk] if _is_int(unk) and 0 <= unk < len(tokens) else None
    tok = Tokenizer(BPE(vocab, _spm_merges(tokens, types, scores), unk_token=unk_token, fuse_unk=True,
                        byte_fallback=BYTE in types))
    tok.normalizer = _spm_normalizer(prefix, squeeze)
    steps = [decoders.Replace(SPM_SPACE, " "), decoders.ByteFallback(), decoders.Fuse()]
    tok.decoder = decoders.Sequence(steps + ([decoders.Strip(" ", 1, 0)] if prefix else []))
    return _add_cut_tokens(tok, tokens, types, user_normalized=not prefix)


def tokenizer_from_gguf_vocab(info: dict) -> Tokenizer:
    """`info` is GGUFFile.tokenizer_info (the tokenizer.* keys without the prefix)."""
    model = _get(info, "model", required=True)
    if model == "gpt2":
        return gpt2_tokenizer(info)
    if model == "llama":
        return spm_tokenizer(info)
    raise Unsupported(f"GGUF vocabulary: tokenizer model {model!r} is not supported (supported: 'gpt2', 'llama')")
