"""Bounded fuzzing of the GGUF reader (hypothesis): mutate the header, counts, metadata value types, string and
array lengths, tensor infos (n_dims, ne, ggml type, offset) and the alignment of a small valid file, flip bytes,
cut it short. Each case must either load or raise FormatError; a loaded file's tensors each dequantize or raise
FormatError / Unsupported (a valid file may hold a type impnb cannot dequantize), its vocabulary builds a
Tokenizer or raises one of those two. Never another exception, never a hang (SIGALRM per case), never an
allocation beyond a small multiple of the file size (tracemalloc peak), whatever the header claims.
The number of cases run is printed at the end of the module.
"""
from __future__ import annotations

import os
import signal
import struct
import time
import tracemalloc
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from impnb import FormatError, Unsupported
from impnb.loaders.gguf import read_gguf
from impnb.tokenizer import Tokenizer

from .gguf_helpers import pack_k_block

EXAMPLES = int(os.environ.get("IMPNB_FUZZ_EXAMPLES", 250))  # per strategy; more on demand
SECONDS_PER_CASE = 5
CASES = {"run": 0, "loaded": 0, "rejected": 0, "tensors": 0, "tensor rejected": 0, "tokenizers": 0}
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.function_scoped_fixture])
NASTY = [0, 1, 2, 3, 4, 5, 8, 9, 13, 31, 32, 33, 255, 2**16, 2**31 - 1, 2**31, 2**32 - 1, 2**40, 2**62,
         2**63 - 1, 2**63, 2**64 - 1]


class _Layout:
    """Builds a GGUF byte string and remembers where each field sits: name -> (offset, width)."""

    def __init__(self):
        self.out, self.fields = bytearray(), {}

    def put(self, name: str, raw: bytes):
        self.fields[name] = (len(self.out), len(raw))
        self.out += raw

    def string(self, name: str, s: str):
        self.put(f"{name}.len", struct.pack("<Q", len(s.encode())))
        self.out += s.encode()


def _base() -> tuple[bytes, dict]:
    rng = np.random.default_rng(7)
    lay = _Layout()
    lay.out += b"GGUF"
    kvs = [("general.architecture", 8, "llama"), ("llama.attention.head_count", 4, 2),
           ("llama.attention.head_count_kv", 4, 1), ("general.alignment", 4, 32),
           ("tokenizer.ggml.model", 8, "gpt2"), ("tokenizer.ggml.pre", 8, "gpt2"),
           ("tokenizer.ggml.tokens", 9, ["a", "b", "ab", "<s>", "</s>"], 8), ("tokenizer.ggml.merges", 9, ["a b"], 8),
           ("tokenizer.ggml.token_type", 9, [1, 1, 1, 3, 3], 5), ("tokenizer.ggml.bos_token_id", 4, 3),
           ("tokenizer.ggml.eos_token_id", 4, 4), ("tokenizer.ggml.add_bos_token", 7, True),
           ("llama.rope.freq_base", 6, 10000.0)]
    q8 = struct.pack("<e", 0.01) + bytes(range(32))
    tensors = [("blk.0.attn_q.weight", (8, 4), 0, rng.standard_normal(32).astype("<f4").tobytes()),
               ("blk.0.attn_k.weight", (32, 2), 8, q8 * 2),
               ("token_embd.weight", (256, 1), 12, pack_k_block(rng, "Q4_K")[0]),
               ("output_norm.weight", (8,), 1, np.ones(8, "<f2").tobytes())]
    lay.put("version", struct.pack("<I", 3))
    lay.put("n_tensors", struct.pack("<Q", len(tensors)))
    lay.put("n_kv", struct.pack("<Q", len(kvs)))
    for i, (key, vtype, value, *elem) in enumerate(kvs):
        lay.string(f"kv{i}.key", key)
        lay.put(f"kv{i}.type", struct.pack("<I", vtype))
        if vtype == 9:
            lay.put(f"kv{i}.elem_type", struct.pack("<I", elem[0]))
            lay.put(f"kv{i}.count", struct.pack("<Q", len(value)))
            for j, v in enumerate(value):
                if elem[0] == 8:
                    lay.string(f"kv{i}.item{j}", v)
                else:
                    lay.put(f"kv{i}.item{j}", struct.pack("<i", v))
        elif vtype == 8:
            lay.string(f"kv{i}.value", value)
        else:
            lay.put(f"kv{i}.value", struct.pack({4: "<I", 6: "<f", 7: "<?"}[vtype], value))
    offset = 0
    for t, (name, ne, gtype, data) in enumerate(tensors):
        lay.string(f"t{t}.name", name)
        lay.put(f"t{t}.n_dims", struct.pack("<I", len(ne)))
        for d, n in enumerate(ne):
            lay.put(f"t{t}.ne{d}", struct.pack("<Q", n))
        lay.put(f"t{t}.type", struct.pack("<I", gtype))
        lay.put(f"t{t}.offset", struct.pack("<Q", offset))
        offset += -(-len(data) // 32) * 32
    lay.out += b"\0" * (-len(lay.out) % 32)
    for _, _, _, data in tensors:
        lay.out += data + b"\0" * (-len(data) % 32)
    return bytes(lay.out), lay.fields


BASE, FIELDS = _base()


def _alarm(signum, frame):
    raise TimeoutError(f"a GGUF case ran past {SECONDS_PER_CASE} s")


def check(directory, content: bytes) -> None:
    path = directory / "case.gguf"
    path.write_bytes(content)
    CASES["run"] += 1
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(SECONDS_PER_CASE)
    tracemalloc.start()
    start = time.perf_counter()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _load_everything(path)
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    assert time.perf_counter() - start < SECONDS_PER_CASE
    # float32 output is at most 32 / 4.5 (Q4) ... 32 / 1.6 (TQ1) times the stored bits: 64x bounds every type
    assert peak <= (1 << 20) + 64 * len(content), f"peak {peak} bytes for a {len(content)}-byte file"


def _load_everything(path) -> None:
    try:
        gf = read_gguf(path)
    except FormatError as exc:
        assert str(path) in str(exc)
        CASES["rejected"] += 1
        return
    CASES["loaded"] += 1
    for name in gf.tensors:
        CASES["tensors"] += 1
        try:
            value = gf.tensors[name]
            assert value.dtype == np.float32 and value.shape == gf.tensors.shape(name)
        except (FormatError, Unsupported):
            CASES["tensor rejected"] += 1
    try:
        tok = Tokenizer.from_gguf_info(gf.tokenizer_info, gf.architecture, source=str(path))
        tok.decode(tok.encode("ab ba <s>"))
        CASES["tokenizers"] += 1
    except (FormatError, Unsupported):
        pass


# ------------------------------------------------------------------------------------------- strategies

FIELD_NAMES = sorted(FIELDS)


@st.composite
def field_mutation(draw) -> bytes:
    """Overwrite up to three recorded fields (counts, lengths, types, n_dims, ne, offsets) with hostile values."""
    out = bytearray(BASE)
    for _ in range(draw(st.integers(1, 3))):
        at, width = FIELDS[draw(st.sampled_from(FIELD_NAMES))]
        value = draw(st.sampled_from(NASTY) | st.integers(0, 2 ** (8 * width) - 1))
        out[at:at + width] = (value % 2 ** (8 * width)).to_bytes(width, "little")
    return bytes(out)


@st.composite
def byte_mutation(draw) -> bytes:
    """Flip or overwrite bytes, mostly inside the header, then maybe cut the file."""
    out = bytearray(BASE)
    header_end = max(at + w for at, w in FIELDS.values())
    for _ in range(draw(st.integers(1, 6))):
        at = draw(st.integers(0, header_end - 1) | st.integers(0, len(out) - 1))
        out[at] = draw(st.integers(0, 255))
    if draw(st.booleans()):
        out = out[:draw(st.integers(0, len(out)))]
    return bytes(out)


@st.composite
def splice(draw) -> bytes:
    """Insert or delete a run of bytes (shifts every later field), or append junk."""
    out = bytearray(BASE)
    at = draw(st.integers(0, len(out)))
    if draw(st.booleans()):
        del out[at:at + draw(st.integers(1, 16))]
    else:
        out[at:at] = draw(st.binary(min_size=1, max_size=16))
    return bytes(out)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz_gguf")


def test_base_file_is_valid(workdir):
    gf = read_gguf(_write(workdir, BASE))
    assert len(gf.tensors) == 4 and gf.metadata["tokenizer.ggml.tokens"][2] == "ab"
    assert Tokenizer.from_gguf_info(gf.tokenizer_info, "llama").encode("ab") == [3, 2]   # BOS, then "ab"


def _write(directory, content):
    path = directory / "base.gguf"
    path.write_bytes(content)
    return path


@SETTINGS
@given(content=field_mutation())
def test_fuzz_fields(workdir, content):
    check(workdir, content)


@SETTINGS
@given(content=byte_mutation())
def test_fuzz_bytes(workdir, content):
    check(workdir, content)


@SETTINGS
@given(content=splice())
def test_fuzz_splice(workdir, content):
    check(workdir, content)



def test_fuzz_summary(capsys):
    """Runs after the three properties (file order): prints the case count; each case ended one of two ways."""
    if CASES["run"] == 0:
        pytest.skip("the fuzz properties were deselected")
    with capsys.disabled():
        print(f"\nGGUF fuzz: {CASES['run']} cases: {CASES['loaded']} loaded, {CASES['rejected']} rejected with "
              f"FormatError; {CASES['tensors']} tensors materialized ({CASES['tensor rejected']} rejected); "
              f"{CASES['tokenizers']} tokenizers built")
    assert CASES["run"] == CASES["loaded"] + CASES["rejected"]


# ---- vocabularies: the tokenizer.* metadata of a loaded file, mutated ----------------------------------------

VOCAB_CASES = {"run": 0, "built": 0}
TOKEN_TEXT = (st.lists(st.sampled_from(list("ab ▁<>/sĠé\n") + ["<0x41>", "<s>"]), max_size=5).map("".join)
              | st.text(max_size=4))
ANY_VALUE = st.one_of(st.none(), st.booleans(), st.integers(-3, 2**33), st.floats(allow_nan=True), TOKEN_TEXT,
                      st.lists(st.integers(-2, 8), max_size=5))


@st.composite
def vocabulary(draw) -> tuple[dict, str]:
    """A mostly consistent vocabulary (merges of two tokens whose concatenation is a token), then maybe broken."""
    tokens = draw(st.lists(TOKEN_TEXT.filter(bool), min_size=0, max_size=10, unique=draw(st.integers(0, 5)) > 0))
    merges = []
    for _ in range(draw(st.integers(0, 5)) if tokens else 0):
        left, right = draw(st.sampled_from(tokens)), draw(st.sampled_from(tokens))
        merges.append(f"{left} {right}")
        if left + right not in tokens:
            tokens.append(left + right)
    n = len(tokens)
    info = {"ggml.model": draw(st.sampled_from(["gpt2"] * 4 + ["llama"] * 4 + ["bert"])),
            "ggml.pre": draw(st.sampled_from(["gpt2", "smollm", "llama-bpe", "qwen2", "nope"])),
            "ggml.tokens": tokens,
            "ggml.token_type": draw(st.lists(st.sampled_from([1, 1, 1, 3, 4, 6, -1, 9]), min_size=n, max_size=n)),
            "ggml.scores": draw(st.lists(st.floats(-10, 10), min_size=n, max_size=n)),
            "ggml.merges": merges,
            "ggml.bos_token_id": draw(st.integers(-1, n + 1)), "ggml.eos_token_id": draw(st.integers(-1, n + 1)),
            "ggml.unknown_token_id": draw(st.integers(-1, n + 1)), "ggml.add_space_prefix": draw(st.booleans())}
    for key in draw(st.lists(st.sampled_from(sorted(info)), max_size=1)):   # then maybe break a field
        info[key] = draw(ANY_VALUE)
    return info, draw(st.sampled_from(["llama", "gemma3", "qwen2"]))


@SETTINGS
@given(case=vocabulary(), text=TOKEN_TEXT)
def test_fuzz_vocabulary(case, text):
    info, arch = case
    VOCAB_CASES["run"] += 1
    try:
        tok = Tokenizer.from_gguf_info(info, arch, source="fuzz")
    except (FormatError, Unsupported):
        return
    VOCAB_CASES["built"] += 1
    ids = tok.encode(text)
    assert all(0 <= i < tok.vocab_size for i in ids)
    tok.decode(ids)


def test_fuzz_vocabulary_summary(capsys):
    if VOCAB_CASES["run"] == 0:
        pytest.skip("the vocabulary property was deselected")
    with capsys.disabled():
        print(f"\nGGUF vocabulary fuzz: {VOCAB_CASES['run']} cases, {VOCAB_CASES['built']} tokenizers built, "
              f"the rest FormatError / Unsupported")
