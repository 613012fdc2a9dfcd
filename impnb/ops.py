"""The op registry and dispatcher: every numeric op of impnb, registered once, with two paths.

An op ``name`` of family ``fam`` has
  * its reference:   ``impnb.reference.<fam>.<name>``  (pure NumPy; the spec)
  * its CUDA path:   ``impnb.cuda.<fam>.<name>``       (same signature; Numba-CUDA or CuPy RawKernel)
  * a tolerance rule ``impnb.tolerances.TOLERANCES[name]``
  * cross-check cases in ``impnb/conformance/cases/<fam>.py``

Call an op as ``impnb.ops.<name>(*args, backend=None, **kwargs)``:
  * ``backend="reference"`` runs the NumPy spec;
  * ``backend="cuda"`` runs the fast path, or raises ``BackendUnavailable`` (no GPU, or no CUDA path yet) /
    ``Unsupported`` (the fast path cannot take this input). It never reroutes silently;
  * ``backend="check"`` runs both and raises ``CrossCheckError`` when they differ beyond the tolerance table;
    it returns the fast result;
  * ``backend=None`` takes env ``IMPNB_BACKEND``, else ``"cuda"`` when a GPU is usable and the op has a CUDA
    path, else ``"reference"``;
  * ``backend="<name>"`` runs an implementation registered with ``register_backend(name, resolver)`` (another
    engine's kernels, say), and ``backend="check:<name>"`` runs it and the reference and compares them.

``python -m impnb.ops`` prints the coverage table (which ops have a CUDA path, which are pending); ``--json`` prints
every op with the CUDA kernels it owns and its number of cross-check cases.
"""
from __future__ import annotations

import functools
import importlib
import inspect
import os
import sys
from dataclasses import dataclass
from typing import Callable

from .errors import BackendUnavailable

BACKENDS = ("reference", "cuda", "check")  # built in; plus register_backend() names and "check:<name>"
_REGISTERED: dict[str, Callable[[str], Callable | None]] = {}


@dataclass(frozen=True)
class OpSpec:
    name: str
    family: str
    exact: bool  # True: the contract is bit-exact (codecs, packing, masks, top-k ids)
    summary: str
    # The CUDA entry points that implement the op: ``__global__`` names in impnb/cuda/kernels/<family>.cu (a
    # template's name, compiled as name<args>) and Numba ``@cuda.jit`` kernel names. Empty: the CUDA path is CuPy
    # array expressions / cuBLAS, or runs another op's kernels (causal_conv1d_step: causal_conv1d with T = 1).
    # Every kernel under impnb/ belongs to exactly one op (tests/test_kernel_ownership.py).
    kernels: tuple[str, ...] = ()


# ---- the registry: one line per op. Add new ops here (and nowhere else). ------------------------------------
_SPECS = [
    # formats: FP8 / FP4 codecs, NVFP4 quantization and products
    OpSpec("fp8_e4m3_encode", "fp8", True, "float -> FP8 E4M3FN byte, RNE, SATFINITE or NaN-on-overflow",
           ("fp8_encode_kernel",)),
    OpSpec("fp8_e4m3_decode", "fp8", True, "FP8 E4M3FN byte -> float32", ("fp8_decode_kernel",)),
    OpSpec("e2m1_encode", "fp4", True, "float -> FP4 E2M1 code 0..15, RNE, +-6 saturation", ("e2m1_encode_kernel",)),
    OpSpec("e2m1_decode", "fp4", True, "FP4 E2M1 code -> float32", ("e2m1_decode_kernel",)),
    OpSpec("fp4_pack", "fp4", True, "codes [..., K] -> bytes [..., K/2], element 2i in the low nibble",
           ("fp4_pack_kernel",)),
    OpSpec("fp4_unpack", "fp4", True, "bytes [..., K/2] -> codes [..., K]", ("fp4_unpack_kernel",)),
    OpSpec("nvfp4_quantize", "nvfp4", True, "float32 [N, K] -> NVFP4Tensor (compressed-tensors or ModelOpt)",
           ("abs_max_kernel", "quantize_ct_kernel", "quantize_modelopt_kernel")),
    OpSpec("nvfp4_dequantize", "nvfp4", False, "NVFP4Tensor -> float32 [N, K] (also the engine's prefill rows)",
           ("dequantize_kernel", "nvfp4_dequant_rows")),
    OpSpec("nvfp4_gemv", "nvfp4", False, "NVFP4Tensor [N, K] @ x [K] -> float32 [N] (the engine's GEMV)",
           ("gemv_nvfp4",)),
    OpSpec("nvfp4_gemm", "nvfp4", False, "X [M, K] @ NVFP4Tensor[N, K].T -> float32 [M, N]",
           ("nvfp4_gemv_kernel", "nvfp4_dequant_qs_half", "split_rows_half", "combine_rows")),
    # W4A4: run-time NVFP4 quantize-dequantize of a Linear's input with its stored input scale
    OpSpec("fake_quantize_nvfp4_activations", "nvfp4_act", True,
           "X [..., K] -> X^: per-16 block scales fp8(igs*amax/6), e2m1 codes, dequantized float32",
           ("fake_quantize_kernel",)),
    # sampling: logits processing and deterministic token choice (caller-supplied uniform u)
    OpSpec("repetition_penalty", "sampling", True, "logits [..., V], ids [N] -> x/p (x>=0) or x*p (x<0) at the ids"),
    OpSpec("ban_tokens", "sampling", True, "logits [..., V], ids [N] -> -inf at the banned ids"),
    OpSpec("filter_logits", "sampling", True, "logits / temperature, then top-k, top-p, min-p cuts to -inf"),
    OpSpec("sample_token", "sampling", True, "inverse-CDF draw in id order with a given u in [0, 1) -> int64"),
    OpSpec("argmax_token", "sampling", True, "greedy id, lowest id on ties -> int64 (the engine's device argmax)",
           ("argmax_partials", "argmax_select")),
    # model ops: the transformer forward is written only in these
    OpSpec("embedding", "embedding", False, "ids [T], table [V, D] (or NVFP4) -> table[ids] * scale, float32 [T, D]",
           ("embed_rows", "embed_nvfp4_rows")),
    OpSpec("linear", "linear", False, "x [T, K] @ W[N, K].T + b -> float32 [T, N] (dense float weights)"),
    OpSpec("rms_norm_linear", "linear", False, "linear(rms_norm(x), W, b) [softcap]: q|k|v, gate|up, router, head",
           ("rms_norm_gemv",)),
    OpSpec("gated_linear", "linear", False, "linear(act(gate) * up, W, b) [+ residual]: the down projection",
           ("gated_gemv",)),
    OpSpec("rms_norm", "norms", False, "x / sqrt(mean(x^2) + eps) * (offset + w) over the last axis",
           ("rms_norm_rows",)),
    OpSpec("rms_norm_add", "norms", False, "x + rms_norm(t, w): a sandwich post-norm added to the residual",
           ("rms_norm_add_rows",)),
    OpSpec("rope", "rope", False, "rotary embedding of x [T, H, D] at positions, neox or interleaved, partial"),
    OpSpec("qkv_rope_append", "rope", False, "split q|k|v, QK-norm, RoPE, v-norm; append k, v at slot pos % C",
           ("qkv_rope_append",)),
    OpSpec("rms_norm_qkv_rope_append", "rope", False, "qkv_rope_append(rms_norm_linear(x, W_qkv)), no QK-norm",
           ("rms_norm_qkv_rope_gemv",)),
    OpSpec("attention_mask", "masks", True, "bool [T, S] from query positions and each view slot's position"),
    OpSpec("attention", "attention", False, "GQA softmax(q k^T * scale [softcap] [mask] [+sink]) v, float32"),
    OpSpec("attention_decode", "attention", False, "split-K partials (max, sum, acc) of one token over cache slots",
           ("attention_partials",)),
    OpSpec("attention_output", "attention", False, "linear(combine(split-K partials [+ sinks]), W_o, b) [+ residual]",
           ("attention_output_gemv",)),
    OpSpec("silu", "activations", False, "x * sigmoid(x)"),
    OpSpec("gelu_tanh", "activations", False, "0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))"),
    OpSpec("swiglu", "activations", False, "silu(gate) * up"),
    OpSpec("geglu_tanh", "activations", False, "gelu_tanh(gate) * up"),
    OpSpec("swiglu_oai", "activations", False, "gpt-oss clamped SwiGLU: (clip(u) + 1) * g sigmoid(alpha g)"),
    OpSpec("gated_activation", "activations", False, "[gate | up] -> act(gate) * up (silu, gelu_tanh, swiglu_oai)",
           ("gated_act_rows",)),
    OpSpec("softcap", "activations", False, "cap * tanh(x / cap)"),
    OpSpec("moe_route", "moe", True, "router logits [T, E] -> (weights [T, K], ids [T, K]), lower id wins ties",
           ("moe_route_topk",)),
    OpSpec("moe_experts", "moe", False, "routed expert FFNs: sum_k w * down(act(gate_up x)), routed tokens only"),
    OpSpec("rms_norm_moe_experts", "moe", False, "moe_experts(rms_norm(x), ...) [+ residual]: grouped expert GEMVs",
           ("moe_up_gemv", "moe_down_gemv")),
    # hybrid linear-attention layers (Qwen3-Next, Qwen3.5): gated DeltaNet token mixer, its norms and gates
    OpSpec("causal_conv1d", "linear_attention", False,
           "depthwise causal conv over T tokens after a [K-1, C] rolling state, SiLU -> (y [T, C], state')",
           ("_conv_kernel", "_conv_state_kernel")),
    OpSpec("causal_conv1d_step", "linear_attention", False, "one decode token of causal_conv1d -> (y [C], state')"),
    OpSpec("gdn_gates", "linear_attention", False, "g = A softplus(a + dt_bias), beta = sigmoid(b), per value head",
           ("_gates_kernel",)),
    OpSpec("gated_delta_rule", "linear_attention", False,
           "S <- e^g S; S <- S + k beta (v - S^T k)^T; o = S^T q, token by token (L2-normed q, k; GQA)",
           ("_delta_kernel",)),
    OpSpec("gated_delta_rule_chunked", "linear_attention", False,
           "the gated delta rule chunk by chunk (UT transform within a chunk, state scan across chunks)",
           ("_normalise_kernel", "_gamma_kernel", "_pairs_kernel", "_solve_kernel", "_scan_kernel")),
    OpSpec("gated_rms_norm", "norms", False, "x / sqrt(mean(x^2) + eps) * w * silu(gate) over the last axis",
           ("_gated_rms_kernel",)),
    OpSpec("l2_norm", "norms", False, "x / sqrt(sum(x^2) + eps) over the last axis", ("_l2_kernel",)),
    OpSpec("sigmoid_gate", "activations", False, "x * sigmoid(gate), gate broadcast to x", ("_sigmoid_gate_kernel",)),
]

OPS: dict[str, OpSpec] = {}
for _spec in _SPECS:
    if _spec.name in OPS:
        raise RuntimeError(f"op {_spec.name!r} registered twice")
    OPS[_spec.name] = _spec

# Ops whose CUDA path is not written yet: the one place they are listed. A test keeps this list honest
# (an op listed here must have no CUDA function, and every op not listed must have one).
CUDA_PENDING: frozenset[str] = frozenset({
})


def reference_impl(name: str) -> Callable:
    spec = OPS[name]
    module = importlib.import_module(f"impnb.reference.{spec.family}")
    return getattr(module, name)


def cuda_impl(name: str) -> Callable:
    """The CUDA function of ``name``; raises BackendUnavailable if there is none or no GPU/simulator."""
    spec = OPS[name]
    if name in CUDA_PENDING:
        raise BackendUnavailable(f"op {name!r} has no CUDA path yet (see `python -m impnb.ops`)")
    from .cuda import _runtime as runtime
    runtime.require()
    module = importlib.import_module(f"impnb.cuda.{spec.family}")
    return getattr(module, name)


def register_backend(name: str, resolver) -> None:
    """Make another implementation a dispatcher backend: ``backend=name`` runs it, ``backend="check:" + name``
    compares it with the reference through the tolerance table. ``resolver``: a mapping op name -> callable, an
    object with ``resolve(op_name) -> callable | None``, or a function op name -> callable | None. The callables
    take the reference's signature. Registering a name again replaces it."""
    if not isinstance(name, str) or not name.isidentifier() or name in BACKENDS:
        raise ValueError(f"backend name {name!r}: must be an identifier other than {BACKENDS}")
    _REGISTERED[name] = _as_resolver(resolver)


def unregister_backend(name: str) -> None:
    _REGISTERED.pop(name, None)


def registered_backends() -> tuple[str, ...]:
    return tuple(_REGISTERED)


def _as_resolver(resolver) -> Callable[[str], Callable | None]:
    if hasattr(resolver, "resolve") and callable(resolver.resolve):
        return resolver.resolve
    if hasattr(resolver, "get") and hasattr(resolver, "__getitem__"):
        return resolver.get
    if callable(resolver):
        return resolver
    raise TypeError(f"resolver must be a mapping, an object with resolve(op), or a function; got "
                    f"{type(resolver).__name__}")


def backend_impl(name: str, backend: str) -> Callable:
    """The callable of op ``name`` on a single backend: "reference", "cuda" or a registered name."""
    if backend == "reference":
        return reference_impl(name)
    if backend == "cuda":
        return cuda_impl(name)
    if backend not in _REGISTERED:
        raise ValueError(f"backend={backend!r}; expected one of {_known_backends()}")
    fn = _REGISTERED[backend](name)
    if fn is None:
        raise BackendUnavailable(f"backend {backend!r} provides no implementation of op {name!r}")
    return fn


def _known_backends() -> tuple[str, ...]:
    return BACKENDS + tuple(_REGISTERED) + tuple(f"check:{b}" for b in _REGISTERED)


def _valid_backend(backend: str) -> bool:
    target = backend[len("check:"):] if backend.startswith("check:") else backend
    return backend in BACKENDS or target in _REGISTERED


def default_backend(name: str) -> str:
    env = os.environ.get("IMPNB_BACKEND")
    if env:
        if not _valid_backend(env):
            raise ValueError(f"IMPNB_BACKEND={env!r}; expected one of {_known_backends()}")
        return env
    if name not in CUDA_PENDING:
        from .cuda import _runtime as runtime
        if runtime.gpu_usable():
            return "cuda"
    return "reference"


def call(name: str, *args, backend: str | None = None, **kwargs):
    """Run op ``name`` on ``backend`` (see the module docstring)."""
    if name not in OPS:
        raise KeyError(f"unknown op {name!r}; known: {sorted(OPS)}")
    backend = backend or default_backend(name)
    if backend == "reference":
        return reference_impl(name)(*_host(args), **_host(kwargs))
    if backend == "check":
        return _check(name, "cuda", args, kwargs)
    if backend.startswith("check:"):
        return _check(name, backend[len("check:"):], args, kwargs)
    return backend_impl(name, backend)(*args, **kwargs)


def _check(name: str, fast_backend: str, args: tuple, kwargs: dict):
    from . import tolerances
    fast = backend_impl(name, fast_backend)(*args, **kwargs)
    ref = reference_impl(name)(*_host(args), **_host(kwargs))
    tolerances.assert_close(name, ref, _host(fast), args=_host(args), kwargs=_host(kwargs))
    return fast


def _host(obj):
    """Copy device arrays (anything with ``.get()`` like CuPy, or NVFP4Tensor fields) to NumPy, recursively."""
    from .cuda._runtime import to_host
    if isinstance(obj, tuple):
        return tuple(_host(o) for o in obj)
    if isinstance(obj, list):
        return [_host(o) for o in obj]
    if isinstance(obj, dict):
        return {k: _host(v) for k, v in obj.items()}
    return to_host(obj)


def _make_public(name: str) -> Callable:
    ref = reference_impl(name)

    @functools.wraps(ref)
    def op(*args, backend: str | None = None, **kwargs):
        return call(name, *args, backend=backend, **kwargs)

    op.__signature__ = _with_backend(inspect.signature(ref))
    return op


def _with_backend(sig: inspect.Signature) -> inspect.Signature:
    params = [p for p in sig.parameters.values() if p.kind is not p.VAR_KEYWORD]
    params.append(inspect.Parameter("backend", inspect.Parameter.KEYWORD_ONLY, default=None))
    return sig.replace(parameters=params)


def __getattr__(name: str):
    """``impnb.ops.<op>``: the public dispatching callable, built on first use."""
    if name in OPS:
        fn = _make_public(name)
        globals()[name] = fn
        return fn
    raise AttributeError(f"module 'impnb.ops' has no attribute {name!r}")


def coverage_table() -> str:
    rows = [f"{'op':28s} {'family':12s} {'exact':6s} cuda"]
    for spec in OPS.values():
        state = "pending" if spec.name in CUDA_PENDING else "yes"
        rows.append(f"{spec.name:28s} {spec.family:12s} {str(spec.exact):6s} {state}")
    pending = sorted(CUDA_PENDING)
    rows.append(f"\n{len(OPS)} ops, {len(OPS) - len(pending)} with a CUDA path, {len(pending)} pending"
                + (f": {', '.join(pending)}" if pending else ""))
    return "\n".join(rows)


def op_table() -> dict:
    """{"ops": [{"name", "family", "exact", "summary", "kernels", "cases", "cuda", "tolerance"}]}: what
    ``python -m impnb.ops --json`` prints (kernels: the CUDA entry points the op owns; cases: its cross-check cases
    in impnb/conformance/cases)."""
    from . import tolerances
    from .conformance.cases import load_all
    cases = load_all()
    rows = []
    for spec in OPS.values():
        rules = tolerances.TOLERANCES.get(spec.name, {})
        rows.append({"name": spec.name, "family": spec.family, "exact": spec.exact, "summary": spec.summary,
                     "kernels": list(spec.kernels), "cases": len(cases.get(spec.name, [])),
                     "cuda": "pending" if spec.name in CUDA_PENDING else "yes",
                     "tolerance": {dtype: str(rule) for dtype, rule in rules.items()}})
    return {"ops": rows}


def main(argv: list[str] | None = None) -> int:
    import argparse
    parser = argparse.ArgumentParser(prog="python -m impnb.ops", description="the registered ops of impnb")
    parser.add_argument("--json", action="store_true", help="print the op table as JSON (kernels and case counts)")
    args = parser.parse_args(argv)
    if args.json:
        import json
        print(json.dumps(op_table(), indent=1))
    else:
        print(coverage_table())
    return 0


if __name__ == "__main__":
    sys.exit(main())
