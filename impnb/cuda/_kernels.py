"""The CUDA C entry points of impnb (impnb/cuda/kernels/<family>.cu) and the instantiations the host code launches.

A kernel's grep-able name is its ``__global__`` function name: a plain ``extern "C"`` name, or the name of a C++
template compiled through CuPy's ``name_expressions`` as ``name<args>``. ``INSTANTIATIONS[file]`` lists every name
expression a file is compiled with (NVRTC builds them all in one module per file and process; the nvcc test in
tests/test_kernels_compile.py builds the same list). The op that owns each kernel is declared in impnb.ops
(``OpSpec.kernels``).

Format and input-stage numbers (impnb.cuh): FMT 0 NVFP4, 1 f32, 2 f16, 3 bf16; ACT 2 silu, 3 gelu_tanh.
"""
from __future__ import annotations

import re

FMT_NVFP4, FMT_F32, FMT_F16, FMT_BF16 = 0, 1, 2, 3
FMTS = (FMT_NVFP4, FMT_F32, FMT_F16, FMT_BF16)
FMT_NAMES = {FMT_NVFP4: "nvfp4", FMT_F32: "f32", FMT_F16: "f16", FMT_BF16: "bf16"}
ACT_SILU, ACT_GELU = 2, 3
ACTS = {"silu": ACT_SILU, "gelu_tanh": ACT_GELU}
GEMV_ROWS = (1, 4)  # rows per warp of the engine's GEMVs
THREADS = 256  # block size of the GEMV kernels (impnb.cuh THREADS)
WARPS = THREADS // 32


def _names(template: str, *axes) -> list[str]:
    out = [""]
    for axis in axes:
        out = [f"{o},{a}" if o else f"{a}" for o in out for a in axis]
    return [f"{template}<{o}>" for o in out]


def _nvfp4_names() -> list[str]:
    from .nvfp4 import gemv_kernel_names
    return (_names("gemv_nvfp4", GEMV_ROWS) + gemv_kernel_names()
            + ["nvfp4_dequant_qs_half", "split_rows_half", "combine_rows", "nvfp4_dequant_rows"])


_STATIC = {
    "linear.cu": _names("rms_norm_gemv", FMTS, GEMV_ROWS) + _names("gated_gemv", FMTS, (ACT_SILU, ACT_GELU), GEMV_ROWS),
    "rope.cu": ["qkv_rope_append"] + _names("rms_norm_qkv_rope_gemv", FMTS),
    "attention.cu": ["attention_partials"] + _names("attention_output_gemv", FMTS),
    "moe.cu": ["moe_route_topk"] + _names("moe_up_gemv", FMTS) + _names("moe_down_gemv", FMTS, (ACT_SILU, ACT_GELU)),
    "norms.cu": ["rms_norm_rows", "rms_norm_add_rows"],
    "embedding.cu": ["embed_rows", "embed_nvfp4_rows"],
    "sampling.cu": ["argmax_partials", "argmax_select"],
    "activations.cu": ["gated_act_rows"],
}


def instantiations(filename: str) -> list[str]:
    """Every name expression the host code may launch from ``filename``."""
    if filename == "nvfp4.cu":
        return _nvfp4_names()
    return list(_STATIC[filename])


def files() -> list[str]:
    return sorted(list(_STATIC) + ["nvfp4.cu"])


def entry_point(name_expression: str) -> str:
    """``rms_norm_gemv<0,4>`` -> ``rms_norm_gemv`` (the name grep finds in the .cu file)."""
    return re.match(r"\w+", name_expression).group(0)


def gemv_name(template: str, fmt: int, *more) -> str:
    return f"{template}<{','.join(str(a) for a in (fmt,) + more)}>"
