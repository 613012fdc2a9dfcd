"""Every CUDA-path op against its reference, through the tolerance table, with canaries around every allocation.

test_crosscheck runs each op not in ops.CUDA_PENDING over every case of impnb/conformance/cases: in CI under the Numba
simulator at size "tiny", on a GPU at size "real" (tests.conftest.size_class()). Ops whose CUDA path is a CuPy
RawKernel cannot run in the simulator: they skip there with that reason (tests/test_kernels_compile.py compiles
their .cu files in CI) and run on the GPU. The `gpu` tests below add the NVFP4 GEMV/GEMM shapes and inputs that
matter for the fast kernel: the MoE-expert shapes with M > 1, tails, K not a multiple of 32, unaligned
views, NaN block scales, large activations (fp16 range of the cuBLAS path).
"""
from __future__ import annotations

import importlib
import warnings

import numpy as np
import pytest

from impnb import ops
from impnb.cuda._alloc import guarded_allocations
from impnb.formats import NVFP4Tensor
from impnb.reference.nvfp4 import nvfp4_quantize
from tests.conftest import cuda_mode, size_class
from impnb.conformance.cases import load_all
from impnb.conformance.cases.nvfp4 import planted_weight, random_tensor

CASES = load_all()
F32 = np.float32


def _params():
    for name in sorted(ops.OPS):
        if name in ops.CUDA_PENDING:
            continue
        for c in CASES.get(name, []):
            yield pytest.param(c, id=str(c))


def _gpu_only(name: str) -> bool:
    module = importlib.import_module(f"impnb.cuda.{ops.OPS[name].family}")
    return bool(getattr(getattr(module, name), "gpu_only", False))


def run_checked(op: str, *args, **kwargs):
    """ops.call(backend="check") inside guarded allocations; returns the fast result (guards checked on exit)."""
    with guarded_allocations() as guards:
        out = ops.call(op, *args, backend="check", **kwargs)
    assert guards.allocations, f"{op} allocated its output outside impnb.cuda._alloc (no canary was placed)"
    return out


@pytest.mark.parametrize("case", list(_params()))
def test_crosscheck(case, rng):
    mode = cuda_mode()
    if mode is None:
        pytest.skip("no CUDA GPU and no Numba simulator")
    if mode == "sim" and _gpu_only(case.op):
        pytest.skip(f"{case.op}: CuPy RawKernel, cannot run in the Numba simulator; compiled in CI by "
                    "tests/test_kernels_compile.py and cross-checked on the GPU")
    args, kwargs = case.make(rng, size_class())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # unusable-global-scale cases warn by design
        run_checked(case.op, *args, **kwargs)


# ---- GPU: the fast NVFP4 kernels on the shapes and inputs that break GEMVs --------------------------------------
def _device_tensor(t: NVFP4Tensor) -> NVFP4Tensor:
    import cupy
    return NVFP4Tensor(cupy.asarray(t.packed), cupy.asarray(t.scales), t.global_scale, t.layout)


@pytest.mark.gpu
@pytest.mark.parametrize("layout", ["compressed-tensors", "modelopt"])
@pytest.mark.parametrize("n,k", [(704, 2816), (2816, 704)])
def test_gemm_moe_expert_shapes_every_small_m(rng, n, k, layout):
    """A per-row NVFP4 GEMV loop went wrong for M > 1 at N=704 K=2816 / N=2816 K=704 (M=11 there)."""
    import cupy
    t = _device_tensor(nvfp4_quantize(planted_weight(rng, n, k), layout=layout))
    run_checked("nvfp4_gemv", t, cupy.asarray(rng.standard_normal(k).astype(F32)))
    for m in (1, 2, 3, 5, 8, 9, 11, 33):
        run_checked("nvfp4_gemm", t, cupy.asarray(rng.standard_normal((m, k)).astype(F32)))


@pytest.mark.gpu
@pytest.mark.parametrize("n,k", [(1, 16), (3, 48), (257, 80), (1000, 4112), (33, 14336), (5, 640),
                                 (2055, 4128), (2048, 32), (3000, 14336), (6150, 96)])
def test_gemv_tails_and_k_not_multiple_of_32(rng, n, k):
    """Row tails (N not a multiple of the rows per block), K % 32 == 16 (8-byte loads), K not a multiple of the
    chunks a block covers per pass, one-block rows, each GEMV geometry of _gemv_plan."""
    import cupy
    t = _device_tensor(random_tensor(rng, n, k, "compressed-tensors"))
    run_checked("nvfp4_gemv", t, cupy.asarray(rng.standard_normal(k).astype(F32)))
    for m in (2, 3, 4, 12):
        run_checked("nvfp4_gemm", t, cupy.asarray(rng.standard_normal((m, k)).astype(F32)))


@pytest.mark.gpu
def test_gemv_unaligned_views_and_numpy_inputs(rng):
    """Views at odd byte offsets are realigned (copied), NumPy inputs are copied to the GPU."""
    import cupy
    n, k = 64, 512
    host = random_tensor(rng, n, k, "modelopt")
    big = cupy.zeros((n, k // 2 + 1), dtype=cupy.uint8)
    big[:, 1:] = cupy.asarray(host.packed)
    packed_view = big[:, 1:]  # odd offset, row stride k/2 + 1: not contiguous either
    t = NVFP4Tensor(packed_view, cupy.asarray(host.scales), host.global_scale, host.layout)
    x = rng.standard_normal(k + 1).astype(F32)
    run_checked("nvfp4_gemv", t, cupy.asarray(x)[1:])
    run_checked("nvfp4_gemv", host, x[1:])  # NumPy tensor fields and activations


@pytest.mark.gpu
def test_gemv_nan_block_scale_poisons_only_its_row(rng):
    import cupy
    host = random_tensor(rng, 96, 256, "compressed-tensors")
    scales = host.scales.copy()
    scales[7, 3] = 0xFF
    t = NVFP4Tensor(cupy.asarray(host.packed), cupy.asarray(scales), host.global_scale, host.layout)
    y = run_checked("nvfp4_gemv", t, cupy.asarray(rng.standard_normal(256).astype(F32))).get()
    assert np.isnan(y[7]) and np.isfinite(np.delete(y, 7)).all()
    run_checked("nvfp4_gemm", t, cupy.asarray(rng.standard_normal((16, 256)).astype(F32)))


@pytest.mark.gpu
def test_gemm_large_and_tiny_activations(rng):
    """The cuBLAS path scales each X row by a power of two before its fp16 hi/lo split: 1e30 and 1e-30 rows are
    exact; the GEMV kernel takes the same rows in fp32."""
    import cupy
    for n in (128, 2048):  # the cuBLAS path (M = 16); GEMV and small-M rows on two geometries
        t = _device_tensor(nvfp4_quantize(planted_weight(rng, n, 256), layout="compressed-tensors"))
        x = rng.standard_normal((16, 256)).astype(F32)
        x[0] *= F32(1e30)
        x[1] *= F32(1e-30)
        x[2, :128] *= F32(70000.0)  # beyond fp16's max within one row
        x[3, 200:] *= F32(1e-6)  # a step of small values next to a step of ordinary ones
        run_checked("nvfp4_gemm", t, cupy.asarray(x))
        for m in range(4):
            run_checked("nvfp4_gemv", t, cupy.asarray(x[m]))


@pytest.mark.gpu
def test_gemv_float16_and_float64_activations(rng):
    import cupy
    t = _device_tensor(random_tensor(rng, 200, 320, "modelopt"))
    x = rng.standard_normal(320)
    run_checked("nvfp4_gemv", t, cupy.asarray(x.astype(np.float16)))
    run_checked("nvfp4_gemv", t, cupy.asarray(x))
