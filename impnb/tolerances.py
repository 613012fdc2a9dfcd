"""The one tolerance table: how close the CUDA path must be to the reference, per op and output dtype.

Every entry says why its number is what it is. Rules:
  * Exact            -- bit-identical (NaN matches NaN with the same bits); codecs, packing, masks, top-k ids.
  * AllClose         -- |fast - ref| <= atol + rtol * |ref| elementwise.
  * ScaledError      -- |fast - ref| <= bound * scale, where ``scale`` is an op-supplied magnitude per element
                        (e.g. |W| @ |x| for a GEMV: the accumulated magnitude that fp32 rounding errors scale with).
Structured outputs (tuples, NVFP4Tensor) are compared field by field with the same table.

Used by ``impnb.ops.call(..., backend="check")`` and by the tests; nothing else defines a tolerance.
"""
from __future__ import annotations

from dataclasses import dataclass, fields, is_dataclass
from typing import Callable

import numpy as np

from .errors import CrossCheckError


@dataclass(frozen=True)
class Exact:
    why: str

    def __str__(self):
        return "Exact"


@dataclass(frozen=True)
class AllClose:
    atol: float
    rtol: float
    why: str

    def __str__(self):
        return f"AllClose(atol={self.atol:g}, rtol={self.rtol:g})"


@dataclass(frozen=True)
class ScaledError:
    bound: float
    scale: Callable  # scale(args, kwargs) -> array broadcastable to the output
    why: str

    def __str__(self):
        return f"ScaledError(bound={self.bound:g})"


# ---- scale functions of ScaledError rules ----------------------------------------------------------------------
FP32_UNIT_ROUNDOFF = 2.0 ** -24


def _gamma_fp32(n: int) -> float:
    """Higham's gamma_n = n u / (1 - n u), u = 2^-24: the relative error bound of an n-step float32 computation."""
    return n * FP32_UNIT_ROUNDOFF / (1.0 - n * FP32_UNIT_ROUNDOFF)


def _nvfp4_abs_dot(args, kwargs):
    """gamma_{K+2} * (|X| @ |W|.T) in float64, shaped like the output ([N] for a GEMV, [M, N] for a GEMM)."""
    from .reference.nvfp4 import nvfp4_dequantize
    t, x = args[0], np.asarray(args[1], dtype=np.float64)
    w = np.abs(nvfp4_dequantize(t).astype(np.float64))  # [N, K]
    return _gamma_fp32(t.shape[1] + 2) * (np.abs(x) @ w.T)


# ---- the table ---------------------------------------------------------------------------------------------------
# op -> {output dtype name or "*": rule}. Keep the evidence next to the number.
TOLERANCES: dict[str, dict[str, object]] = {
    # ---- formats: fp8 / fp4 / nvfp4 (op core) ----
    "fp8_e4m3_encode": {"*": Exact("a codec: RNE on the E4M3 grid then the SATFINITE / NaN overflow policy is one "
                                   "defined byte per input (numerics-spec 2.2); any difference is a bug")},
    "fp8_e4m3_decode": {"*": Exact("every E4M3 value is exact in float32; 0x7F / 0xFF decode to the NaN "
                                   "0x7FC00000 / 0xFFC00000 (the reference's bits, ml_dtypes' too)")},
    "e2m1_encode": {"*": Exact("a codec: RNE with +-6 saturation, sign rules of numerics-spec 1.3; one code per input")},
    "e2m1_decode": {"*": Exact("a 16-entry table of exact float32 values (0x8 is -0.0)")},
    "fp4_pack": {"*": Exact("bit packing: element 2i in the low nibble; nothing is computed")},
    "fp4_unpack": {"*": Exact("bit unpacking: the inverse of fp4_pack")},
    "nvfp4_quantize": {"*": Exact("bytes of a checkpoint: every step is one correctly rounded float32 operation in "
                                  "the producer's order (numerics-spec 3.1/3.2), so the packed bytes, scale bytes "
                                  "and global scale are defined exactly; the reference matches compressed-tensors "
                                  "0.20 and ModelOpt 0.47 byte for byte (tests/test_oracle_quant.py)")},
    "nvfp4_dequantize": {"*": Exact("one rounding per element: q * fl32(s / gs) (compressed-tensors) or "
                                    "q * fl32(s * ws2) (modelopt), q and s exact; a CUDA path that keeps this "
                                    "per-layout order (true division, no reciprocal of gs, no FMA) is bit-identical")},
    "nvfp4_gemv": {"*": ScaledError(2.0, _nvfp4_abs_dot,
                                    "float32 dot products of K terms: in ANY summation order, products rounded, the "
                                    "error is <= gamma_K * sum_k |w_k x_k| (Higham, Accuracy and Stability, 3.1); +2 "
                                    "steps cover a fast path that applies the block scale after the 16-term sum. "
                                    "Reference and fast path each err by at most that, so they differ by <= 2x. "
                                    "Normalised by |W|.|x| as numerics-spec 6.7 asks; observed errors are ~sqrt(K) u")},
    "nvfp4_gemm": {"*": ScaledError(2.0, _nvfp4_abs_dot,
                                    "each Y[m, n] is a float32 dot product of K terms: the same bound as nvfp4_gemv "
                                    "(2 gamma_{K+2} * sum_k |X[m,k] W[n,k]|)")},
    "fake_quantize_nvfp4_activations": {"*": Exact("W4A4 activation quantize-dequantize: block amax (exact), "
                                                   "igs * fl32(amax / 6), the FP8 and E2M1 RNE codecs, then the "
                                                   "two float32 divisions and one multiply of nvfp4_dequantize; "
                                                   "each step correctly rounded, so a path keeping the order "
                                                   "(true division, no FMA) is bit-identical")},
    # ---- model ops: norms / rope / attention / masks / activations / moe / embedding / sampling ----
    # sampling (issue 5): every output is a discrete decision or one correctly rounded float32 op per element.
    "repetition_penalty": {"*": Exact("one IEEE float32 multiply or divide per touched element (no fastmath): "
                                      "correctly rounded on every backend")},
    "ban_tokens": {"*": Exact("a copy with -inf stored at the banned ids; nothing is computed")},
    "filter_logits": {"*": Exact("kept values are one correctly rounded float32 division by the temperature; the "
                                 "keep/cut decisions use float64 sums that can only differ within ~1e-15 of a "
                                 "threshold, which random logits never hit")},
    "sample_token": {"*": Exact("ids: same logits and same u must give the same token on every backend (float64 "
                                "CDF in id order; a draw can only flip within ~1e-15 of a bin edge)")},
    "argmax_token": {"*": Exact("ids: comparisons only, lowest id on ties")},
}


def rule_for(op: str, dtype) -> object:
    table = TOLERANCES.get(op)
    if table is None:
        raise KeyError(f"no tolerance entry for op {op!r} in impnb.tolerances.TOLERANCES")
    key = np.dtype(dtype).name if dtype is not None else "*"
    if key in table:
        return table[key]
    if "*" in table:
        return table["*"]
    raise KeyError(f"tolerance table for {op!r} has no rule for dtype {key} (has {sorted(table)})")


def assert_close(op: str, reference, fast, *, args=(), kwargs=None, path: str = "") -> None:
    """Raise CrossCheckError if ``fast`` is not within the table's rule of ``reference``."""
    kwargs = kwargs or {}
    if isinstance(reference, tuple):
        _same_type(op, path, reference, fast)
        for i, (r, f) in enumerate(zip(reference, fast)):
            assert_close(op, r, f, args=args, kwargs=kwargs, path=f"{path}[{i}]")
        return
    if is_dataclass(reference):
        _same_type(op, path, reference, fast)
        for fld in fields(reference):
            r, f = getattr(reference, fld.name), getattr(fast, fld.name)
            if isinstance(r, str) or r is None:
                if r != f:
                    raise CrossCheckError(op, "Exact", fld.name, r, f, "", "", 1, 1, detail=f"field {path}.{fld.name}")
                continue
            assert_close(op, np.asarray(r), np.asarray(f), args=args, kwargs=kwargs, path=f"{path}.{fld.name}")
        return
    ref, got = np.asarray(reference), np.asarray(fast)
    if ref.shape != got.shape or ref.dtype != got.dtype:
        raise CrossCheckError(op, "shape/dtype", None, f"{ref.shape} {ref.dtype}", f"{got.shape} {got.dtype}",
                              "", "", ref.size, ref.size, detail=f"output {path or 'value'}")
    rule = rule_for(op, ref.dtype)
    bad = _violations(rule, ref, got, args, kwargs)
    if bad.any():
        _raise(op, rule, ref, got, bad, path)


def _same_type(op, path, reference, fast):
    if type(reference) is not type(fast) or (isinstance(reference, tuple) and len(reference) != len(fast)):
        raise CrossCheckError(op, "structure", None, type(reference).__name__, type(fast).__name__, "", "", 1, 1,
                              detail=f"output {path or 'value'}")


def _violations(rule, ref: np.ndarray, got: np.ndarray, args, kwargs) -> np.ndarray:
    if isinstance(rule, Exact) or ref.dtype.kind in "biu":
        return _bits(ref) != _bits(got)
    r, g = ref.astype(np.float64), got.astype(np.float64)
    nan_mismatch = np.isnan(r) != np.isnan(g)
    inf_mismatch = np.isinf(r) & (r != g)  # an infinity must match, sign included
    both_finite = np.isfinite(r) & np.isfinite(g)
    err = np.where(both_finite, np.abs(g - r), 0.0)
    if isinstance(rule, AllClose):
        limit = rule.atol + rule.rtol * np.abs(r)
    elif isinstance(rule, ScaledError):
        limit = rule.bound * np.broadcast_to(np.asarray(rule.scale(args, kwargs), np.float64), r.shape)
    else:
        raise TypeError(f"unknown tolerance rule {rule!r}")
    finite_vs_nonfinite = np.isfinite(r) != np.isfinite(g)
    return nan_mismatch | inf_mismatch | finite_vs_nonfinite | (err > limit)


def _bits(a: np.ndarray) -> np.ndarray:
    a = np.ascontiguousarray(a)
    if a.dtype.kind == "b":
        return a.view(np.uint8)
    return a.view(np.dtype(f"u{a.dtype.itemsize}")) if a.dtype.itemsize in (1, 2, 4, 8) else a


def _raise(op, rule, ref, got, bad, path):
    r64 = ref.astype(np.float64) if ref.dtype.kind == "f" else ref.astype(np.int64)
    g64 = got.astype(np.float64) if got.dtype.kind == "f" else got.astype(np.int64)
    with np.errstate(invalid="ignore"):
        score = np.where(bad, np.nan_to_num(np.abs(g64 - r64), nan=np.inf, posinf=np.inf), -1.0)
    flat = int(np.argmax(score))
    idx = np.unravel_index(flat, ref.shape) if ref.ndim else ()
    rv, gv = ref[idx] if ref.ndim else ref[()], got[idx] if got.ndim else got[()]
    raise CrossCheckError(op, str(rule), tuple(int(i) for i in idx), rv.item(), gv.item(),
                          _hex(ref, idx), _hex(got, idx), int(bad.sum()), int(ref.size),
                          detail=f"output {path or 'value'}")


def _hex(a: np.ndarray, idx) -> str:
    bits = _bits(np.asarray(a))
    v = bits[idx] if bits.ndim else bits[()]
    return f"0x{int(v):0{a.dtype.itemsize * 2}x}" if a.dtype.itemsize <= 8 else "?"
