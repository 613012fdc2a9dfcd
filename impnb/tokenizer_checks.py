"""Tokenizer descriptions checked before they reach the Rust ``tokenizers`` library.

    check_tokenizer_json(obj, path)   tokenizer.json: a known model type, no BPE dropout (tokenization must be
                                      deterministic), vocabulary / merges / added tokens within size limits, every
                                      regex (pre-tokenizer Split, normalizer / decoder Replace) free of the nested
                                      repetition that makes Oniguruma give up mid-match (the library then panics)
    check_gguf_vocabulary(info, src)  a GGUF vocabulary (tokenizer.ggml.*): list types and lengths agree, scores
                                      finite, and the merge-recovery work of a SentencePiece vocabulary bounded

Every violation is a FormatError naming the file and the field.
"""
from __future__ import annotations

import math

from .config_validate import MAX_VOCAB
from .errors import FormatError

MAX_MERGES = 1 << 22               # Gemma-3's tokenizer.json has about 514k merges
MAX_ADDED_TOKENS = 1 << 18
MAX_TOKEN_CHARS = 1024             # longest real tokens: about 100 characters (byte-level spellings)
MAX_SPM_TOKEN_CHARS = 256          # SentencePiece pieces: Gemma's longest is 31 characters
MAX_SPM_CUT_WORK = 1 << 25         # sum of len(piece)^2 over the vocabulary (Gemma-3: 10.8 M): the merge recovery
MAX_REGEX_CHARS = 4096             # slices every piece at every position, so this bounds its work
MODEL_TYPES = ("BPE", "WordPiece", "WordLevel", "Unigram")


# ---------------------------------------------------------------------------------------------- tokenizer.json
def check_tokenizer_json(obj: dict, path) -> None:
    model = obj.get("model")
    if not isinstance(model, dict) or model.get("type", "BPE") not in MODEL_TYPES:
        kind = model.get("type") if isinstance(model, dict) else type(model).__name__
        raise FormatError(f"{path}: model.type {str(kind)[:40]!r} is not one of {', '.join(MODEL_TYPES)}")
    dropout = model.get("dropout")
    if dropout not in (None, 0, 0.0):
        raise FormatError(f"{path}: model.dropout = {str(dropout)[:40]}: BPE dropout makes tokenization random; "
                          f"impnb needs deterministic token ids (set it to null)")
    _check_size(model.get("vocab"), MAX_VOCAB, path, "model.vocab")
    _check_size(model.get("merges"), MAX_MERGES, path, "model.merges")
    added = obj.get("added_tokens")
    _check_size(added, MAX_ADDED_TOKENS, path, "added_tokens")
    for i, token in enumerate(added or []):
        content = token.get("content") if isinstance(token, dict) else None
        if not isinstance(content, str) or not 0 < len(content) <= MAX_TOKEN_CHARS:
            raise FormatError(f"{path}: added_tokens[{i}].content must be a string of 1..{MAX_TOKEN_CHARS} "
                              f"characters")
    for key in ("normalizer", "pre_tokenizer", "post_processor", "decoder"):
        for where, pattern in _regexes(obj.get(key), key):
            check_oniguruma_pattern(pattern, path, where)


def _check_size(value, limit: int, path, name: str) -> None:
    if value is not None and (not isinstance(value, (list, dict)) or len(value) > limit):
        raise FormatError(f"{path}: {name} must be a list or object of at most {limit} entries")


def _regexes(node, where: str):
    """(location, pattern) of every {"Regex": pattern} below ``node`` (iterative: the depth is bounded already)."""
    stack = [(node, where)]
    while stack:
        value, here = stack.pop()
        if isinstance(value, dict):
            if set(value) == {"Regex"}:
                yield here, value["Regex"]
                continue
            stack.extend((v, f"{here}.{k}") for k, v in value.items())
        elif isinstance(value, list):
            stack.extend((v, f"{here}[{i}]") for i, v in enumerate(value))


def check_oniguruma_pattern(pattern, path, where: str) -> None:
    """Refuse a regex whose repeated group contains a repeat or an alternation (``(a|aa)+``, ``(\\w+\\s?)+``):
    Oniguruma backtracks through such a group exponentially, hits its retry limit and the tokenizers library
    panics. A group repeated at most once (``(...)?``) is fine. Backreferences are refused too."""
    if not isinstance(pattern, str) or len(pattern) > MAX_REGEX_CHARS:
        raise FormatError(f"{path}: {where} must be a regex string of at most {MAX_REGEX_CHARS} characters")
    frames = [[False]]   # per open group: [contains a repeat or an alternation]
    i, n, last_group = 0, len(pattern), None
    while i < n:
        ch = pattern[i]
        atom_group = None
        if ch == "\\":
            if i + 1 < n and (pattern[i + 1] in "123456789" or pattern[i + 1] == "k"):
                raise FormatError(f"{path}: {where}: backreferences are not accepted in {pattern[:80]!r}")
            i += 2
        elif ch == "[":
            i = _skip_class(pattern, i, path, where)
        elif ch == "(":
            frames.append([False])
            i += 1
        elif ch == ")":
            if len(frames) == 1:
                raise FormatError(f"{path}: {where}: unbalanced ')' in {pattern[:80]!r}")
            atom_group = frames.pop()
            i += 1
        elif ch == "|":
            frames[-1][0] = True
            i += 1
        elif ch in "*+?{":
            i, repeats = _quantifier(pattern, i)
            if repeats and last_group is not None and last_group[0]:
                raise FormatError(f"{path}: {where}: a repeated group that itself repeats or alternates can "
                                  f"backtrack exponentially: {pattern[:80]!r}")
            frames[-1][0] = frames[-1][0] or repeats or bool(last_group and last_group[0])
            last_group = None
            continue
        else:
            i += 1
        if atom_group is not None:
            frames[-1][0] = frames[-1][0] or atom_group[0]
        last_group = atom_group


def _skip_class(pattern: str, i: int, path, where: str) -> int:
    """Index after the character class starting at ``pattern[i] == '['`` (Oniguruma classes nest)."""
    depth, i = 0, i
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\":
            i += 2
            continue
        if ch == "[":
            depth += 1
        elif ch == "]" and depth:
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    raise FormatError(f"{path}: {where}: unterminated character class in {pattern[:80]!r}")


def _quantifier(pattern: str, i: int) -> tuple[int, bool]:
    """(index after the quantifier at i, whether it can repeat more than once)."""
    ch = pattern[i]
    if ch == "{":
        close = pattern.find("}", i)
        body = pattern[i + 1:close] if close > 0 else ""
        parts = body.split(",")
        if close < 0 or len(parts) > 2 or not all(p.strip().isdigit() or p.strip() == "" for p in parts):
            return i + 1, False   # a literal "{"
        hi = parts[-1].strip()
        i, repeats = close + 1, hi == "" or int(hi) > 1
    else:
        i, repeats = i + 1, ch in "*+"
    if i < len(pattern) and pattern[i] in "?+":   # lazy / possessive suffix
        i += 1
    return i, repeats


# ---------------------------------------------------------------------------------------------- GGUF vocabulary
def check_gguf_vocabulary(info: dict, source) -> None:
    """tokenizer.ggml.* before a tokenizer is built from it (see the module docstring)."""
    tokens = info.get("ggml.tokens")
    if not isinstance(tokens, list) or not 0 < len(tokens) <= MAX_VOCAB:
        raise FormatError(f"{source}: tokenizer.ggml.tokens must be a list of 1..{MAX_VOCAB} strings")
    spm = info.get("ggml.model") == "llama"
    limit = MAX_SPM_TOKEN_CHARS if spm else MAX_TOKEN_CHARS
    work = 0
    for i, t in enumerate(tokens):
        if not isinstance(t, str) or len(t) > limit:
            raise FormatError(f"{source}: tokenizer.ggml.tokens[{i}] must be a string of at most {limit} characters")
        work += len(t) * len(t)
    if spm and work > MAX_SPM_CUT_WORK:
        raise FormatError(f"{source}: tokenizer.ggml.tokens: the pieces are too long to recover SentencePiece merges "
                          f"from (sum of squared lengths {work} > {MAX_SPM_CUT_WORK})")
    for key in ("token_type", "scores"):
        values = info.get(f"ggml.{key}")
        if values is not None and (not isinstance(values, list) or len(values) != len(tokens)):
            raise FormatError(f"{source}: tokenizer.ggml.{key} must be a list of {len(tokens)} entries (one per "
                              f"token)")
    scores = info.get("ggml.scores")
    if scores is not None and not all(isinstance(s, (int, float)) and math.isfinite(s) for s in scores):
        raise FormatError(f"{source}: tokenizer.ggml.scores must be finite numbers (they order the merges)")
    merges = info.get("ggml.merges")
    if merges is not None and (not isinstance(merges, list) or len(merges) > MAX_MERGES
                               or not all(isinstance(m, str) and len(m) <= 2 * MAX_TOKEN_CHARS + 1 for m in merges)):
        raise FormatError(f"{source}: tokenizer.ggml.merges must be a list of at most {MAX_MERGES} strings")
