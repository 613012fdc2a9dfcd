"""The adversarial corpus of tools/hostile_inputs.py: families of hostile and broken inputs, each case a function
that writes its input under a directory and returns the path to load, with what a correct loader does with it:

    expect "refuse"  broken: loading must end in FormatError / Unsupported (a load is a wrong accept)
    expect "load"    valid: it must load and generate finite logits (a refusal is a valid file refused)
    expect "either"  well-formed but odd (a changed RoPE base, a stray tensor): either is right, but a load must
                     give finite logits

Families: gguf-built, gguf-real (a real model file's metadata and tensor infos overwritten in place), safetensors,
quant-config (compressed-tensors / ModelOpt NVFP4), model-config (config.json of llama / gemma3 / qwen3-moe),
tokenizer, chat-template.
"""
from __future__ import annotations

import json
import random
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

import hostile_bases as hb

NAN, INF = float("nan"), float("inf")


@dataclass
class Case:
    family: str
    name: str
    expect: str                       # "refuse" | "load" | "either"
    build: Callable[[Path], Path]     # writes the input under a directory, returns what to load


# ---------------------------------------------------------------------------------------------- GGUF, built
def _gguf_case(name, expect, change=lambda kvs, ts: None, **writer) -> Case:
    def build(d: Path) -> Path:
        kvs, ts = hb.gguf_base()
        change(kvs, ts)
        path = d / "model.gguf"
        path.write_bytes(hb.gguf_bytes(kvs, ts, **writer))
        return path
    return Case("gguf-built", name, expect, build)


def _set_kv(key, vtype, value, elem=None):
    def change(kvs, ts):
        kvs[:] = [kv for kv in kvs if kv[0] != key] + [(key, vtype, value, elem)]
    return change


def _drop_kv(key):
    return lambda kvs, ts: kvs.__setitem__(slice(None), [kv for kv in kvs if kv[0] != key])


def _tensor(index, **fields):
    def change(kvs, ts):
        name, ne, gtype, data, offset = ts[index]
        ts[index] = (fields.get("name", name), fields.get("ne", ne), fields.get("gtype", gtype),
                     fields.get("data", data), fields.get("offset", offset))
    return change


NASTY_INTS = [(4, 0), (5, -1), (4, 2**32 - 1), (10, 2**63), (11, -(2**40)), (6, NAN), (6, INF), (8, "12"),
              (7, True)]
GGUF_INT_KEYS = ["llama.block_count", "llama.embedding_length", "llama.attention.head_count",
                 "llama.attention.head_count_kv", "llama.context_length", "llama.feed_forward_length",
                 "llama.vocab_size", "tokenizer.ggml.eos_token_id", "tokenizer.ggml.bos_token_id"]
GGUF_FLOAT_KEYS = ["llama.rope.freq_base", "llama.attention.layer_norm_rms_epsilon"]


def gguf_built() -> list[Case]:
    cases = [_gguf_case("valid", "load")]
    for key in GGUF_INT_KEYS:
        for vtype, value in NASTY_INTS:
            zero_ok = key in ("llama.feed_forward_length", "tokenizer.ggml.eos_token_id",
                              "tokenizer.ggml.bos_token_id")   # 0: width from the tensors; token id 0
            expect = "either" if value == 0 and vtype == 4 and zero_ok else "refuse"
            cases.append(_gguf_case(f"{key}={value!r}", expect, _set_kv(key, vtype, value)))
    for key in GGUF_FLOAT_KEYS:
        for value in (0.0, -1.0, NAN, INF, -INF, 1e-45):
            cases.append(_gguf_case(f"{key}={value!r}", "refuse" if value != 1e-45 or "freq" in key else "either",
                                    _set_kv(key, 6, value)))
        cases.append(_gguf_case(f"{key}=string", "refuse", _set_kv(key, 8, "1e-5")))
    cases += [
        _gguf_case("head_count per-layer array of 3 for 2 layers", "refuse",
                   _set_kv("llama.attention.head_count", 9, [4, 4, 4], 4)),
        _gguf_case("head_count_kv 3 of 4 heads", "refuse", _set_kv("llama.attention.head_count_kv", 4, 3)),
        _gguf_case("key_length 7 (odd head)", "refuse", _set_kv("llama.attention.key_length", 4, 7)),
        _gguf_case("rope.dimension_count 4", "refuse", _set_kv("llama.rope.dimension_count", 4, 4)),
        _gguf_case("rope scaling linear factor 0", "refuse", lambda k, t: (
            _set_kv("llama.rope.scaling.type", 8, "linear")(k, t), _set_kv("llama.rope.scaling.factor", 6, 0.0)(k, t))),
        _gguf_case("rope scaling yarn original 0", "refuse", lambda k, t: (
            _set_kv("llama.rope.scaling.type", 8, "yarn")(k, t), _set_kv("llama.rope.scaling.factor", 6, 4.0)(k, t),
            _set_kv("llama.rope.scaling.original_context_length", 4, 0)(k, t))),
        _gguf_case("rope scaling type longrope", "refuse", _set_kv("llama.rope.scaling.type", 8, "longrope")),
        _gguf_case("rope base 500000", "either", _set_kv("llama.rope.freq_base", 6, 500000.0)),
        _gguf_case("context 64", "either", _set_kv("llama.context_length", 4, 64)),
        _gguf_case("context 1 (logits of one token)", "load", _set_kv("llama.context_length", 4, 1)),
        _gguf_case("architecture unknown", "refuse", _set_kv("general.architecture", 8, "mamba9")),
        _gguf_case("architecture empty", "refuse", _set_kv("general.architecture", 8, "")),
        _gguf_case("architecture an integer", "refuse", _set_kv("general.architecture", 4, 7)),
        _gguf_case("no block_count", "refuse", _drop_kv("llama.block_count")),
        _gguf_case("no embedding_length", "refuse", _drop_kv("llama.embedding_length")),
        _gguf_case("no head_count", "refuse", _drop_kv("llama.attention.head_count")),
        _gguf_case("no architecture", "refuse", _drop_kv("general.architecture")),
        _gguf_case("no vocabulary (token ids only)", "load", lambda k, t: [
            _drop_kv(key)(k, t) for key in ("tokenizer.ggml.tokens", "tokenizer.ggml.merges", "tokenizer.ggml.model",
                                             "tokenizer.ggml.token_type", "tokenizer.ggml.pre")]),
        _gguf_case("tokens not strings", "refuse", _set_kv("tokenizer.ggml.tokens", 9, list(range(64)), 4)),
        _gguf_case("token_type length 3", "refuse", _set_kv("tokenizer.ggml.token_type", 9, [1, 1, 1], 5)),
        _gguf_case("merge of unknown tokens", "refuse", _set_kv("tokenizer.ggml.merges", 9, ["zz qq"], 8)),
        _gguf_case("pre-tokenizer unknown", "refuse", _set_kv("tokenizer.ggml.pre", 8, "no-such-pre")),
        _gguf_case("tokenizer model bert", "refuse", _set_kv("tokenizer.ggml.model", 8, "bert")),
        _gguf_case("add_bos_token a string", "refuse", _set_kv("tokenizer.ggml.add_bos_token", 8, "false")),
        _gguf_case("spm scores NaN", "refuse", lambda k, t: (
            _set_kv("tokenizer.ggml.model", 8, "llama")(k, t),
            _set_kv("tokenizer.ggml.scores", 9, [NAN] * hb.V, 6)(k, t))),
        _gguf_case("spm pieces of 300 characters", "refuse", lambda k, t: (
            _set_kv("tokenizer.ggml.model", 8, "llama")(k, t),
            _set_kv("tokenizer.ggml.tokens", 9, ["p" * 300 + str(i) for i in range(hb.V)], 8)(k, t),
            _set_kv("tokenizer.ggml.scores", 9, [0.0] * hb.V, 6)(k, t))),
        _gguf_case("missing tensor attn_q of layer 1", "refuse", lambda k, t: t.pop(11)),
        _gguf_case("extra layer 2 tensor", "refuse", lambda k, t: t.append(
            ("blk.2.attn_norm.weight", (hb.H,), 0, np.ones(hb.H, "<f4").tobytes(), None))),
        _gguf_case("attn_q twice as wide", "refuse", _tensor(3, ne=(hb.H, 2 * hb.HEADS * hb.HEAD_DIM),
                                                             data=np.zeros(2 * hb.H * hb.H, "<f4").tobytes())),
        _gguf_case("embedding rows != vocab", "refuse", _tensor(0, ne=(hb.H, hb.V - 1),
                                                                data=np.zeros(hb.H * (hb.V - 1), "<f4").tobytes())),
        _gguf_case("NaN in a weight", "refuse", _tensor(3, data=np.full(hb.H * hb.H, NAN, "<f4").tobytes())),
        _gguf_case("inf in the embedding", "refuse", _tensor(0, data=np.full(hb.H * hb.V, INF, "<f4").tobytes())),
        _gguf_case("integer tensor type", "refuse", _tensor(1, gtype=26)),
        _gguf_case("unknown tensor type", "refuse", _tensor(1, gtype=99)),
        _gguf_case("Q8_0 row not a block multiple", "refuse", _tensor(1, gtype=8, ne=(hb.H - 1,))),
        _gguf_case("overlapping offsets", "refuse", _tensor(4, offset=0)),
        _gguf_case("misaligned offset", "refuse", _tensor(4, offset=3)),
        _gguf_case("offset past the end", "refuse", _tensor(4, offset=2**40)),
        _gguf_case("zero-size dim next to a huge one", "refuse", _tensor(1, ne=(0, 2**62), data=b"")),
        _gguf_case("five dimensions", "refuse", _tensor(1, ne=(hb.H, 1, 1, 1, 1))),
        _gguf_case("duplicate tensor name", "refuse", _tensor(5, name="blk.0.attn_norm.weight")),
        _gguf_case("version 1", "refuse", version=1), _gguf_case("version 4", "refuse", version=4),
        _gguf_case("alignment 3", "refuse", _set_kv("general.alignment", 4, 3)),
        _gguf_case("alignment 0", "refuse", _set_kv("general.alignment", 4, 0)),
        _gguf_case("n_kv claims 2**40", "refuse", n_kv=2**40),
        _gguf_case("n_tensors claims 2**40", "refuse", n_tensors=2**40),
    ]
    for template in TEMPLATES[:8]:
        cases.append(_gguf_case(f"chat template: {template[:40]}", "either",
                                _set_kv("tokenizer.chat_template", 8, template)))
    for cut in (3, 10, 30, 200, 2000, 4000, -100, -1):
        cases.append(Case("gguf-built", f"truncated at {cut}", "refuse",
                          lambda d, cut=cut: _truncated(_gguf_case("v", "load").build(d), cut)))
    rng = random.Random(5)
    for i in range(40):
        spots = [rng.randrange(24, 2200) for _ in range(rng.randint(1, 4))]
        cases.append(Case("gguf-built", f"header bytes flipped at {spots}", "either",
                          lambda d, spots=spots, seed=i: _flipped(_gguf_case("v", "load").build(d), spots, seed)))
    return cases


def _truncated(path: Path, cut: int) -> Path:
    raw = path.read_bytes()
    path.write_bytes(raw[:cut] if cut > 0 else raw[:len(raw) + cut])
    return path


def _flipped(path: Path, spots, seed) -> Path:
    raw = bytearray(path.read_bytes())
    rng = random.Random(seed)
    for s in spots:
        raw[s] = rng.choice([0x00, 0xFF, 0x7F, 0x80, raw[s] ^ (1 << rng.randrange(8))])
    path.write_bytes(bytes(raw))
    return path


# ---------------------------------------------------------------------------------------------- GGUF, real file
def gguf_real(source: Path | None) -> list[Case]:
    """Overwrite values of a real model file in place (same width, so the layout stays valid)."""
    if source is None:
        return []
    raw = source.read_bytes()
    values, tensors = hb.walk_gguf(raw)
    at = values["general.architecture"][0]
    arch = raw[at + 8:at + 8 + struct.unpack_from("<Q", raw, at)[0]].decode()
    cases = [Case("gguf-real", "unchanged", "load", lambda d: _patched(source, d, []))]

    def put(name, key, packed: bytes, expect="refuse"):
        if key in values and values[key][2] == len(packed):
            cases.append(Case("gguf-real", name, expect, lambda d: _patched(source, d, [(values[key][0], packed)])))

    for suffix in ("block_count", "embedding_length", "attention.head_count", "attention.head_count_kv",
                   "context_length", "feed_forward_length", "vocab_size"):
        for value in (0, 7, 2**31 - 1, 2**32 - 1):
            put(f"{suffix}={value}", f"{arch}.{suffix}", struct.pack("<I", value),
                "either" if (suffix, value) in (("feed_forward_length", 0), ("context_length", 7)) else "refuse")
    for suffix in ("rope.freq_base", "attention.layer_norm_rms_epsilon"):
        for value in (0.0, -1.0, NAN, INF):
            put(f"{suffix}={value}", f"{arch}.{suffix}", struct.pack("<f", value))
    for key in ("tokenizer.ggml.eos_token_id", "tokenizer.ggml.bos_token_id"):
        put(f"{key}=2**31", key, struct.pack("<I", 2**31), "either")  # refused as a type, or ignored
    for key in ("tokenizer.ggml.tokens", "tokenizer.ggml.merges", "tokenizer.ggml.token_type"):
        if key in values:
            at = values[key][0] + 4
            for count in (0, 5, 2**40):
                cases.append(Case("gguf-real", f"{key} count {count}", "refuse",
                                  lambda d, at=at, c=count: _patched(source, d, [(at, struct.pack("<Q", c))])))
    if "tokenizer.chat_template" in values:
        at, _, length = values["tokenizer.chat_template"]
        for template in TEMPLATES[:12]:
            body = template.encode()[:length - 8].ljust(length - 8, b" ")
            cases.append(Case("gguf-real", f"template {template[:30]}", "either",
                              lambda d, at=at, b=body: _patched(source, d, [(at + 8, b)])))
    for name, ne_at, type_at, offset_at in tensors[1:4]:
        cases += [Case("gguf-real", f"{name} ne[0] doubled", "refuse", lambda d, a=ne_at[0]: _patched(
                      source, d, [(a, struct.pack("<Q", 2 * struct.unpack_from("<Q", raw, a)[0]))])),
                  Case("gguf-real", f"{name} type I32", "refuse",
                       lambda d, a=type_at: _patched(source, d, [(a, struct.pack("<I", 26))])),
                  Case("gguf-real", f"{name} offset 0", "refuse",
                       lambda d, a=offset_at: _patched(source, d, [(a, struct.pack("<Q", 0))]))]
    rng = random.Random(9)
    header_end = tensors[-1][3] + 8
    for i in range(20):
        spots = sorted(rng.randrange(24, header_end) for _ in range(3))
        cases.append(Case("gguf-real", f"bytes flipped at {spots}", "either", lambda d, s=spots, i=i: _patched(
            source, d, [(p, bytes([random.Random(i + p).randrange(256)])) for p in s])))
    return cases


def _patched(source: Path, d: Path, patches) -> Path:
    path = d / source.name
    raw = bytearray(source.read_bytes())
    for at, data in patches:
        raw[at:at + len(data)] = data
    path.write_bytes(bytes(raw))
    return path


# ---------------------------------------------------------------------------------------------- templates
TEMPLATES = [
    "{% macro f(n) %}{% if n %}{{ f(n-1) }}{{ f(n-1) }}{% endif %}{% endmacro %}{{ f(60) }}",
    "{% macro f(n) %}{% if n %}{% set s = f(n-1) %}{{ s }}{{ s }}{% else %}x{% endif %}{% endmacro %}{{ f(64) }}",
    "{{ lipsum(10**6) }}", "{{ 'x'|center(10**10) }}", "{{ 'x'.ljust(10**10) }}", "{{ ('a\\n'*10**5)|indent(4000) }}",
    "{{ '%1000000000d'|format(1) }}", "{{ '{:>1000000000}'.format(1) }}",
    "{% for a in range(10**9) %}{% for b in range(10**9) %}{% endfor %}{% endfor %}",
    "{% set s = 'a'*10**6 %}{% for a in s %}{% for b in s %}{% endfor %}{% endfor %}",
    "{% set ns = namespace(s='a') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}",
    "{% set ns = namespace(s=[1]) %}{% for i in range(64) %}{% set ns.s = ns.s + ns.s %}{% endfor %}",
    "{{ (['x'*10**6]*1000)|join }}", "{{ ''.join(['x'*10**6]*1000) }}", "{{ ('a'*10**6)|replace('a', 'b'*1000) }}",
    "{{ ([[1]*1000]*100000)|sum(start=[]) }}", "{{ (10**1000)**1000 }}", "{{ 2 ** 10**9 }}",
    "{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}", "{{ [1]|batch(10**10, 0)|list }}",
    "{{ [1]|slice(10**10)|list }}", "{{ messages|tojson(indent=10**9) }}", "{{ strftime_now('%1000000000Y') }}",
    "{{ (1).to_bytes(10**10, 'big') }}", "{% for i in range(10**5) %}{{ 'x'*1000 }}{% endfor %}",
    "{{ ('\\t'*10**6).expandtabs(1000) }}", "{{ '1'.zfill(10**10) }}",
    "{% set d = dict.fromkeys(range(10**6)) %}{% for k in d %}{% for j in d %}{% endfor %}{% endfor %}",
    "{{ range(10**6)|map('string')|unique|list|length }}{% for x in range(10**6) %}{% endfor %}",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}", "{{ messages.append(1) }}", "{{ cycler.__init__.__globals__ }}",
    "{% for i in range(10**6) %}{{ (i|string)|int }}{% endfor %}", "{{ raise_exception('no') }}",
    "{{ (0|truncate(0)) }}", "{{ 1/0 }}", "{% for %}", "{{ x.y.z }}", "{% include 'other.jinja' %}",
    "{{ (10**4000)|string }}", "{% set x = 'a' %}{% for i in range(10**7) %}{% set x = x %}{% endfor %}",
    "{{ 'x' * (2**62) }}", "{{ [0] * (2**62) }}", "{{ ('%s' * 2**20) % ((1,) * 2**20) }}",
]
VALID_TEMPLATES = [hb.CHATML, "{% for m in messages %}{{ m.content }}{% endfor %}",
                   "{{ bos_token }}{% for m in messages %}[{{ m.role }}] {{ m.content|trim }}\n{% endfor %}"]


def chat_templates() -> list[Case]:
    cases = [Case("chat-template", f"hostile: {t[:50]}", "either",
                  lambda d, t=t: hb.write_hf(d / "m", template=t)) for t in TEMPLATES]
    cases += [Case("chat-template", f"valid: {t[:50]}", "load", lambda d, t=t: hb.write_hf(d / "m", template=t))
              for t in VALID_TEMPLATES]
    rng = random.Random(3)
    pieces = ["{% for i in range(N) %}", "{% endfor %}", "{{ 'ab' * N }}", "{{ messages|tojson }}", "{{ 'a'|center(N) }}",
              "{% set ns.s = ns.s ~ ns.s %}", "{{ ns.s|length }}", "{{ lipsum(N) }}", "{{ (N ** N)|string|length }}"]
    for i in range(30):
        chosen = [rng.choice(pieces).replace("N", rng.choice(["3", "64", "4096", "10**6", "10**9"]))
                  for _ in range(rng.randint(2, 6))]
        opened = sum(p.startswith("{% for") for p in chosen) - sum(p == "{% endfor %}" for p in chosen)
        body = "{% set ns = namespace(s='ab') %}" + "".join(chosen) + "{% endfor %}" * max(opened, 0)
        cases.append(Case("chat-template", f"composed {i}: {body[32:80]}", "either",
                          lambda d, b=body: hb.write_hf(d / "m", template=b)))
    cases.append(Case("chat-template", "template of 300000 characters", "either",
                      lambda d: hb.write_hf(d / "m", template="x" * 300_000)))
    cases.append(Case("chat-template", "chat_template.json nested 100000 deep", "refuse", lambda d: _with_file(
        hb.write_hf(d / "m", template=None), "chat_template.json", '{"a": ' + "[" * 100000 + "]" * 100000 + "}")))
    return cases


def _with_file(directory: Path, name: str, text: str | bytes) -> Path:
    (directory / name).write_bytes(text if isinstance(text, bytes) else text.encode("utf-8", "surrogatepass"))
    return directory
