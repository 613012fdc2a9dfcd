"""MXFP4 checkpoints built in tmp_path (compressed-tensors mxfp4-pack-quantized with U8 / F8_E8M0 scales, gpt-oss
`*_blocks` / `*_scales`): loaded as MXFP4Tensor, dequantized against a hand computation, and never confused with
NVFP4 (docs/numerics.md §4: scale dtype, group size from the shapes, no global scale)."""
from __future__ import annotations

import numpy as np
import pytest

import impnb
from impnb import FormatError
from impnb.loaders.mxfp4 import MXFP4Tensor

from .test_quant_checkpoints import L0, LLAMA, _module, ct_config, modelopt_config, write_dir

E2M1 = [0, 0.5, 1, 1.5, 2, 3, 4, 6]  # docs/numerics.md §1.1, written out independently of impnb.reference.fp4

def _mx_expected(codes, exps):
    """Hand dequant: e2m1 value * 2^(e - 127), groups of 32 along the last axis; 0xFF -> NaN."""
    vals = np.array([(-1) ** (c >> 3) * E2M1[c & 7] for c in codes.reshape(-1).tolist()]).reshape(codes.shape)
    scale = np.where(exps == 0xFF, np.nan, 2.0 ** (exps.astype(np.float64) - 127))
    return vals * np.repeat(scale, 32, axis=-1)


def _mx_bytes(rng, lead):
    codes = rng.integers(0, 16, lead + (64,), dtype=np.uint8)  # K = 64: two groups
    packed = (codes[..., 0::2] | (codes[..., 1::2] << 4)).astype(np.uint8)
    exps = rng.integers(118, 136, lead + (2,), dtype=np.uint8)
    return codes, packed, exps


@pytest.mark.parametrize("scale_dtype", ["U8", "F8_E8M0"])
def test_ct_mxfp4_loads(tmp_path, rng, scale_dtype):
    codes, packed, exps = _mx_bytes(rng, (8,))
    exps[3, 1] = 0xFF
    m = _module("o_proj")
    tensors = {f"{m}.weight_packed": packed, f"{m}.weight_scale": exps}
    ck = impnb.load_checkpoint(write_dir(tmp_path / "mx", ct_config("mxfp4-pack-quantized", 32), tensors,
                                         {f"{m}.weight_scale": scale_dtype}))
    t = ck.tensors[f"{m}.weight"]
    assert ck.quantization == "mxfp4-compressed-tensors" and isinstance(t, MXFP4Tensor) and t.shape == (8, 64)
    np.testing.assert_array_equal(t.dequantize(np.float64), _mx_expected(codes, exps))


@pytest.mark.parametrize("case, match", [
    ("global_scale", "no per-tensor scale"), ("e4m3_scale", "means nvfp4"), ("group16", "group 16"),
    ("nvfp4_config", "means mxfp4")])
def test_mxfp4_inconsistencies(tmp_path, rng, case, match):
    """Never misread MX as NVFP4 or the reverse (docs/numerics.md §4)."""
    codes, packed, exps = _mx_bytes(rng, (8,))
    m = _module("o_proj")
    tensors, dtypes = {f"{m}.weight_packed": packed, f"{m}.weight_scale": exps}, {f"{m}.weight_scale": "U8"}
    config = ct_config("mxfp4-pack-quantized", 32)
    if case == "global_scale":
        tensors[f"{m}.weight_global_scale"] = np.array([1.0], np.float32)
    elif case == "e4m3_scale":
        dtypes[f"{m}.weight_scale"] = "F8_E4M3"
    elif case == "group16":
        tensors[f"{m}.weight_scale"] = np.concatenate([exps, exps], axis=1)
    else:
        config = ct_config()
    with pytest.raises(FormatError, match=match):
        impnb.load_checkpoint(write_dir(tmp_path / "mx", config, tensors, dtypes))


def test_gpt_oss_mxfp4(tmp_path, rng):
    codes, packed, exps = _mx_bytes(rng, (2, 8))  # [E, N, K/2], [E, N, K/32]
    base = f"{L0}.mlp.experts.gate_up_proj"
    tensors = {f"{base}_blocks": packed.reshape(2, 8, 2, 16), f"{base}_scales": exps,
               f"{base}_bias": np.zeros((2, 8), np.float32)}
    config = {**LLAMA, "quantization_config": {"quant_method": "mxfp4",
                                               "modules_to_not_convert": ["model.layers.*.self_attn", "lm_head"]}}
    ck = impnb.load_checkpoint(write_dir(tmp_path / "oss", config, tensors))
    t = ck.tensors[base]
    assert ck.quantization == "mxfp4-gpt-oss" and t.shape == (2, 8, 64)
    np.testing.assert_array_equal(t.dequantize(np.float64), _mx_expected(codes, exps))
    assert f"{base}_bias" in ck.tensors
    del tensors[f"{base}_scales"]
    with pytest.raises(FormatError, match="without"):
        impnb.load_checkpoint(write_dir(tmp_path / "oss2", config, tensors))


def test_modelopt_mxfp4(tmp_path, rng):
    codes, packed, exps = _mx_bytes(rng, (8,))
    m = _module("down_proj")
    tensors = {f"{m}.weight": packed, f"{m}.weight_scale": exps}
    ck = impnb.load_checkpoint(write_dir(tmp_path / "mo", modelopt_config("MXFP4"), tensors))
    assert ck.quantization == "mxfp4-modelopt" and isinstance(ck.tensors[f"{m}.weight"], MXFP4Tensor)
    np.testing.assert_array_equal(ck.tensors[f"{m}.weight"].dequantize(np.float64), _mx_expected(codes, exps))
    with pytest.raises(FormatError, match="means mxfp4"):  # the same tensors under an NVFP4 declaration
        impnb.load_checkpoint(write_dir(tmp_path / "mo2", modelopt_config("NVFP4"), tensors))
    tensors[f"{m}.weight_scale_2"] = np.array(1.0, np.float32)
    with pytest.raises(FormatError, match="no per-tensor scale"):
        impnb.load_checkpoint(write_dir(tmp_path / "mo3", modelopt_config("MXFP4"), tensors))
