"""Which Linear weights get quantized, which share a global scale, and the quantization itself.

Legend: M = a Linear module name (HF naming, e.g. ``model.layers.3.self_attn.q_proj``), N = out features,
K = in features. A quantizable weight is the 2-D ``M.weight`` of a transformer projection (``q/k/v/o_proj``,
``gate/up/down_proj``) or, on request, ``lm_head``; embeddings, norms and routers stay in high precision, as the
usual llm-compressor / ModelOpt ignore lists keep them.

Hybrid linear-attention layers (Qwen3-Next, Qwen3.5): the big projections of ``linear_attn`` are quantized
(``in_proj_qkvz`` / ``in_proj_qkv``, ``in_proj_z``, ``out_proj``; gated q_proj with the rest of attention); these
stay in high precision: ``conv1d`` (a depthwise [C, 1, K] filter, not a Linear), ``A_log`` / ``dt_bias`` (per-head
scalars), every norm, ``in_proj_ba`` / ``in_proj_b`` / ``in_proj_a`` (2 Hv rows that set each head's decay
exp(A softplus(a + dt_bias)) and write strength sigmoid(b): their error compounds through the recurrent state over
every later token, for a tiny share of the weights), routers (``mlp.gate``) and ``mlp.shared_expert_gate`` (one
row). ``in_proj_qkv`` and ``in_proj_z`` share a global scale (engines run them as one GEMM, vLLM's in_proj_qkvz).

Fused shards share ONE global scale (llm-compressor's fused-layer handling and ModelOpt's unified export both unify
the weight amax of q/k/v and of gate/up, because inference engines run each family as one GEMM): the shards are
quantized as one concatenated [sum N, K] matrix, so the global scale comes from the fused amax, and split back by
rows. Block scales are per 16 elements of a row, so the split is exact: the bytes are those of quantizing each
shard with the shared global scale.
"""
from __future__ import annotations

import fnmatch
import re
import warnings
from dataclasses import dataclass

import numpy as np

from .. import ops
from ..formats import NVFP4Tensor

GROUP = 16
PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
LINEAR_ATTN_PROJECTIONS = ("in_proj_qkvz", "in_proj_qkv", "in_proj_z", "out_proj")  # under a ``linear_attn`` module
# Linear modules of the hybrid layers kept in high precision by rule (listed in the ignore list, so that other
# loaders know them for dense Linears): parent module suffix -> leaves
KEPT_DENSE = {"linear_attn": ("in_proj_ba", "in_proj_b", "in_proj_a"), "mlp": ("shared_expert_gate",)}
FUSED = (("q_proj", "k_proj", "v_proj"), ("gate_proj", "up_proj"), ("in_proj_qkv", "in_proj_z"))


@dataclass(frozen=True)
class Plan:
    quantize: tuple[str, ...]        # modules M whose M.weight becomes NVFP4, sorted
    groups: tuple[tuple[str, ...], ...]  # modules sharing one global scale (fused families; singletons otherwise)
    ignore: tuple[str, ...]          # Linear modules left in high precision (written to the config), sorted


def module_of(name: str) -> str | None:
    return name[:-len(".weight")] if name.endswith(".weight") else None


def kept_dense(module: str) -> bool:
    """A Linear the rule keeps in high precision (KEPT_DENSE): written to the ignore list, never quantized."""
    parent, _, leaf = module.rpartition(".")
    return any(parent.endswith(p) and leaf in leaves for p, leaves in KEPT_DENSE.items())


def is_linear(module: str) -> bool:
    parent, _, leaf = module.rpartition(".")
    if parent.endswith("linear_attn"):
        return leaf in LINEAR_ATTN_PROJECTIONS
    return leaf in PROJECTIONS or module == "lm_head"


def matches(module: str, patterns) -> bool:
    """``--ignore`` patterns: an exact module name, an fnmatch glob, or ``re:<regex>`` (compressed-tensors style,
    re.match). A pattern naming a parent module covers its children."""
    for p in patterns:
        if p.startswith("re:"):
            if re.match(p[3:], module):
                return True
        elif fnmatch.fnmatchcase(module, p) or fnmatch.fnmatchcase(module, p + ".*"):
            return True
    return False


def make_plan(shapes: dict[str, tuple], ignore_patterns=(), quantize_lm_head: bool = False) -> Plan:
    """Decide from the tensor shapes (HF names) what is quantized. ``lm_head`` must already exist in ``shapes``
    when it is to be quantized (a tied model gets an untied copy first, see impnb.quantize.convert)."""
    for p in ignore_patterns:
        if p.startswith("re:"):
            re.compile(p[3:])  # a bad regex fails here, with re's own message
    linears = sorted(m for n, s in shapes.items() if (m := module_of(n)) and len(s) == 2 and is_linear(m))
    quant, ignore = [], []
    for m in linears:
        k = shapes[m + ".weight"][1]
        if m == "lm_head" and not quantize_lm_head or matches(m, ignore_patterns):
            ignore.append(m)
        elif k % GROUP:
            warnings.warn(f"{m}: in_features {k} is not a multiple of {GROUP}; left unquantized", stacklevel=2)
            ignore.append(m)
        else:
            quant.append(m)
    _warn_split_families(quant, ignore)
    ignore += sorted(m for n in shapes if (m := module_of(n)) and kept_dense(m))
    if "lm_head" not in linears and "lm_head" not in ignore:
        ignore.append("lm_head")  # tied head: the Linear module still exists in HF models; llm-compressor lists it
    return Plan(tuple(quant), _groups(quant), tuple(sorted(ignore)))


def _warn_split_families(quant: list[str], ignore: list[str]) -> None:
    """Engines run q/k/v and gate/up as one GEMM each: a family half in NVFP4 and half dense loads nowhere fast."""
    kept = set(ignore)
    for m in quant:
        parent, _, leaf = m.rpartition(".")
        family = next((f for f in FUSED if leaf in f), ())
        dense = [f"{parent}.{x}" for x in family if f"{parent}.{x}" in kept]
        if dense and leaf == next(x for x in family if f"{parent}.{x}" not in kept):
            warnings.warn(f"{parent}: {', '.join(dense)} left dense while other shards of the fused "
                          f"{'/'.join(family)} family are quantized; engines that fuse them may refuse this",
                          stacklevel=3)


def _groups(quant: list[str]) -> tuple[tuple[str, ...], ...]:
    remaining, groups = set(quant), []
    for m in quant:
        if m not in remaining:
            continue
        parent, leaf = m.rsplit(".", 1) if "." in m else ("", m)
        family = next((f for f in FUSED if leaf in f), (leaf,))
        members = tuple(x for x in (f"{parent}.{leaf_}" if parent else leaf_ for leaf_ in family) if x in remaining)
        groups.append(members)
        remaining -= set(members)
    return tuple(groups)


def quantize_group(weights: list[np.ndarray], layout: str, backend=None) -> list[NVFP4Tensor]:
    """Quantize fused shards [N_i, K] with one shared global scale (from the fused amax); one tensor per shard."""
    fused = weights[0] if len(weights) == 1 else np.concatenate(weights, axis=0)  # [sum N_i, K]
    t = ops.nvfp4_quantize(np.ascontiguousarray(fused, np.float32), layout=layout, backend=backend)
    t = t.to_host() if hasattr(t, "to_host") else t
    out, row = [], 0
    for w in weights:
        n = w.shape[0]
        out.append(NVFP4Tensor(np.ascontiguousarray(t.packed[row:row + n]), np.ascontiguousarray(t.scales[row:row + n]),
                               t.global_scale, t.layout))
        row += n
    return out


def input_scalar(amax: float, layout: str) -> float:
    """The stored activation scalar from a calibrated amax (static_minmax): compressed-tensors input_global_scale
    = 448*6 / amax (a divisor; amax clamped to float32 tiny, a non-finite result becomes 1.0 as in
    compressed-tensors 0.20 generate_gparam); ModelOpt input_scale = amax / (6*448) (a multiplier)."""
    f32 = np.float32
    amax = f32(amax)
    if layout == "compressed-tensors":
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            gs = f32(2688.0) / max(amax, np.finfo(np.float32).tiny)
        return float(gs) if np.isfinite(gs) else 1.0
    return float(amax / f32(2688.0))
