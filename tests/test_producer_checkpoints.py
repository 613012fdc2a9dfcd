"""Checkpoints written by the real producers (compressed-tensors 0.20 NVFP4 and MXFP4, nvidia-modelopt 0.47;
regenerate with tools/make_checkpoint_fixtures.py) load through impnb.load_checkpoint and dequantize to exactly
the producer's own float32 dequantization (expected.npz), itself a quantization of the original bf16 weights
(relative RMS error ~9 % for NVFP4, ~11 % for MXFP4)."""
from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest

import impnb
from impnb import FormatError, NVFP4Tensor
from impnb.loaders.mxfp4 import MXFP4Tensor
from impnb.reference.nvfp4 import nvfp4_dequantize

DATA = Path(__file__).parent / "data" / "checkpoints"
PRODUCERS = {"ct_nvfp4_tiny": ("nvfp4-compressed-tensors", "compressed-tensors"),
             "modelopt_nvfp4_tiny": ("nvfp4-modelopt", "modelopt")}
# NVFP4 on Gaussian weights: ~9 % relative RMS error (measured 8.7-9.8 % on these fixtures); a misread scale
# convention or nibble order gives > 100 %.
MAX_RELATIVE_RMS = 0.15
MAX_RELATIVE_RMS_MX = 0.2  # MXFP4 (power-of-two scale, group 32): measured 10.8-11.6 % on this fixture


def _expected(name):
    with np.load(DATA / name / "expected.npz") as z:
        return {k: z[k] for k in z.files}


def _relative_rms(a, b) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@pytest.mark.parametrize("name", sorted(PRODUCERS))
def test_producer_checkpoint_loads_exactly(name):
    scheme, layout = PRODUCERS[name]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # fused shards share their global scale: nothing to warn about
        ck = impnb.load_checkpoint(DATA / name)
    expected = _expected(name)
    modules = sorted(k for k in expected if not k.endswith(".original"))
    assert ck.quantization == scheme and ck.report.quantized == len(modules) == 7
    assert ck.config.arch == "llama" and ck.config.n_layers == 1
    assert ck.tensors["lm_head.weight"].dtype.name == "bfloat16"  # ignored / excluded by the producer
    for m in modules:
        t = ck.tensors[f"{m}.weight"]
        assert isinstance(t, NVFP4Tensor) and t.layout == layout and t.shape == expected[m].shape
        np.testing.assert_array_equal(nvfp4_dequantize(t), expected[m], err_msg=m)
        assert _relative_rms(nvfp4_dequantize(t), expected[f"{m}.original"]) < MAX_RELATIVE_RMS, m


def test_ct_mxfp4_checkpoint_loads_exactly():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ck = impnb.load_checkpoint(DATA / "ct_mxfp4_tiny")
    expected = _expected("ct_mxfp4_tiny")
    modules = sorted(k for k in expected if not k.endswith(".original"))
    assert ck.quantization == "mxfp4-compressed-tensors" and ck.report.quantized == len(modules) == 7
    for m in modules:
        t = ck.tensors[f"{m}.weight"]
        assert isinstance(t, MXFP4Tensor) and t.shape == expected[m].shape
        np.testing.assert_array_equal(t.dequantize(), expected[m], err_msg=m)
        assert _relative_rms(t.dequantize(), expected[f"{m}.original"]) < MAX_RELATIVE_RMS_MX, m


def test_misread_convention_would_be_caught():
    """The bound above discriminates: reading CT's divisor as a ModelOpt multiplier is off by gs^2."""
    ck = impnb.load_checkpoint(DATA / "ct_nvfp4_tiny")
    m = "model.layers.0.self_attn.q_proj"
    t = ck.tensors[f"{m}.weight"]
    wrong = NVFP4Tensor(t.packed, t.scales, t.global_scale, "modelopt")
    assert _relative_rms(nvfp4_dequantize(wrong), _expected("ct_nvfp4_tiny")[f"{m}.original"]) > 100


def _copy(name, tmp_path) -> Path:
    out = tmp_path / name
    shutil.copytree(DATA / name, out)
    return out


def test_ct_files_under_a_modelopt_config_are_refused(tmp_path):
    d = _copy("ct_nvfp4_tiny", tmp_path)
    config = json.loads((d / "config.json").read_text())
    config["quantization_config"]["quant_method"] = "modelopt"
    config["quantization_config"]["quant_algo"] = "NVFP4"
    (d / "config.json").write_text(json.dumps(config))
    with pytest.raises(FormatError, match="without"):
        impnb.load_checkpoint(d)


def test_modelopt_detected_from_hf_quant_config_alone(tmp_path):
    d = _copy("modelopt_nvfp4_tiny", tmp_path)
    config = json.loads((d / "config.json").read_text())
    del config["quantization_config"]
    (d / "config.json").write_text(json.dumps(config))
    assert impnb.load_checkpoint(d).quantization == "nvfp4-modelopt"
    (d / "hf_quant_config.json").unlink()
    with pytest.raises(FormatError, match="declares no quantization_config"):
        impnb.load_checkpoint(d)


def test_gpt_oss_mxfp4_matches_transformers(tmp_path):
    """gpt-oss `*_blocks` / `*_scales` dequantize as transformers' own gpt-oss converter does (its output is
    transposed to [E, K, N] for its MoE layout; ours keeps [E, N, K])."""
    torch = pytest.importorskip("torch")
    mxfp4 = pytest.importorskip("transformers.integrations.mxfp4")
    from impnb.loaders.safetensors import save_safetensors
    rng = np.random.default_rng(3)
    blocks = rng.integers(0, 256, (2, 8, 3, 16), dtype=np.uint8)  # [E, N, K/32, 16], K = 96
    scales = rng.integers(110, 140, (2, 8, 3), dtype=np.uint8)  # no 0xFF: transformers makes it inf, we NaN
    base = "model.layers.0.mlp.experts.down_proj"
    config = json.loads((DATA / "ct_nvfp4_tiny" / "config.json").read_text())
    config["quantization_config"] = {"quant_method": "mxfp4", "modules_to_not_convert": ["lm_head"]}
    tmp_path.joinpath("config.json").write_text(json.dumps(config))
    save_safetensors(tmp_path / "model.safetensors", {f"{base}_blocks": blocks, f"{base}_scales": scales})
    ours = impnb.load_checkpoint(tmp_path).tensors[base].dequantize()
    theirs = mxfp4.convert_moe_packed_tensors(torch.from_numpy(blocks), torch.from_numpy(scales),
                                              dtype=torch.float32)
    np.testing.assert_array_equal(ours, theirs.transpose(1, 2).numpy())


@pytest.mark.parametrize("name", sorted(PRODUCERS))
def test_producer_checkpoint_logits_match_transformers(name):
    """End to end: impnb's reference Model on the loaded NVFP4 checkpoint gives the logits of transformers'
    LlamaForCausalLM holding the producer's own dequantized weights (float32 both)."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from impnb.model import Model
    ck = impnb.load_checkpoint(DATA / name)
    ids = np.array([1, 5, 9, 33, 2, 60])
    model = Model(ck.config, ck.tensors)
    ours = model.forward(ids, model.new_cache(len(ids)))
    config = {k: v for k, v in ck.raw_config.items() if k != "quantization_config"}
    hf = transformers.LlamaForCausalLM(transformers.LlamaConfig(**config)).float().eval()
    state = {k: torch.from_numpy(np.asarray(v, dtype=np.float32)) for k, v in ck.tensors.items()
             if isinstance(v, np.ndarray) and k.endswith(".weight")}
    state.update({f"{m}.weight": torch.from_numpy(w) for m, w in _expected(name).items()
                  if not m.endswith(".original")})
    missing, unexpected = hf.load_state_dict(state, strict=False)
    assert not missing and not unexpected
    with torch.no_grad():
        theirs = hf(torch.from_numpy(ids)[None]).logits[0].numpy()
    # float32 both ways, different summation order: measured max |diff| 1.2e-7 on logits of magnitude ~0.34
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=2e-6)


def test_transformers_sharded_save_pretrained(tmp_path):
    """A sharded checkpoint with its index, as transformers' save_pretrained writes it, loads tensor for tensor."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    config = {k: v for k, v in json.loads((DATA / "ct_nvfp4_tiny" / "config.json").read_text()).items()
              if k != "quantization_config"}
    torch.manual_seed(0)
    hf = transformers.LlamaForCausalLM(transformers.LlamaConfig(**config)).to(torch.bfloat16)
    hf.save_pretrained(tmp_path, max_shard_size="8KB")
    assert (tmp_path / "model.safetensors.index.json").is_file()
    ck = impnb.load_checkpoint(tmp_path)
    assert len(ck.source.files) > 1 and ck.quantization is None and ck.config.arch == "llama"
    state = hf.state_dict()
    assert set(ck.tensors) == set(state)
    for name, t in state.items():
        assert ck.tensors[name].tobytes() == t.contiguous().view(torch.uint8).numpy().tobytes(), name
