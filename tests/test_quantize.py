"""python -m impnb.quantize on tiny random checkpoints written in-test: layouts, fused scales, ignore lists, lm_head,
determinism, and the round trip quantize -> impnb.load_checkpoint -> the op core's own quantization."""
from __future__ import annotations

import json

import ml_dtypes
import numpy as np
import pytest

import impnb
from impnb.formats import NVFP4Tensor
from impnb.loaders import load_checkpoint
from impnb.quantize import quantize_checkpoint
from impnb.quantize.__main__ import main as quantize_main
from impnb.reference.nvfp4 import nvfp4_dequantize, nvfp4_quantize

from .quantize_helpers import PROJ_SHAPES, dir_bytes, write_tiny_llama

LAYOUTS = ("compressed-tensors", "modelopt")
F32 = np.float32


@pytest.fixture
def src(tmp_path, rng):
    return write_tiny_llama(tmp_path / "src", rng, tied=True)


def _quantize(src, out, **kw):
    kw.setdefault("progress", False)
    quantize_checkpoint(str(src), out, **kw)
    return load_checkpoint(out)


def _source_weight(src, name):
    return np.asarray(load_checkpoint(src).tensors[name], F32)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_round_trip_equals_op_core_quantization(src, tmp_path, layout):
    ckpt = _quantize(src, tmp_path / "out", layout=layout)
    assert ckpt.quantization == f"nvfp4-{layout}"
    for i in range(2):
        p = f"model.layers.{i}."
        # unfused Linears: exactly the op core's bytes
        for m in ("self_attn.o_proj", "mlp.down_proj"):
            t, ref = ckpt.tensors[p + m + ".weight"], nvfp4_quantize(_source_weight(src, p + m + ".weight"), layout=layout)
            assert isinstance(t, NVFP4Tensor) and t.layout == layout
            np.testing.assert_array_equal(t.packed, ref.packed)
            np.testing.assert_array_equal(t.scales, ref.scales)
            assert F32(t.global_scale) == F32(ref.global_scale)
            np.testing.assert_array_equal(nvfp4_dequantize(t), nvfp4_dequantize(ref))
        # fused families: one global scale from the fused amax; bytes = op core on the concatenation, split by rows
        for family in (("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"), ("mlp.gate_proj", "mlp.up_proj")):
            fused = nvfp4_quantize(np.concatenate([_source_weight(src, p + m + ".weight") for m in family]),
                                   layout=layout)
            row = 0
            for m in family:
                t = ckpt.tensors[p + m + ".weight"]
                n = PROJ_SHAPES[m][0]
                assert F32(t.global_scale) == F32(fused.global_scale)
                np.testing.assert_array_equal(t.packed, fused.packed[row:row + n])
                np.testing.assert_array_equal(t.scales, fused.scales[row:row + n])
                row += n
    assert not ckpt.report.fused_scale_mismatch and not ckpt.report.unusable_global_scale


def test_fused_global_scale_comes_from_the_largest_shard(src, tmp_path):
    ckpt = _quantize(src, tmp_path / "out")
    p = "model.layers.0.self_attn."
    amax = max(np.abs(_source_weight(src, p + m + ".weight")).max() for m in ("q_proj", "k_proj", "v_proj"))
    expected = (F32(1) / F32(amax)) * F32(2688)  # compressed-tensors' 448*6/amax, as torch evaluates it
    assert F32(ckpt.tensors[p + "k_proj.weight"].global_scale) == expected


@pytest.mark.parametrize("layout", LAYOUTS)
def test_tensor_names_dtypes_and_shapes(src, tmp_path, layout):
    from impnb.loaders.safetensors import SafetensorsFile
    quantize_checkpoint(str(src), tmp_path / "out", layout=layout, progress=False)
    infos = SafetensorsFile(tmp_path / "out" / "model.safetensors").infos
    m = "model.layers.0.mlp.down_proj"  # [H=64, I=96]
    if layout == "compressed-tensors":
        expect = {"weight_packed": ("U8", [64, 48]), "weight_scale": ("F8_E4M3", [64, 6]),
                  "weight_global_scale": ("F32", [1])}
    else:
        expect = {"weight": ("U8", [64, 48]), "weight_scale": ("F8_E4M3", [64, 6]), "weight_scale_2": ("F32", [])}
    for suffix, (dtype, shape) in expect.items():
        info = infos[f"{m}.{suffix}"]
        assert (info.dtype, list(info.shape)) == (dtype, shape), suffix
    assert not any(n.endswith(("input_global_scale", "input_scale")) for n in infos)  # weight-only: no input scales
    assert infos["model.embed_tokens.weight"].dtype == "BF16" and "lm_head.weight" not in infos


def test_compressed_tensors_config_is_the_preset(src, tmp_path):
    quantize_checkpoint(str(src), tmp_path / "out", progress=False)
    cfg = json.loads((tmp_path / "out" / "config.json").read_text())
    qc = cfg["quantization_config"]
    assert qc["quant_method"] == "compressed-tensors" and qc["format"] == "nvfp4-pack-quantized"
    assert qc["ignore"] == ["lm_head"] and qc["quantization_status"] == "compressed"
    group = qc["config_groups"]["group_0"]
    assert group["targets"] == ["Linear"] and group["input_activations"] is None
    assert group["weights"] == {"dynamic": False, "group_size": 16, "num_bits": 4,
                                "scale_dtype": "torch.float8_e4m3fn", "strategy": "tensor_group", "symmetric": True,
                                "type": "float"}
    assert cfg["tie_word_embeddings"] is True and cfg["torch_dtype"] == "bfloat16"
    assert not (tmp_path / "out" / "hf_quant_config.json").exists()


def test_modelopt_files(src, tmp_path):
    quantize_checkpoint(str(src), tmp_path / "out", layout="modelopt", progress=False)
    hq = json.loads((tmp_path / "out" / "hf_quant_config.json").read_text())
    assert hq["producer"]["name"] == "modelopt"
    assert hq["quantization"] == {"quant_algo": "W4A16_NVFP4", "kv_cache_quant_algo": None, "group_size": 16,
                                  "exclude_modules": ["lm_head"]}
    qc = json.loads((tmp_path / "out" / "config.json").read_text())["quantization_config"]
    assert qc["quant_method"] == "modelopt" and qc["quant_algo"] == "W4A16_NVFP4" and qc["ignore"] == ["lm_head"]


@pytest.mark.parametrize("layout", LAYOUTS)
def test_deterministic_bytes(src, tmp_path, layout):
    a, b = tmp_path / "a", tmp_path / "b"
    quantize_checkpoint(str(src), a, layout=layout, progress=False)
    quantize_checkpoint(str(src), b, layout=layout, progress=False)
    assert dir_bytes(a) == dir_bytes(b)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_ignore_list_is_honoured(src, tmp_path, layout):
    ckpt = _quantize(src, tmp_path / "out", layout=layout, ignore=["model.layers.1.mlp", "re:.*0\\.self_attn\\.o_"])
    ignored = {"model.layers.1.mlp.gate_proj", "model.layers.1.mlp.up_proj", "model.layers.1.mlp.down_proj",
               "model.layers.0.self_attn.o_proj"}
    for m in ignored:
        w = ckpt.tensors[m + ".weight"]
        assert isinstance(w, np.ndarray) and w.dtype == ml_dtypes.bfloat16, m
        np.testing.assert_array_equal(w, _source_weight(src, m + ".weight").astype(ml_dtypes.bfloat16))
    assert isinstance(ckpt.tensors["model.layers.0.mlp.down_proj.weight"], NVFP4Tensor)
    written = ckpt.raw_config["quantization_config"]["ignore"]
    assert sorted(written) == sorted(ignored | {"lm_head"})


def test_lm_head_option_unties_a_tied_head(src, tmp_path):
    ckpt = _quantize(src, tmp_path / "out", quantize_lm_head=True)
    head = ckpt.tensors["lm_head.weight"]
    assert isinstance(head, NVFP4Tensor)
    ref = nvfp4_quantize(_source_weight(src, "model.embed_tokens.weight"))
    np.testing.assert_array_equal(head.packed, ref.packed)
    assert ckpt.tensors["model.embed_tokens.weight"].dtype == ml_dtypes.bfloat16
    assert ckpt.raw_config["tie_word_embeddings"] is False
    assert ckpt.raw_config["quantization_config"]["ignore"] == []


def test_untied_head_stays_dense_unless_asked(tmp_path, rng):
    src = write_tiny_llama(tmp_path / "src", rng, tied=False)
    dense = _quantize(src, tmp_path / "dense")
    assert dense.tensors["lm_head.weight"].dtype == ml_dtypes.bfloat16
    quant = _quantize(src, tmp_path / "quant", layout="modelopt", quantize_lm_head=True)
    assert isinstance(quant.tensors["lm_head.weight"], NVFP4Tensor)


def test_bf16_source_is_quantized_from_its_exact_values(tmp_path, rng):
    src = write_tiny_llama(tmp_path / "src", rng, dtype=ml_dtypes.bfloat16)
    ckpt = _quantize(src, tmp_path / "out")
    name = "model.layers.0.self_attn.o_proj.weight"
    ref = nvfp4_quantize(np.asarray(load_checkpoint(src).tensors[name]).astype(F32))
    np.testing.assert_array_equal(ckpt.tensors[name].packed, ref.packed)
    np.testing.assert_array_equal(ckpt.tensors["model.norm.weight"], load_checkpoint(src).tensors["model.norm.weight"])


def test_cli(src, tmp_path, capsys):
    assert quantize_main(["--model", str(src), "--out", str(tmp_path / "out"), "--layout", "modelopt",
                          "--ignore", "model.layers.0.*", "--quiet"]) == 0
    assert "14 Linears" not in capsys.readouterr().err  # 7 of them were ignored
    assert load_checkpoint(tmp_path / "out").quantization == "nvfp4-modelopt"


def test_refuses_a_quantized_source_and_bad_options(src, tmp_path):
    quantize_checkpoint(str(src), tmp_path / "q", progress=False)
    with pytest.raises(impnb.Unsupported, match="already quantized"):
        quantize_checkpoint(str(tmp_path / "q"), tmp_path / "qq", progress=False)
    with pytest.raises(ValueError, match="layout"):
        quantize_checkpoint(str(src), tmp_path / "x", layout="gptq", progress=False)
    with pytest.raises(FileNotFoundError, match="no such file or directory|not a file"):
        quantize_checkpoint(str(tmp_path / "missing"), tmp_path / "x", progress=False)


def test_hf_config_round_trips_through_model_config():
    from impnb.config import ModelConfig
    from impnb.quantize.hf_config import hf_config
    from .quantize_helpers import llama_config
    mc = ModelConfig.from_hf(llama_config(tied=True))
    assert ModelConfig.from_hf(hf_config(mc)) == mc


# ---- load and generate; W4A4 ---------------------------------------------------------------------------------
@pytest.mark.parametrize("layout", LAYOUTS)
def test_quantized_checkpoint_loads_and_generates(src, tmp_path, layout):
    quantize_checkpoint(str(src), tmp_path / "out", layout=layout, quantize_lm_head=True, progress=False)
    model = impnb.load_model(tmp_path / "out")
    source = impnb.load_model(src)
    out = impnb.generate(model, "w5 w9 w17", max_new_tokens=4, ignore_eos=True)
    assert len(out.ids) == 4 and all(0 <= i < 128 for i in out.ids)
    ids = source.tokenizer.encode("w5 w9 w17 w40")
    a, b = model.logits(ids), source.logits(ids)
    assert np.isfinite(a).all() and np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.9  # 4-bit, but the same model


@pytest.mark.parametrize("layout", LAYOUTS)
def test_w4a4_writes_calibrated_input_scales(src, tmp_path, layout):
    from impnb.quantize.calibrate import DEFAULT_PROMPTS, MAX_TOKENS
    from impnb.quantize.plan import input_scalar
    from impnb.w4a4 import record_input_amax
    ckpt = _quantize(src, tmp_path / "out", layout=layout, w4a4=True)
    source = impnb.load_model(src)
    with record_input_amax(source.model) as amax:
        for text in DEFAULT_PROMPTS:
            source.logits(source.tokenizer.encode(text)[:MAX_TOKENS])
    suffix = "input_global_scale" if layout == "compressed-tensors" else "input_scale"
    shape = (1,) if layout == "compressed-tensors" else ()
    for module in ("model.layers.0.self_attn.q_proj", "model.layers.1.self_attn.v_proj", "model.layers.1.mlp.down_proj"):
        stored = np.asarray(ckpt.tensors[f"{module}.{suffix}"])
        assert stored.dtype == np.float32 and stored.shape == shape
        assert F32(stored.reshape(-1)[0]) == F32(input_scalar(amax[module], layout))
    q, k = (ckpt.tensors[f"model.layers.0.self_attn.{m}_proj.{suffix}"] for m in ("q", "k"))
    assert np.array_equal(q, k)  # one input, one scale
    qc = ckpt.raw_config["quantization_config"]
    if layout == "compressed-tensors":
        assert qc["config_groups"]["group_0"]["input_activations"] == {
            "dynamic": "local", "group_size": 16, "num_bits": 4, "observer": "static_minmax",
            "scale_dtype": "torch.float8_e4m3fn", "strategy": "tensor_group", "symmetric": True, "type": "float"}
    else:
        assert qc["quant_algo"] == "NVFP4" and "input_activations" in qc["config_groups"]["group_0"]


class _FirstLinearInput:
    """Wraps a model's op table and keeps the input of the first linear call (layer 0's q/k/v GEMM)."""

    def __init__(self, model):
        self.inner, self.first = model.model.ops, None
        model.model.ops = self

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def linear(self, x, weight, bias=None):
        if self.first is None:
            self.first = np.array(x)
        return self.inner.linear(x, weight, bias)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_w4a4_quantizes_linear_inputs_with_the_stored_scale(src, tmp_path, layout):
    from impnb.reference.nvfp4_act import fake_quantize_nvfp4_activations
    from impnb.w4a4 import enable_w4a4
    ckpt = _quantize(src, tmp_path / "out", layout=layout, w4a4=True)
    ids = [1, 5, 9, 17, 33]
    plain = impnb.load_model(tmp_path / "out")
    spy_plain = _FirstLinearInput(plain)
    plain.logits(ids)
    manual = impnb.load_model(tmp_path / "out")
    spy_w4a4 = _FirstLinearInput(manual)  # installed first, so the W4A4 hook wraps it: it sees quantized inputs
    assert enable_w4a4(manual.model, ckpt.tensors) == 8  # per layer: qkv, o, gate_up, down
    manual_logits = manual.logits(ids)
    w4a4 = impnb.load_model(tmp_path / "out", w4a4=True)
    np.testing.assert_array_equal(w4a4.logits(ids), manual_logits)
    suffix = "input_global_scale" if layout == "compressed-tensors" else "input_scale"
    scalar = float(np.asarray(ckpt.tensors[f"model.layers.0.self_attn.q_proj.{suffix}"]).reshape(-1)[0])
    expected = fake_quantize_nvfp4_activations(spy_plain.first, scalar, layout=layout)
    np.testing.assert_array_equal(spy_w4a4.first, expected)
    assert not np.array_equal(spy_w4a4.first, spy_plain.first)
    out = impnb.generate(w4a4, "w5 w9", max_new_tokens=3, ignore_eos=True)
    assert len(out.ids) == 3


def test_w4a4_needs_input_scales(src, tmp_path):
    quantize_checkpoint(str(src), tmp_path / "out", progress=False)
    with pytest.raises(ValueError, match="input scales"):
        impnb.load_model(tmp_path / "out", w4a4=True)


def test_k_not_a_multiple_of_16_is_left_unquantized(tmp_path, rng):
    from impnb.quantize.plan import make_plan
    shapes = {"model.layers.0.mlp.down_proj.weight": (64, 40), "model.layers.0.mlp.up_proj.weight": (40, 64)}
    with pytest.warns(UserWarning, match="not a multiple of 16"):
        plan = make_plan(shapes)
    assert plan.quantize == ("model.layers.0.mlp.up_proj",)
    assert plan.ignore == ("lm_head", "model.layers.0.mlp.down_proj")


def test_rewriting_an_output_directory_removes_stale_weights_and_configs(src, tmp_path):
    quantize_checkpoint(str(src), tmp_path / "out", layout="modelopt", progress=False, max_shard_bytes=20_000)
    assert (tmp_path / "out" / "model.safetensors.index.json").exists()
    (tmp_path / "out" / "notes.txt").write_text("kept")
    quantize_checkpoint(str(src), tmp_path / "out", layout="compressed-tensors", progress=False)
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert "hf_quant_config.json" not in names and "model.safetensors.index.json" not in names
    assert [n for n in names if n.endswith(".safetensors")] == ["model.safetensors"] and "notes.txt" in names
    assert load_checkpoint(tmp_path / "out").quantization == "nvfp4-compressed-tensors"


@pytest.mark.parametrize("layout", LAYOUTS)
def test_sharded_output_reads_back_the_same(src, tmp_path, layout):
    one = _quantize(src, tmp_path / "one", layout=layout)
    many = _quantize(src, tmp_path / "many", layout=layout, max_shard_bytes=20_000)
    shards = sorted((tmp_path / "many").glob("model-*-of-*.safetensors"))
    assert len(shards) > 2 and not (tmp_path / "many" / "model.safetensors").exists()
    assert sorted(one.tensors) == sorted(many.tensors)
    for name, t in one.tensors.items():
        u = many.tensors[name]
        if isinstance(t, NVFP4Tensor):
            np.testing.assert_array_equal(t.packed, u.packed)
            np.testing.assert_array_equal(t.scales, u.scales)
            assert t.global_scale == u.global_scale
        else:
            np.testing.assert_array_equal(t, u)


def test_w4a4_refuses_unusable_input_scales(src, tmp_path):
    """A zero or non-finite stored scale is a clear error when W4A4 is enabled."""
    from impnb.w4a4 import enable_w4a4
    ckpt = _quantize(src, tmp_path / "out", w4a4=True)
    tensors = dict(ckpt.tensors)
    tensors["model.layers.1.mlp.down_proj.input_global_scale"] = np.zeros(1, F32)
    model = impnb.load_model(tmp_path / "out")
    with pytest.raises(ValueError, match="unusable input scales"):
        enable_w4a4(model.model, tensors)


def test_warns_when_a_fused_family_is_split():
    from impnb.quantize.plan import make_plan
    p = "model.layers.0.self_attn."
    shapes = {p + m + ".weight": (32, 64) for m in ("q_proj", "k_proj", "v_proj", "o_proj")}
    with pytest.warns(UserWarning, match="fused q_proj/k_proj/v_proj"):
        plan = make_plan(shapes, ["*.k_proj"])
    assert plan.groups == ((p + "o_proj",), (p + "q_proj", p + "v_proj"))
