"""NVFP4 quantize / dequantize / GEMV / GEMM, CUDA path. Same names and signatures as impnb/reference/nvfp4.py.

Dimension legend: N = rows of W (output features), K = logical columns (K % 16 == 0), G = K / 16 blocks per row,
M = rows of the activation X.

Which kernel does what, and why:
  * nvfp4_quantize / nvfp4_dequantize: Numba kernels (impnb/cuda/_nvfp4_kernels.py) in the reference's float32
    operation order, bit-identical; they run in the CUDA simulator too, so CI checks them. Load-time ops.
  * On a GPU, nvfp4_dequantize runs ``nvfp4_dequant_rows`` (kernels/nvfp4.cu), the kernel the engine's prefill
    dequantizes weight row blocks with (``dequant_rows``): the same operation order, so bit-identical except
    that CuPy's -ftz=true flushes a subnormal product q * m (a block scale over a global scale below 2^-126).
  * nvfp4_gemv: the engine's GEMV (kernels/nvfp4.cu gemv_nvfp4<RR>, impnb.cuh gemv_body with a plain input
    stage): one warp per 1 or 4 rows, 8-byte loads of packed bytes per lane, E2M1 decoded as fp16 bits times 2^-14
    and a per-row multiplier 2^14 / gs (2^14 ws2) applied once per row.
  * nvfp4_gemm for M <= SMALL_M (short prefills): one CUDA C kernel
    (kernels/nvfp4.cu, nvfp4_gemv_kernel<R, M, VEC, P>, geometry from _gemv_plan): 16- (or 8-) byte coalesced
    loads of packed bytes that skip L1, E2M1 and E4M3 decoded in registers with bit arithmetic (Hopper has no FP4
    convert), fp32 accumulation per 16-block then times the block scale, warp-shuffle + shared-memory reduction,
    R rows per thread sharing each activation load, P chunks of loads in flight per thread. Each weight byte is
    read once for all M activation rows. On H100 it is bound by the decode's issue rate (~4.7 instructions per
    weight), not by memory: bench/NOTES.md has the measurements and the tensor-core design to do next.
    CuPy compiles RawKernels with -ftz=true: the decodes go through fp16 (f16 -> f32 is exact) so no fp32
    subnormal is ever formed from a code; only products / sums below 2^-126 flush.
  * nvfp4_gemm for M > SMALL_M: tensor cores through cuBLAS (cublasGemmEx, fp16 inputs, fp32 accumulation and
    output). W is dequantized to fp16 holding q * s EXACTLY (|q s| <= 6 * 448 = 2688 and nonzero |q s| >= 2^-10:
    no fp16 overflow or rounding; the global scale is applied to the fp32 result). X is split per row into
    fp16 hi + lo parts after a power-of-two row scale that puts max|x| in [2^13, 2^14) (no overflow; ~22
    significant bits), so one GEMM on [hi; lo] keeps the error near fp32's (inside the ScaledError rule) where a
    plain fp16/bf16 X would not. Chosen over a kernel of ours: cuBLAS already runs fp16 tensor cores near peak,
    and the dequantize costs one pass over W (2 bytes per element written) that large M amortises.
An unusable global scale (0, inf, NaN) gives zeros, as the reference.
"""
from __future__ import annotations

import functools

import numpy as np

from ..errors import FormatError
from ..formats import GROUP, LAYOUTS, NVFP4Tensor
from . import _alloc
from ._launch import current_stream, gpu_only, launch_numba, launch_raw, require_gpu, xp

F32 = np.float32
KERNELS = "nvfp4.cu"
SMALL_M = 8  # nvfp4_gemm uses the GEMV kernel up to this many activation rows
GEMV_DEPTH = 2  # P: chunks per row whose loads each thread issues before decoding any
THREADS = 256


# ---- quantize / dequantize (Numba) -------------------------------------------------------------------------------
def nvfp4_quantize(w, *, layout="compressed-tensors"):
    """float32 W [N, K] -> NVFP4Tensor in ``layout``, byte-identical to the reference (see its docstring)."""
    from ._nvfp4_kernels import quantize_ct_kernel, quantize_modelopt_kernel
    if layout not in LAYOUTS:
        raise ValueError(f"nvfp4_quantize: layout {layout!r}; expected one of {LAYOUTS}")
    w = _check_weight(w)
    n, k = w.shape
    flat = w.reshape(-1)  # [N*K]
    amax = _abs_max(flat)
    packed = _alloc.empty((n, k // 2), np.uint8, label="nvfp4_quantize packed")
    scales = _alloc.empty((n, k // GROUP), np.uint8, label="nvfp4_quantize scales")
    if layout == "compressed-tensors":
        amax = np.maximum(amax, np.finfo(F32).tiny)
        with np.errstate(over="ignore", divide="ignore"):
            scalar = (F32(1.0) / amax) * F32(2688.0)  # torch's scalar / tensor: reciprocal, then multiply
        scalar = scalar if np.isfinite(scalar) else F32(1.0)
        kernel = quantize_ct_kernel
    else:
        scalar = amax / F32(2688.0)
        kernel = quantize_modelopt_kernel
    launch_numba(kernel, scales.size, flat, F32(scalar), packed.reshape(-1), scales.reshape(-1))
    return NVFP4Tensor(packed, scales, float(scalar), layout)


def _check_weight(w):
    w = xp().asarray(w)
    if w.dtype != np.float32:
        raise TypeError(f"nvfp4_quantize: W must be float32 (the producers' float32 arithmetic is what is "
                        f"reproduced), got {w.dtype}; cast exactly first, e.g. bf16.astype(np.float32)")
    if w.ndim != 2 or w.shape[1] % GROUP:
        raise FormatError(f"nvfp4_quantize: W must be 2-D [N, K] with K a multiple of {GROUP}, got {w.shape}")
    finite = xp().isfinite(w)
    if not bool(finite.all()):
        bad = np.unravel_index(int(xp().argmin(finite.reshape(-1))), w.shape)
        raise ValueError(f"nvfp4_quantize: W has a non-finite value at {tuple(int(i) for i in bad)}")
    return xp().ascontiguousarray(w)


def _abs_max(flat) -> np.float32:
    from ._nvfp4_kernels import abs_max_kernel
    from ._runtime import to_host
    out = _alloc.zeros((1,), np.float32, label="abs_max scratch")
    threads = min(flat.size, 1 << 17) if flat.size else 0
    launch_numba(abs_max_kernel, threads, flat, out)
    return F32(np.asarray(to_host(out))[0])


def nvfp4_dequantize(t):
    """NVFP4Tensor [N, K] -> float32 W [N, K]: q * (s / gs) or q * (s * ws2), one rounding per element."""
    from ._nvfp4_kernels import dequantize_kernel
    from ._runtime import mode
    t = _check_tensor(t, "nvfp4_dequantize")
    n, k = t.shape
    if not t.usable:
        return _alloc.zeros((n, k), np.float32, label="nvfp4_dequantize")
    packed, scales = _device_bytes(t)
    out = _alloc.empty((n, k), np.float32, label="nvfp4_dequantize")
    ct = 1 if t.layout == "compressed-tensors" else 0
    if mode() == "gpu":
        gs = _alloc.empty((n,), np.float32, label="nvfp4_dequantize per-row global scale")
        gs.fill(F32(t.global_scale))
        dequant_rows(packed, scales, gs, ct, 0, n, k, out)
    else:
        launch_numba(dequantize_kernel, packed.size, packed.reshape(-1), scales.reshape(-1), F32(t.global_scale),
                     ct, out.reshape(-1))
    _nan_blocks_as_reference(out, scales)
    return out


def dequant_rows(packed, scales, gs, ct: int, r0: int, n: int, k: int, out) -> None:
    """out [n, K] = rows [r0, r0 + n) of an NVFP4 weight (packed [N, K/2], scales [N, K/16], per-row global scale
    gs [N], ct: 1 divide / 0 multiply), as nvfp4_dequantize; the engine's prefill calls it per row block."""
    from ._launch import sm_count
    launch_raw(KERNELS, "nvfp4_dequant_rows", (min(-(-n * k // THREADS), 16 * sm_count()),), (THREADS,),
               (packed, scales, gs, int(ct), int(r0), int(n), int(k), out))


def _nan_blocks_as_reference(out, scales) -> None:
    """Blocks whose scale byte is NaN (0x7F / 0xFF) hold the reference's NaN bits, 0x7FC00000 | the byte's sign
    (x86 propagates the scale's NaN through q * (s / gs)); a GPU would write its canonical 0x7FFFFFFF."""
    mod = xp()
    nan_blocks = (scales & 0x7F) == 0x7F  # [N, G]
    if not bool(nan_blocks.any()):
        return
    bits = mod.where(scales >= 0x80, np.uint32(0xFFC00000), np.uint32(0x7FC00000)).astype(np.uint32)  # [N, G]
    blocks = out.reshape(out.shape[0], -1, GROUP).view(np.uint32)  # [N, G, 16]
    blocks[nan_blocks] = bits[nan_blocks][:, None]


# ---- GEMV / GEMM (CUDA C) ----------------------------------------------------------------------------------------
@gpu_only
def nvfp4_gemv(t, x):
    """y = W x: NVFP4Tensor [N, K] times x [K] (float, cast to float32) -> float32 y [N]."""
    from ._device_weights import DeviceLinear
    from ._kernels import FMT_NVFP4
    from .linear import gemv_rows_per_warp, launch_gemv
    t = _check_tensor(t, "nvfp4_gemv")
    require_gpu("nvfp4_gemv")
    x = _activations(x, t.shape[1], "nvfp4_gemv", ndim=1)
    (n, k) = t.shape
    y = _alloc.empty((n,), np.float32, label="nvfp4_gemv")
    if not t.usable or n == 0:
        y[...] = 0
        return y
    packed, scales = _device_bytes(t)
    rmult = _alloc.empty((n,), np.float32, label="nvfp4_gemv per-row multiplier")
    scalar = F32(t.global_scale)
    rmult.fill(F32(16384.0) * (F32(1.0) / scalar if t.layout == "compressed-tensors" else scalar))
    w = DeviceLinear(FMT_NVFP4, n, k, _realign(packed, 8), scales, rmult)
    rows = gemv_rows_per_warp(n)
    launch_gemv(KERNELS, f"gemv_nvfp4<{rows}>", w, x, y, rows=rows)
    return y


@gpu_only
def nvfp4_gemm(t, x):
    """Y = X W^T: float X [M, K] times NVFP4Tensor [N, K] -> float32 Y [M, N] (see the module docstring)."""
    t = _check_tensor(t, "nvfp4_gemm")
    require_gpu("nvfp4_gemm")
    x = _activations(x, t.shape[1], "nvfp4_gemm", ndim=2)
    if x.shape[0] <= SMALL_M:
        return _small_m(t, x, "nvfp4_gemm")
    return _cublas_gemm(t, x)


def _small_m(t: NVFP4Tensor, x, label: str, plan: tuple | None = None):
    """[M, N] float32 from the GEMV kernels, M <= SMALL_M (M = 1 is the GEMV). ``plan`` overrides _gemv_plan
    (tools/bench_ops.py --sweep measures the candidates with it)."""
    (n, k), m = t.shape, x.shape[0]
    y = _alloc.empty((m, n), np.float32, label=label)
    if not t.usable or n == 0 or m == 0:
        y[...] = 0
        return y
    packed, scales = _device_bytes(t)
    packed, scales, x = _realign(packed, 16), _realign(scales, 2), _realign(x, 16)
    vec = 16 if k % 32 == 0 else 8  # 16 bytes = 32 elements = 2 blocks per load; else 8 bytes = 1 block
    plan = plan or _gemv_plan(n, k, m, vec)
    args = (packed, scales, x, y, np.int32(n), np.int32(k), F32(t.global_scale),
            np.int32(1 if t.layout == "compressed-tensors" else 0))
    _, tk, ry, rows, depth = plan
    launch_raw(KERNELS, gemv_kernel_name(rows, m, vec, depth), (-(-n // (ry * rows)),), (tk, ry), args)
    return y


def gemv_kernel_name(rows: int, m: int, vec: int, depth: int) -> str:
    return f"nvfp4_gemv_kernel<{rows},{m},{vec},{depth}>"


def gemv_kernel_names() -> list[str]:
    """Every instantiation of nvfp4_gemv_kernel<R, M, VEC, P> that _small_m can launch (the CI test compiles
    them all)."""
    names = [gemv_kernel_name(4, 1, vec, 1) for vec in (16, 8)]  # the many-rows GEMV plan
    for m in range(1, SMALL_M + 1):
        for rows in ((4, 2, 1) if m == 1 else (2, 1)):
            names += [gemv_kernel_name(rows, m, vec, GEMV_DEPTH) for vec in (16, 8)]
    return names


def _gemv_plan(n: int, k: int, m: int, vec: int) -> tuple:
    """("tile", TK threads along K, RY row groups per block, R rows per thread, P chunks in flight per step).

    Measured on H100 (bench/NOTES.md, sweeps of TK x R x P): a GEMV with many rows (N >= 6144) is fastest with
    one warp per 4 rows (TK = 32) and one chunk per step; N >= 16 x SMs with two warps per row (TK = 64, capped
    by the row's chunks), 4 rows, 2 chunks per step. Fewer rows (small MoE experts) or M > 1: one warp per group
    of R rows while that still fills the SMs, else K split over up to 8 warps per row group with a shared-memory
    reduction and R giving at least two blocks per SM."""
    sms = _sm_count()
    chunks = k // (2 * vec)
    tk_full = min(THREADS, 32 * -(-chunks // 32))  # threads that cover a row's chunks in one pass
    if m == 1 and n >= 6144:
        return "tile", 32, 8, 4, 1
    if m == 1 and n >= 16 * sms:
        tk = min(64, tk_full)
        return "tile", tk, THREADS // tk, 4, GEMV_DEPTH
    options = (4, 2, 1) if m == 1 else (2, 1)
    for rows in options:
        if -(-n // (8 * rows)) >= sms:
            return "tile", 32, 8, rows, GEMV_DEPTH
    ry = THREADS // tk_full
    for rows in options:
        if -(-n // (ry * rows)) >= 2 * sms:
            return "tile", tk_full, ry, rows, GEMV_DEPTH
    return "tile", tk_full, ry, 1, GEMV_DEPTH


def _cublas_gemm(t: NVFP4Tensor, x):
    (n, k), m = t.shape, x.shape[0]
    y = _alloc.empty((m, n), np.float32, label="nvfp4_gemm")
    if not t.usable or n == 0:
        y[...] = 0
        return y
    packed, scales = _device_bytes(t)
    wq = _alloc.empty((n, k), np.float16, label="nvfp4_gemm scratch W = q*s (fp16)")  # [N, K]
    words = n * k // 8
    launch_raw(KERNELS, "nvfp4_dequant_qs_half", (-(-words // THREADS),), (THREADS,),
               (_realign(packed, 4), scales, wq, np.int64(words), np.int32(k)))
    xs = _alloc.empty((2 * m, k), np.float16, label="nvfp4_gemm scratch X hi/lo (fp16)")  # [2M, K]
    row_exp = _alloc.empty((m,), np.int32, label="nvfp4_gemm scratch row exponents")
    launch_raw(KERNELS, "split_rows_half", (m,), (THREADS,), (x, xs, row_exp, np.int32(m), np.int32(k)))
    c = _alloc.empty((2 * m, n), np.float32, label="nvfp4_gemm scratch C")  # [2M, N]
    _gemm_ex_f16_f32(wq, xs, c, n=n, m2=2 * m, k=k)
    total = m * n
    launch_raw(KERNELS, "combine_rows", (-(-total // THREADS),), (THREADS,),
               (c, row_exp, y, np.int32(m), np.int32(n), F32(t.global_scale),
                np.int32(1 if t.layout == "compressed-tensors" else 0)))
    return y


def _gemm_ex_f16_f32(wq, xs, c, *, n: int, m2: int, k: int) -> None:
    """C [2M, N] (row-major, fp32) = Xs [2M, K] @ Wq[N, K]^T, fp16 inputs, fp32 compute: in cuBLAS's column-major
    view C^T (N x 2M) = op(A) B with A = Wq seen as K x N (transposed, lda = K), B = Xs^T (K x 2M, ldb = K)."""
    import cupy
    from cupy_backends.cuda.libs import cublas
    cuda_r_16f, cuda_r_32f, compute_32f, gemm_default = 2, 0, 68, -1
    one, zero = np.ones(1, np.float32), np.zeros(1, np.float32)
    handle = cupy.cuda.device.get_cublas_handle()
    with current_stream():
        mode = cublas.getPointerMode(handle)
        cublas.setPointerMode(handle, cublas.CUBLAS_POINTER_MODE_HOST)
        try:
            cublas.gemmEx(handle, cublas.CUBLAS_OP_T, cublas.CUBLAS_OP_N, n, m2, k, one.ctypes.data,
                          wq.data.ptr, cuda_r_16f, k, xs.data.ptr, cuda_r_16f, k, zero.ctypes.data,
                          c.data.ptr, cuda_r_32f, n, compute_32f, gemm_default)
        finally:
            cublas.setPointerMode(handle, mode)


# ---- helpers -----------------------------------------------------------------------------------------------------
def _check_tensor(t, op: str) -> NVFP4Tensor:
    if not isinstance(t, NVFP4Tensor):
        raise TypeError(f"{op}: expected an impnb.NVFP4Tensor, got {type(t).__name__}")
    return t


def _device_bytes(t: NVFP4Tensor):
    mod = xp()
    return mod.ascontiguousarray(mod.asarray(t.packed)), mod.ascontiguousarray(mod.asarray(t.scales))


def _activations(x, k: int, op: str, *, ndim: int):
    mod = xp()
    x = mod.asarray(x)
    if x.dtype.kind != "f":
        raise TypeError(f"{op}: activations must be floating point, got {x.dtype}")
    if x.ndim != ndim or x.shape[-1] != k:
        want = "[K]" if ndim == 1 else "[M, K]"
        raise ValueError(f"{op}: activations must be {want} with K = {k} (the logical K, 2 x packed width), "
                         f"got shape {x.shape}")
    return mod.ascontiguousarray(x.astype(np.float32, copy=False))  # exact for float16 / float32; float64 rounds (as reference)


def _aligned(n_bytes: int, *arrays) -> bool:
    return all(a.data.ptr % n_bytes == 0 for a in arrays)


def _realign(a, n_bytes: int):
    """``a`` itself when its data pointer is n_bytes-aligned, else an aligned copy (a view sliced at an odd offset)."""
    return a if _aligned(n_bytes, a) else a.copy()


@functools.lru_cache(maxsize=1)
def _sm_count() -> int:
    import cupy
    return int(cupy.cuda.Device().attributes["MultiProcessorCount"])


def gemv_launch_plan(n: int, k: int, m: int = 1) -> dict:
    """The kernel geometry nvfp4_gemv / small-M nvfp4_gemm use for an aligned [N, K] tensor (for tools/bench_ops)."""
    vec = 16 if k % 32 == 0 else 8
    plan = _gemv_plan(n, k, m, vec)
    return {"vec": vec, "plan": list(plan)}
