"""Byte identity with the producers themselves: compressed-tensors 0.20 and nvidia-modelopt 0.47 (marker ``oracle``).

Skipped unless the libraries are installed (they are not impnb dependencies). To run:
    python -m venv /tmp/oracle && /tmp/oracle/bin/pip install torch==2.13.0 compressed-tensors==0.20.0 \
        ml_dtypes hypothesis pytest -e . && /tmp/oracle/bin/pip install --no-deps nvidia-modelopt==0.47.0 \
        && /tmp/oracle/bin/pip install requests omegaconf pulp scipy       # what modelopt's qtensor imports
    /tmp/oracle/bin/python -m pytest -m oracle tests/test_oracle_quant.py   # IMPNB_ORACLE_MATRICES=1500 for more
The compressed-tensors pipeline below is its own code for a float32 weight: generate_gparam (global scale),
calculate_qparams (block scales from per-group min/max), quantize_and_pack_fp4 (codes), dequantize.
ModelOpt's is NVFP4QTensor.quantize / dequantize. torch's own float8 cast (which saturates from 2.13) is compared
with the FP8 encoder whenever torch is present.
"""
import os

import ml_dtypes
import numpy as np
import pytest

from impnb.reference import fp4, fp8, nvfp4
from impnb.conformance.cases.nvfp4 import planted_weight

pytestmark = pytest.mark.oracle
torch = pytest.importorskip("torch")
F32 = np.float32
SHAPES = [(1, 16), (3, 32), (7, 48), (16, 256), (33, 160), (64, 1024)]
REAL_SHAPES = [(704, 2816), (2816, 704)]


def weights(seed):
    """Random weights: planted blocks (zero, FP8 underflow, outlier, -0.0), bf16 values, heavy tails, blocks far
    below the tensor amax, many exact zeros, magnitudes 2^-30..2^10, then the real Gemma-4 expert shapes.
    IMPNB_ORACLE_MATRICES (default 24) sets how many random ones."""
    rng = np.random.default_rng(seed)
    for i in range(int(os.environ.get("IMPNB_ORACLE_MATRICES", "24"))):
        n, k = (SHAPES[i // 6 % len(SHAPES)] if i < 6 * len(SHAPES)
                else (int(rng.integers(1, 96)), 16 * int(rng.integers(1, 96))))
        yield _weight_of_kind(rng, i % 6, n, k, float(np.exp2(rng.uniform(-30, 10))))
    for n, k in REAL_SHAPES:
        yield planted_weight(rng, n, k, bf16=True)


def _weight_of_kind(rng, kind, n, k, scale):
    if kind in (0, 1):
        return planted_weight(rng, n, k, bf16=kind == 1, scale=scale)
    w = rng.standard_normal((n, k)) * scale
    if kind == 2:
        w = rng.standard_t(1.5, (n, k)) * scale  # heavy tails: outliers
    elif kind == 3:
        w = w * np.repeat(np.exp2(rng.uniform(-40, 0, (n, k // 16))), 16, axis=1)  # blocks that underflow FP8
    elif kind == 4:
        w[rng.random((n, k)) < 0.3] = 0.0  # many exact zeros, some all-zero blocks
    w = w.astype(F32)
    return w.astype(ml_dtypes.bfloat16).astype(F32) if kind == 5 else w


def _ct():
    pytest.importorskip("compressed_tensors")
    from compressed_tensors.compressors.nvfp4.helpers import quantize_and_pack_fp4
    from compressed_tensors.quantization import QuantizationArgs
    from compressed_tensors.quantization.lifecycle.forward import dequantize
    from compressed_tensors.quantization.utils.helpers import calculate_qparams, generate_gparam
    args = QuantizationArgs(num_bits=4, type="float", strategy="tensor_group", group_size=16, symmetric=True,
                            dynamic=False, scale_dtype=torch.float8_e4m3fn)

    def quantize(w):
        weight = torch.from_numpy(w.copy())
        gs = generate_gparam(weight.min(), weight.max())
        blocks = weight.reshape(weight.shape[0], -1, 16)
        scale, _ = calculate_qparams(blocks.amin(-1), blocks.amax(-1), args, global_scale=gs)
        packed = quantize_and_pack_fp4(weight, scale, global_scale=gs)
        return packed.numpy(), scale.to(torch.float8_e4m3fn).view(torch.uint8).numpy(), F32(gs.item())

    def dequant(t):
        q = torch.from_numpy(fp4.e2m1_decode(fp4.fp4_unpack(t.packed)))
        s = torch.from_numpy(fp8.fp8_e4m3_decode(t.scales))
        out = dequantize(q, s, args=args, global_scale=torch.tensor([t.global_scale], dtype=torch.float32),
                         dtype=torch.float32)
        return out.numpy()
    return quantize, dequant


def _modelopt():
    mod = pytest.importorskip("modelopt.torch.quantization.qtensor.nvfp4_tensor")

    def quantize(w):
        q, s, ws2 = mod.NVFP4QTensor.quantize(torch.from_numpy(w.copy()), 16)
        return q._quantized_data.numpy(), s.view(torch.uint8).numpy(), F32(ws2.item())

    def dequant(t):
        qt = mod.NVFP4QTensor(torch.Size(t.shape), torch.float32, torch.from_numpy(t.packed.copy()))
        scale = torch.from_numpy(t.scales.copy()).view(torch.float8_e4m3fn)
        out = qt.dequantize(dtype=torch.float32, scale=scale, double_scale=torch.tensor(t.global_scale),
                            block_sizes={-1: 16})
        return out.numpy()
    return quantize, dequant


def _assert_bytes_equal(name, got, want, w):
    __tracebackhide__ = True
    bad = np.argwhere(got != want)
    assert bad.size == 0, f"{name}: {len(bad)}/{want.size} bytes differ for W {w.shape}; first at " \
                          f"{tuple(bad[0])}: impnb 0x{got[tuple(bad[0])]:02x}, producer 0x{want[tuple(bad[0])]:02x}"


@pytest.mark.parametrize("layout,producer", [("compressed-tensors", _ct), ("modelopt", _modelopt)],
                         ids=["compressed-tensors-0.20", "modelopt-0.47"])
def test_quantize_is_byte_identical_to_the_producer(layout, producer):
    quantize, _ = producer()
    for w in weights(seed=1 if layout == "modelopt" else 2):
        packed, scales, scalar = quantize(w)
        t = nvfp4.nvfp4_quantize(w, layout=layout)
        _assert_bytes_equal("packed", t.packed, packed, w)
        _assert_bytes_equal("scales", t.scales, scales, w)
        assert F32(t.global_scale).tobytes() == scalar.tobytes(), f"global scale {t.global_scale} != {scalar}"


@pytest.mark.parametrize("layout,producer", [("compressed-tensors", _ct), ("modelopt", _modelopt)],
                         ids=["compressed-tensors-0.20", "modelopt-0.47"])
def test_dequantize_is_bit_identical_to_the_producer(layout, producer):
    _, dequant = producer()
    for w in weights(seed=3):
        t = nvfp4.nvfp4_quantize(w, layout=layout)
        ours, theirs = nvfp4.nvfp4_dequantize(t), dequant(t)
        if layout == "modelopt":  # ModelOpt's table decodes code 0x8 as +0.0 (CT and impnb: -0.0): equal values
            ours, theirs = ours + F32(0.0), theirs + F32(0.0)  # x + 0.0 turns -0.0 into +0.0, nothing else
        np.testing.assert_array_equal(ours.view(np.uint32), theirs.view(np.uint32))


def test_e2m1_codes_identical_to_compressed_tensors_encoder():
    pytest.importorskip("compressed_tensors")
    from compressed_tensors.compressors.nvfp4.helpers import pack_fp4_to_uint8
    from compressed_tensors.quantization.utils.fp4_utils import cast_to_fp4
    rng = np.random.default_rng(4)
    ties = fp4.TIES.astype(F32)
    around = np.concatenate([np.nextafter(ties, F32(0)), ties, np.nextafter(ties, F32(np.inf))])
    x = np.concatenate([around, -around, [0.0, -0.0, -1e-30, 1e-30, -0.2, 6.0, -6.0],
                        rng.uniform(-6, 6, 4096 - 2 * around.size - 7)]).astype(F32).reshape(64, 64)
    ct_bytes = pack_fp4_to_uint8(cast_to_fp4(torch.from_numpy(x.copy()))).numpy()  # CT clamps to +-6 first
    _assert_bytes_equal("e2m1 codes", fp4.fp4_pack(fp4.e2m1_encode(x)), ct_bytes, x)


def test_fp8_saturating_encoder_equals_torch_cast_after_clamp():
    if tuple(int(p) for p in torch.__version__.split("+")[0].split(".")[:2]) < (2, 13):
        pytest.skip("torch < 2.13 casts finite overflow to NaN (pytorch#178817)")
    h = np.arange(1 << 16, dtype=np.uint16).view(np.float16).astype(F32)
    x = np.concatenate([h, np.random.default_rng(5).standard_normal(100_000).astype(F32) * 300])
    x = x[~np.isnan(x)]
    want = torch.from_numpy(x).clamp(-448, 448).to(torch.float8_e4m3fn).view(torch.uint8).numpy()
    _assert_bytes_equal("fp8", fp8.fp8_e4m3_encode(x), want, x)
