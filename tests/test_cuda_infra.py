"""The CUDA-path infrastructure: canaries catch out-of-bounds writes, launches follow the caller's CuPy stream and
can be captured in a CUDA graph, kernels compile once per signature (never per call), intrinsics work in the
simulator."""
from __future__ import annotations

import numpy as np
import pytest

from impnb.cuda import _alloc
from impnb.cuda._alloc import GuardViolation, guarded_allocations
from tests.conftest import cuda_mode

F32 = np.float32
needs_cuda = pytest.mark.skipif(cuda_mode() is None, reason="no CUDA GPU and no Numba simulator")


@needs_cuda
def test_guards_catch_a_write_past_the_end_and_before_the_start():
    for offset, side in ((0, "after"), (-1, "before")):
        with pytest.raises(GuardViolation, match=side):
            with guarded_allocations() as guards:
                out = _alloc.empty((3, 5), np.float32, label="probe")
                out[...] = 1.0  # a well-behaved kernel
                buffer = guards.allocations[-1].buffer
                index = _alloc.GUARD_BYTES + out.nbytes + offset if side == "after" else _alloc.GUARD_BYTES - 1
                buffer[index] = 0  # what a kernel writing one element too far does to the guard


@needs_cuda
def test_guards_pass_a_clean_write_and_poison_the_payload():
    with guarded_allocations() as guards:
        out = _alloc.empty((7,), np.uint8)
        assert (np.asarray(_host(out)) == _alloc.POISON).all()  # unwritten elements cannot look right by luck
        out[...] = 3
    assert guards.check() == 1


@needs_cuda
def test_outside_the_context_allocations_are_plain():
    out = _alloc.empty((4, 4), np.float32)
    assert out.shape == (4, 4) and out.dtype == np.float32


@needs_cuda
def test_warp_max_intrinsic_in_every_mode():
    """_intrinsics.warp_max through the abs-max kernel (hardware shuffles on a GPU, the fallback in the simulator)."""
    from impnb.cuda._launch import launch_numba, to_device
    from impnb.cuda._nvfp4_kernels import abs_max_kernel
    rng = np.random.default_rng(7)
    w = rng.standard_normal(300).astype(F32)
    w[123] = F32(-9.5)
    out = _alloc.zeros((1,), np.float32)
    launch_numba(abs_max_kernel, 200, to_device(w), out, block=64)  # 200 threads stride over 300 values
    assert float(np.asarray(_host(out))[0]) == 9.5


@pytest.mark.gpu
def test_raw_kernel_out_of_bounds_write_is_caught():
    """A real kernel writing n + 1 floats into an n-float output trips the canary."""
    import cupy
    kernel = cupy.RawKernel(r'''extern "C" __global__ void overrun(float* y, int n) {
        int i = blockIdx.x * blockDim.x + threadIdx.x; if (i <= n) y[i] = 1.0f; }''', "overrun")
    with pytest.raises(GuardViolation, match="after"):
        with guarded_allocations():
            y = _alloc.empty((100,), np.float32)
            kernel((1,), (128,), (y, np.int32(100)))


@pytest.mark.gpu
def test_no_recompile_per_call():
    import cupy
    from impnb.cuda import _launch, fp8, nvfp4
    from impnb.cuda._codec_kernels import fp8_encode_kernel
    from impnb.conformance.cases.nvfp4 import random_tensor
    rng = np.random.default_rng(3)
    t = random_tensor(rng, 64, 256, "compressed-tensors")
    x = cupy.asarray(rng.standard_normal(256).astype(F32))
    codes = cupy.asarray(rng.standard_normal(100).astype(F32))
    nvfp4.nvfp4_gemv(t, x), fp8.fp8_e4m3_encode(codes)
    before = _launch.compile_counts(fp8_encode_kernel)
    assert before["raw_modules"] >= 1 and before["fp8_encode_kernel"] >= 1
    for _ in range(3):
        nvfp4.nvfp4_gemv(t, x), fp8.fp8_e4m3_encode(codes)
    assert _launch.compile_counts(fp8_encode_kernel) == before


@pytest.mark.gpu
def test_launches_run_on_the_callers_stream_and_replay_in_a_cuda_graph():
    import cupy
    from impnb.cuda import fp8, nvfp4
    from impnb.reference import fp8 as ref_fp8, nvfp4 as ref_nvfp4
    from impnb import tolerances
    from impnb.conformance.cases.nvfp4 import random_tensor
    rng = np.random.default_rng(5)
    host = random_tensor(rng, 704, 2816, "modelopt")
    t = nvfp4_device(host)
    x_host = rng.standard_normal(2816).astype(F32)
    x = cupy.asarray(x_host)
    stream = cupy.cuda.Stream(non_blocking=True)
    with stream:
        y = nvfp4.nvfp4_gemv(t, x)  # warm: compiles, and leaves a pool block for the capture
        codes = fp8.fp8_e4m3_encode(x)
        stream.synchronize()
    tolerances.assert_close("nvfp4_gemv", ref_nvfp4.nvfp4_gemv(host, x_host), y.get(), args=(host, x_host))
    assert (codes.get() == ref_fp8.fp8_e4m3_encode(x_host)).all()
    del y
    with stream:
        stream.begin_capture()
        try:
            y = nvfp4.nvfp4_gemv(t, x)
        finally:
            graph = stream.end_capture()
    y[...] = 0  # the replay must write it again
    x[...] = cupy.asarray(x_host * 2)
    graph.launch(stream)
    stream.synchronize()
    tolerances.assert_close("nvfp4_gemv", ref_nvfp4.nvfp4_gemv(host, x_host * 2), y.get(), args=(host, x_host * 2))


def nvfp4_device(t):
    import cupy
    from impnb.formats import NVFP4Tensor
    return NVFP4Tensor(cupy.asarray(t.packed), cupy.asarray(t.scales), t.global_scale, t.layout)


def _host(a):
    from impnb.cuda._runtime import to_host
    return to_host(a)


@needs_cuda
def test_float32_widening_keeps_subnormals_and_their_sign(rng):
    """The encoders' float64 input is bit-exact for every float32, subnormals included (CuPy's own cast flushes
    them to +-0 on a GPU, which turned -1e-40 into E2M1 code 0 instead of 0x8)."""
    from impnb.cuda._common import as_float64_flat
    from impnb.cuda._launch import xp
    special = np.array([0, 0x80000000, 1, 0x80000001, 0x007FFFFF, 0x807FFFFF, 0x00800000, 0x80800000, 0x7F800000,
                        0xFF800000, 0x7FC00000, 0xFFC00000], np.uint32)
    bits = np.concatenate([special, rng.integers(0, 1 << 23, 2000).astype(np.uint32) | np.uint32(0x80000000),
                           rng.integers(0, 1 << 32, 2000, dtype=np.uint64).astype(np.uint32) & np.uint32(0xFF7FFFFF)])
    values = bits.view(F32)
    got = as_float64_flat(xp().asarray(values))
    got = got.get() if hasattr(got, "get") else np.asarray(got)
    want = values.astype(np.float64)
    finite = np.isfinite(want)
    assert np.array_equal(got[finite].view(np.uint64), want[finite].view(np.uint64))
    assert np.array_equal(np.isnan(got), np.isnan(want)) and np.array_equal(got[np.isinf(want)], want[np.isinf(want)])
