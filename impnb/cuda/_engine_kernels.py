"""The engine's kernels (impnb/cuda/kernels/engine.cu): one NVRTC compile per process, cached, and typed launchers.

Every launcher takes CuPy arrays (or None for an absent optional pointer) and Python numbers, converts the numbers
to the kernel's int32 / float32 parameters, and launches on CuPy's current stream, so the same calls run eagerly or
inside a stream capture (impnb/cuda/_engine.py captures the decode step once as a CUDA graph). Nothing here
allocates device memory: callers pass preallocated outputs (an allocation inside a capture would be a bug, seed 004).

Dimension legend: see the header of engine.cu (N, K, H, HKV, D, C, S, V, E, TK).
"""
from __future__ import annotations

import functools

import numpy as np

from ._runtime import require

FMT_NVFP4, FMT_F32, FMT_F16, FMT_BF16 = 0, 1, 2, 3
FMT_NAMES = {FMT_NVFP4: "nvfp4", FMT_F32: "f32", FMT_F16: "f16", FMT_BF16: "bf16"}
INPUT_MODES = ("plain", "norm", "silu", "gelu")
THREADS = 256
WARPS = THREADS // 32


@functools.lru_cache(maxsize=1)
def module():
    """The compiled engine module (NVRTC, sm of the current device), compiled once per process with the op core's
    options (impnb/cuda/_launch.py: never fast-math); CuPy also keeps the binary in its disk cache. One module for
    all engine kernels (``_launch.raw_function`` builds one per kernel name, which suits the op core's few)."""
    require(gpu_only=True)
    import cupy
    from ._launch import _NVRTC_OPTIONS, kernel_source
    return cupy.RawModule(code=kernel_source("engine.cu"), options=_NVRTC_OPTIONS)


@functools.lru_cache(maxsize=None)
def kernel(name: str):
    return module().get_function(name)


@functools.lru_cache(maxsize=1)
def sm_count() -> int:
    import cupy
    return int(cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)["multiProcessorCount"])


def _arg(a):
    if a is None:
        return np.uint64(0)  # a null pointer
    if isinstance(a, bool):
        return np.int32(int(a))
    if isinstance(a, (int, np.integer)):
        return np.int32(a)
    if isinstance(a, (float, np.floating)):
        return np.float32(a)
    return a


def launch(name: str, grid, block, args, smem: int = 0) -> None:
    k = kernel(name)
    if smem > 48 * 1024 and k.max_dynamic_shared_size_bytes < smem:
        k.max_dynamic_shared_size_bytes = smem
    k(tuple(grid) if isinstance(grid, (tuple, list)) else (int(grid),),
      tuple(block) if isinstance(block, (tuple, list)) else (int(block),),
      tuple(_arg(a) for a in args), shared_mem=int(smem))


# ---------------------------------------------------------------- typed launchers
def gemv(w, x, y, *, mode: str = "plain", aux=None, eps: float = 0.0, offset: float = 0.0, accumulate=False,
         softcap: float = 0.0, max_blocks: int | None = None) -> str:
    """y[N] (+)= epilogue(W @ input(x)); ``w`` a DeviceLinear (impnb/cuda/_engine_weights.py). Returns the kernel."""
    rows = 4 if w.N >= 8 * WARPS * sm_count() else 1
    name = f"gemv_{FMT_NAMES[w.fmt]}_{mode}_r{rows}"
    blocks = -(-w.N // (rows * WARPS))
    blocks = min(blocks, max_blocks or 8 * sm_count())
    launch(name, blocks, THREADS, (w.data, w.scales, w.rmult, w.bias, x, aux, eps, offset, y, w.N, w.K,
                                   int(accumulate), softcap), smem=4 * w.K)
    return name


def qkv_rope(w, x, norm, *, eps, offset, q, kc, vc, slot_pos, st, cos, sin, F, interleaved, H, HKV, D, C) -> str:
    """q|k|v = W @ RMSNorm(x) with RoPE and the KV append in the epilogue (one kernel; no QK-norm layers)."""
    name = f"qkv_rope_{FMT_NAMES[w.fmt]}"
    tasks = (H + HKV) * F + HKV * D // 2
    blocks = min(-(-tasks // WARPS), 8 * sm_count())
    launch(name, blocks, THREADS, (w.data, w.scales, w.rmult, w.bias, x, norm, eps, offset, q, kc, vc, slot_pos, st,
                                   cos, sin, F, interleaved, H, HKV, D, C, w.K), smem=4 * w.K)
    return name


def moe_up(w, ids, x, y, *, aux, eps: float, offset: float, top_k: int) -> str:
    """y[j, :] = W[ids[j]] @ rmsnorm(x) for j < top_k; w: a stacked DeviceLinear with N = rows per expert."""
    name = f"moe_up_{FMT_NAMES[w.fmt]}"
    blocks = min(-(-w.N // WARPS), 4 * sm_count())
    launch(name, (blocks, top_k), THREADS, (w.data, w.scales, w.rmult, ids, x, aux, eps, offset, y, w.N, w.K),
           smem=4 * w.K)
    return name


def moe_down(w, ids, wts, gu, x, *, act: str, top_k: int) -> str:
    """x[n] += sum_j wts[j] (W[ids[j]] @ act(gu[j]))[n]; w: stacked [E, N, K]."""
    name = f"moe_down_{FMT_NAMES[w.fmt]}_{act}"
    blocks = min(-(-w.N // WARPS), 8 * sm_count())
    launch(name, blocks, THREADS, (w.data, w.scales, w.rmult, ids, wts, gu, x, w.N, w.K, top_k),
           smem=4 * w.K * top_k)
    return name


def attention_decode(q, kc, vc, slot_pos, st, part, *, H, HKV, D, C, chunk, window, scale, softcap):
    """Split-K decode attention partials over the C cache slots of one layer (the o-proj GEMV combines them)."""
    splits = -(-C // chunk)
    pm, pl, pacc = part
    block = max(256, chunk)
    launch("attn_partial", (H, splits), block, (q, kc, vc, slot_pos, st, H, HKV, D, C, chunk, window or 0, scale,
                                                softcap or 0.0, pm, pl, pacc), smem=4 * (D + chunk + block))
    return splits


def gemv_attn(w, part, sinks, splits: int, D: int, y, *, accumulate=False) -> str:
    """y[N] (+)= W @ attention output, combined from the split partials in the GEMV's input stage."""
    pm, pl, pacc = part
    name = f"gemv_{FMT_NAMES[w.fmt]}_attn_r1"
    blocks = min(-(-w.N // WARPS), 8 * sm_count())
    launch(name, blocks, THREADS, (w.data, w.scales, w.rmult, w.bias, pm, pl, pacc, sinks, splits, D, y, w.N, w.K,
                                   int(accumulate)), smem=4 * (w.K + (w.K // D) * splits))
    return name


def argmax(logits, ban, V, part_v, part_i, st, out_ids, max_out) -> None:
    groups = part_v.shape[0]
    launch("argmax_partial", groups, THREADS, (logits, ban, V, part_v, part_i))
    launch("argmax_final", 1, 32, (part_v, part_i, groups, st, out_ids, max_out))
