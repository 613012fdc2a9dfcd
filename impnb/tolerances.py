"""The one tolerance table: how close the CUDA path must be to the reference, per op and output dtype.

Every entry says why its number is what it is. The rule kinds (Exact, AllClose, ScaledError) and the scale
functions of ScaledError rules are in impnb/tolerance_rules.py.
Structured outputs (tuples, NVFP4Tensor) are compared field by field with the same table.

Used by ``impnb.ops.call(..., backend="check")`` and by the tests; nothing else defines a tolerance.
"""
from __future__ import annotations

from dataclasses import fields, is_dataclass

import numpy as np

from .errors import CrossCheckError
from .tolerance_rules import (  # noqa: F401  (the rule kinds and scale functions the table below uses)
    FP32_UNIT_ROUNDOFF, AllClose, Exact, ScaledError, _abs_linear, _abs_norm_linear, _attention_output_scale,
    _attention_scale, _gamma_fp32, _gamma_fp32_probabilistic, _gated_linear_scale, _norm_add_scale, _nvfp4_abs_dot,
    _row_max_abs, scale_formula)


# ---- the table ---------------------------------------------------------------------------------------------------
# op -> {output dtype name or "*": rule}. Keep the evidence next to the number.
TOLERANCES: dict[str, dict[str, object]] = {
    # ---- formats: fp8 / fp4 / nvfp4 (op core) ----
    "fp8_e4m3_encode": {"*": Exact("a codec: RNE on the E4M3 grid then the SATFINITE / NaN overflow policy is one "
                                   "defined byte per input (docs/numerics.md §2); any difference is a bug")},
    "fp8_e4m3_decode": {"*": Exact("every E4M3 value is exact in float32; 0x7F / 0xFF decode to the NaN "
                                   "0x7FC00000 / 0xFFC00000 (the reference's bits, ml_dtypes' too)")},
    "e2m1_encode": {"*": Exact("a codec: RNE with +-6 saturation, sign rules of docs/numerics.md §1.3; one code per input")},
    "e2m1_decode": {"*": Exact("a 16-entry table of exact float32 values (0x8 is -0.0)")},
    "fp4_pack": {"*": Exact("bit packing: element 2i in the low nibble; nothing is computed")},
    "fp4_unpack": {"*": Exact("bit unpacking: the inverse of fp4_pack")},
    "nvfp4_quantize": {"*": Exact("bytes of a checkpoint: every step is one correctly rounded float32 operation in "
                                  "the producer's order (docs/numerics.md §3.1, §3.2), so the packed bytes, scale bytes "
                                  "and global scale are defined exactly; the reference matches compressed-tensors "
                                  "0.20 and ModelOpt 0.47 byte for byte (tests/test_oracle_quant.py)")},
    "nvfp4_dequantize": {"*": Exact("one rounding per element: q * fl32(s / gs) (compressed-tensors) or "
                                    "q * fl32(s * ws2) (modelopt), q and s exact; a CUDA path that keeps this "
                                    "per-layout order (true division, no reciprocal of gs, no FMA) is bit-identical")},
    "nvfp4_gemv": {"*": ScaledError(2.0, _nvfp4_abs_dot,
                                    "float32 dot products of K terms (+2 steps for a fast path that applies the block "
                                    "scale after a 16-term sum), normalised by |W|.|x| (docs/numerics.md): each path "
                                    "is within Higham-Mary's probabilistic bound ~8 sqrt(K+2) u of the exact product, "
                                    "so the two differ by <= 2x that (850 u at K = 2816). Measured max error of "
                                    "float32 orders vs float64, in u: reference 0.6-2.3, BLAS 0.6-2.5, sequential "
                                    "2.5-7.2 (704x2816, 2816x704, 1024x4096). bf16-rounded activations err by "
                                    "2700-16000 u and are caught; the deterministic worst case (K u, 8196 u at "
                                    "K = 4096) would let them through")},
    "nvfp4_gemm": {"*": ScaledError(2.0, _nvfp4_abs_dot,
                                    "each Y[m, n] is a float32 dot product of K terms: the same bound as nvfp4_gemv "
                                    "(2 gamma~_{K+2}(8) * sum_k |X[m,k] W[n,k]|)")},
    "fake_quantize_nvfp4_activations": {"*": Exact("W4A4 activation quantize-dequantize: block amax (exact), "
                                                   "igs * fl32(amax / 6), the FP8 and E2M1 RNE codecs, then the "
                                                   "two float32 divisions and one multiply of nvfp4_dequantize; "
                                                   "each step correctly rounded, so a path keeping the order "
                                                   "(true division, no FMA) is bit-identical")},
    # ---- model ops: norms / rope / attention / masks / activations / moe / embedding / sampling ----
    # sampling: every output is a discrete decision or one correctly rounded float32 op per element.
    "repetition_penalty": {"*": Exact("one IEEE float32 multiply or divide per touched element (no fastmath): "
                                      "correctly rounded on every backend")},
    "ban_tokens": {"*": Exact("a copy with -inf stored at the banned ids; nothing is computed")},
    "filter_logits": {"*": Exact("kept values are one correctly rounded float32 division by the temperature; the "
                                 "keep/cut decisions use float64 sums that can only differ within ~1e-15 of a "
                                 "threshold, which random logits never hit")},
    "sample_token": {"*": Exact("ids: same logits and same u must give the same token on every backend (float64 "
                                "CDF in id order; a draw can only flip within ~1e-15 of a bin edge)")},
    "argmax_token": {"*": Exact("ids: comparisons only, lowest id on ties")},
    # forward-pass ops. u = 2^-24 (float32 unit roundoff). CUDA expf/tanhf/sinf/cosf/rsqrtf are <= 2 ulp
    # off (CUDA C Programming Guide, Math API accuracy table, no --use_fast_math); sums may run in any order, whose
    # error grows like sqrt(n) u for random signs (n u worst case). Case inputs are O(1) activations.
    "embedding": {"*": AllClose(0.0, 4e-7, "dense tables: a row gather and one correctly rounded float32 multiply "
                                "(bit-identical); NVFP4 tables: the engine decodes q 2^-14 times s (2^14 / gs) "
                                "then the scale, 4 roundings against the reference's q fl(s / gs) * scale (3): "
                                "<= ~5 ulp = 3e-7 relative; zeros stay exact (atol 0)")},
    "linear": {"*": ScaledError(3e-5, _abs_linear, "float32 dot products of length K in any "
                                "order: |err| <= gamma_K sum|x w|; rounding errors of random sign grow like "
                                "sqrt(K) u = 7.6e-6 at K = 16384, so 3e-5 of sum|x w| is a 4x margin")},
    "rms_norm": {"*": AllClose(1e-6, 1e-5, "mean of D squares (sqrt(D) u relative) then rsqrt (2 ulp) and two "
                               "multiplies: ~10 ulp = 1.2e-6 relative; 1e-5 is an 8x margin, atol covers x ~ 0")},
    "rope": {"*": AllClose(1e-5, 1e-5, "the float32 angle pos * inv_freq is the same product on both paths; "
                           "sin/cos 2 ulp each plus one fma: y = a cos - b sin errs <= ~4 ulp (|a| + |b|) "
                           "= 1e-6 for |x| <= 2; 1e-5 is a 10x margin (absolute, since y can cancel to ~0)")},
    "attention_mask": {"*": Exact("boolean comparisons of integer positions: no arithmetic to round")},
    "attention": {"*": ScaledError(1.0, _attention_scale,
                                   "the output is a weighted mean of v rows: S-term sums in any order err by "
                                   "~sqrt(S) u |v| = 4e-6 at S = 4096 (2e-5 absolute, a 5x margin; 1e-4 |v| for "
                                   "exp's 2 ulp and the normalisation); each score reaches exp(s - max) with an "
                                   "absolute error of ~u |s|, so scores of several hundred add 2 u |s| |v|")},
    "silu": {"*": AllClose(1e-6, 1e-5, "exp 2 ulp, one add, one divide, one multiply: <= 5 ulp = 6e-7 relative")},
    "gelu_tanh": {"*": AllClose(1e-6, 1e-5, "tanh 2 ulp and 6 roundings: <= 8 ulp = 1e-6 relative; near x = 0 "
                                "the 1 + tanh term cancels, hence the absolute 1e-6")},
    "swiglu": {"*": AllClose(1e-6, 1e-5, "silu (<= 5 ulp) times up: <= 6 ulp = 7e-7 relative")},
    "geglu_tanh": {"*": AllClose(1e-6, 1e-5, "gelu_tanh (<= 8 ulp) times up: <= 9 ulp = 1.1e-6 relative")},
    "swiglu_oai": {"*": AllClose(1e-6, 1e-5, "clamps are exact; sigmoid 5 ulp, two multiplies, one add: <= 8 ulp")},
    "softcap": {"*": AllClose(1e-6, 1e-5, "one divide, tanh 2 ulp, one multiply: <= 4 ulp = 5e-7 relative")},
    "moe_route": {"int32": Exact("expert ids: top-k with the lower index winning ties; the scores feeding it "
                                 "agree to a few ulp, and random router logits never sit that close"),
                  "float32": AllClose(1e-6, 1e-5, "softmax over E (exp 2 ulp, E-term sum) and one renormalising "
                                      "division: <= ~10 ulp = 1.2e-6 relative")},
    "moe_experts": {"*": AllClose(5e-5, 1e-4, "two chained float32 GEMMs (H- and I-term dots, <= 4096 each: "
                                  "sqrt(n) u = 4e-6 of the O(1) partial sums) plus the activation and a K-term "
                                  "weighted sum; 5e-5 absolute keeps a ~10x margin")},
    # fused ops: the engine's kernels, each the composition of the ops above (impnb/reference/<family>.py)
    "rms_norm_linear": {"*": ScaledError(3e-5, _abs_norm_linear,
                                         "rms_norm (~10 ulp relative per element) feeding a K-term float32 dot in "
                                         "any order (sqrt(K) u = 7.6e-6 at K = 16384, as linear); NVFP4 weights "
                                         "add one rounding of the per-row multiplier 2^14 / gs; all relative to "
                                         "|rms_norm(x)| @ |W| (+ |b|); softcap only shrinks errors. 3e-5: a 4x "
                                         "margin")},
    "gated_linear": {"*": ScaledError(1.0, _gated_linear_scale,
                                      "3e-5 |act| @ |W| for the K-term dot (as linear) plus 1e-6 (|gate| |up|) @ "
                                      "|W| for the activation: the engine's tanhf (2 ulp, CUDA Math API table) in "
                                      "1 + tanh cancels for gate < -3, an absolute error of ~1.2e-7 |gate| |up| "
                                      "per element (8x margin), plus 1e-6 |residual| for the final add")},
    "rms_norm_add": {"*": ScaledError(1e-5, _norm_add_scale,
                                      "rms_norm's ~10 ulp relative error (1.2e-6) on rms_norm(t) and one rounding "
                                      "of the add, relative to |x| + |rms_norm(t)| (+ 0.1 for elements near 0: "
                                      "1e-6 absolute); 1e-5 keeps an 8x margin under cancellation x ~ -norm")},
    "qkv_rope_append": {"*": AllClose(1e-5, 1e-5, "QK-norm (~10 ulp relative), then rope (~4 ulp, "
                                            "absolute 1e-6 for |x| <= 2) on O(1) normed heads; v and untouched "
                                            "cache slots are copies (exact). 1e-5 keeps the rope rule's margin"),
                        "int64": Exact("slot positions: integers written, never computed"),
                        "int32": Exact("slot positions (the engine's int32 slots): integers written")},
    "rms_norm_qkv_rope_append": {"*": AllClose(1e-4, 1e-4,
                                                     "q|k|v are K-term GEMV outputs of rms_norm(x) (errors "
                                                     "~sqrt(K) u |x^||W|, ~1e-6 for the O(1) case weights scaled "
                                                     "1/sqrt(K)) then rotated (4 ulp): 1e-4 absolute and relative "
                                                     "is a >= 10x margin over those O(1) values"),
                                 "int64": Exact("slot positions: integers written, never computed"),
                                 "int32": Exact("slot positions (the engine's int32 slots): integers written")},
    "attention_decode": {"*": AllClose(2e-5, 1e-4, "per split: D-term score dots (sqrt(D) u), expf 2 ulp, sums "
                                       "of <= chunk (64..1024) terms in a block-tree order; max is exact up to the "
                                       "score error (-inf exact); l and acc relative ~sqrt(chunk) u: as the "
                                       "attention rule (1e-4 relative, 2e-5 absolute for |v| ~ 1)")},
    "attention_output": {"*": ScaledError(5e-5, _attention_output_scale,
                                          "the combine (S <= 64 split weights: expf 2 ulp, an S-term sum, one "
                                          "division: ~S u = 4e-6 of sum_j w_j |acc_j| / L) then a K-term dot "
                                          "(sqrt(K) u, as linear), relative to that magnitude times |W| "
                                          "(+ |b| + |residual|): 5e-5 is a ~5x margin")},
    "gated_activation": {"*": AllClose(5e-6, 1e-5, "silu: 5 ulp relative; the engine's gelu with tanhf (2 ulp) "
                                       "cancels in 1 + tanh for gate < -3: an absolute ~1.2e-7 |gate| |up| "
                                       "(<= 1.2e-6 for |gate| <= 5, |up| <= 2), so 5e-6 absolute")},
    "rms_norm_moe_experts": {"*": AllClose(5e-5, 1e-4, "rms_norm (1e-6 relative) then moe_experts' two chained "
                                           "GEMV/GEMM dots and the K-term weighted sum (its rule: 5e-5 absolute "
                                           "for O(1) partial sums); the GELU variant's tanhf adds ~1e-6")},
    # ---- hybrid linear-attention layers (Qwen3-Next, Qwen3.5). Errors below were measured by running the float32
    # references against the same formulas in float64 on the cases of impnb/conformance/cases (tiny and real shapes)
    "causal_conv1d": {"*": AllClose(1e-5, 1e-5, "K <= 4 products of O(1)-O(10) activations and weights summed in any "
                                    "order (<= (K+1) u sum|w x|, sum|w x| <= ~20 in the cases) and silu (<= 5 ulp); "
                                    "float32 vs float64: max 1.8e-6 absolute at |y| = 12.5 (real shapes); the rolled "
                                    "state is a copy (exact). 1e-5 absolute and relative keep a 5x margin")},
    "causal_conv1d_step": {"*": AllClose(1e-5, 1e-5, "causal_conv1d with T = 1: the same sums (float32 vs float64: "
                                         "max 1.5e-6 at |y| = 13.5)")},
    "gdn_gates": {"*": AllClose(1e-6, 1e-5, "exp, log1p (2 ulp each), one add, one multiply per g; exp, add, divide "
                                "per beta: <= ~6 ulp = 7e-7 relative (float32 vs float64: 6e-6 at |g| = 153, i.e. "
                                "4e-8 relative); 1e-5 relative is a >10x margin")},
    "gated_delta_rule": {"*": AllClose(2e-5, 1e-4, "per token: two Dk-term dots (S^T k, S^T q, Dk <= 128: sqrt(Dk) u "
                                       "of O(1) partial sums), an exp (2 ulp) and O(1) updates of a state whose "
                                       "recurrence is contractive (decay <= 1, |k| = 1, beta < 1), so errors do not "
                                       "grow with T. float32 vs float64 on the cases: max 2.1e-6 absolute (|o| <= "
                                       "5.8, 16 tokens, real shapes); 2e-5 absolute is a ~10x margin, far below the "
                                       "O(0.1) effect of a wrong decay order, gate sign or head mapping")},
    "gated_delta_rule_chunked": {"*": AllClose(2e-5, 1e-4, "the same map as gated_delta_rule through the UT "
                                               "transform: Dk- and L-term dots, a forward substitution over L <= 64 "
                                               "rows of a well-conditioned unit triangular system (|k_i . k_m| << 1 "
                                               "for L2-normed keys), decays exp(gamma) <= 1. float32 vs float64: "
                                               "max 3.1e-6 absolute (200 tokens, chunks of 64, strong decay, real "
                                               "shapes); the chunked and the recurrent references differ by the "
                                               "same order (tests/test_linear_attention.py), inside this rule")},
    "gated_rms_norm": {"*": AllClose(1e-6, 2e-5, "rms_norm (<= 10 ulp) times silu(gate) (<= 5 ulp): <= ~16 ulp = "
                                     "1.9e-6 relative; 2e-5 is a 10x margin, atol covers outputs near 0")},
    "l2_norm": {"*": AllClose(1e-6, 1e-5, "a D-term sum of squares (sqrt(D) u relative), sqrt and divide (1 ulp "
                              "each), one multiply: ~6 ulp = 7e-7 relative; a zero row gives exact zeros")},
    "sigmoid_gate": {"*": AllClose(1e-6, 1e-5, "exp 2 ulp, one add, one divide, one multiply: <= 5 ulp = 6e-7 "
                                   "relative")},
    # ---- whole model: the CUDA engine (impnb/engine/) against the reference model, --backend check ----
    "engine_logits": {"*": ScaledError(1e-4, _row_max_abs,
                                       "same weights (check mode stores them in float32), float32 activations, "
                                       "residual stream and KV cache on both paths; only summation order differs "
                                       "(cuBLAS SGEMM blocking, warp-tree GEMV sums, split-K attention). Measured "
                                       "on the GPU (tests/test_cuda_model.py, 6 architectures): max |d logit| / "
                                       "max |logit| of the row 3.6e-7 .. 5.1e-7; 1e-4 of the row's largest logit "
                                       "keeps a 200x margin, and an error in any op of a layer exceeds it "
                                       "(the planted-bug test)")},
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
    bad = violations(rule, ref, got, args, kwargs)
    if bad.any():
        _raise(op, rule, ref, got, bad, path)


def _same_type(op, path, reference, fast):
    if type(reference) is not type(fast) or (isinstance(reference, tuple) and len(reference) != len(fast)):
        raise CrossCheckError(op, "structure", None, type(reference).__name__, type(fast).__name__, "", "", 1, 1,
                              detail=f"output {path or 'value'}")


def violations(rule, ref: np.ndarray, got: np.ndarray, args, kwargs) -> np.ndarray:
    """bool mask of the elements of ``got`` outside ``rule`` around ``ref`` (NaN must meet NaN, inf the same inf)."""
    if isinstance(rule, Exact) or ref.dtype.kind in "biu":
        return bit_patterns(ref) != bit_patterns(got)
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


def bit_patterns(a: np.ndarray) -> np.ndarray:
    """The elements' bits as unsigned integers of their width (bool as uint8)."""
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
                          hex_bits(ref, idx), hex_bits(got, idx), int(bad.sum()), int(ref.size),
                          detail=f"output {path or 'value'}")


def hex_bits(a: np.ndarray, idx) -> str:
    """The bits of ``a[idx]`` in hex, zero-padded to the element width."""
    bits = bit_patterns(np.asarray(a))
    v = bits[idx] if bits.ndim else bits[()]
    return f"0x{int(v):0{a.dtype.itemsize * 2}x}" if a.dtype.itemsize <= 8 else "?"
