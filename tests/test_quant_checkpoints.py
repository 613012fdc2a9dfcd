"""Quantized checkpoint directories built in tmp_path (compressed-tensors and ModelOpt NVFP4; MXFP4 is in
test_mxfp4_checkpoints.py), loaded through impnb.load_checkpoint: conventions, detection traps, and every
inconsistency that must be a FormatError rather than a misread (docs/numerics.md §3, §4)."""
from __future__ import annotations

import json

import numpy as np
import pytest

import impnb
from impnb import FormatError, NVFP4Tensor, Unsupported
from impnb.loaders.quant import FusedScaleWarning
from impnb.loaders.safetensors import save_safetensors
from impnb.loaders.shards import INDEX_NAME
from impnb.reference.nvfp4 import nvfp4_dequantize, nvfp4_quantize

LLAMA = dict(architectures=["LlamaForCausalLM"], model_type="llama", vocab_size=64, hidden_size=32,
             intermediate_size=64, num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=2,
             rms_norm_eps=1e-5, max_position_embeddings=128)
L0 = "model.layers.0"
ATTN = {"q_proj": (32, 32), "k_proj": (16, 32), "v_proj": (16, 32), "o_proj": (32, 32)}
MLP = {"gate_proj": (64, 32), "up_proj": (64, 32), "down_proj": (32, 64)}
FUSED = (("q_proj", "k_proj", "v_proj"), ("gate_proj", "up_proj"), ("o_proj",), ("down_proj",))


def _module(leaf):
    return f"{L0}.self_attn.{leaf}" if leaf in ATTN else f"{L0}.mlp.{leaf}"


def quantized_model(rng, layout="compressed-tensors", fused=True):
    """module -> NVFP4Tensor from nvfp4_quantize; fused shards share one global scale (quantized together)."""
    shapes = {**ATTN, **MLP}
    out = {}
    for family in (FUSED if fused else [(leaf,) for leaf in shapes]):
        ws = [rng.standard_normal(shapes[leaf]).astype(np.float32) * (1 + i) for i, leaf in enumerate(family)]
        t = nvfp4_quantize(np.concatenate(ws), layout=layout)
        row = 0
        for leaf, w in zip(family, ws):
            n = w.shape[0]
            out[_module(leaf)] = NVFP4Tensor(t.packed[row:row + n], t.scales[row:row + n], t.global_scale, layout)
            row += n
    return out


def ct_config(fmt="nvfp4-pack-quantized", group=16, ignore=("lm_head",)):
    weights = {"num_bits": 4, "type": "float", "strategy": "tensor_group", "group_size": group, "symmetric": True,
               "dynamic": False}
    return {**LLAMA, "quantization_config": {
        "quant_method": "compressed-tensors", "format": fmt, "quantization_status": "compressed",
        "config_groups": {"group_0": {"targets": ["Linear"], "format": fmt, "weights": weights}},
        "ignore": list(ignore)}}


def modelopt_config(algo="NVFP4", ignore=("lm_head",)):
    """config.json as ModelOpt writes it: the config_groups block looks like compressed-tensors (the trap)."""
    group = {"weights": {"num_bits": 4, "type": "float", "group_size": 16}, "targets": ["Linear"]}
    return {**LLAMA, "quantization_config": {"quant_method": "modelopt", "quant_algo": algo,
                                             "config_groups": {"group_0": group}, "ignore": list(ignore),
                                             "producer": {"name": "modelopt", "version": "0.47.0"}}}


def plain_tensors(rng):
    return {"model.embed_tokens.weight": rng.standard_normal((64, 32)).astype(np.float32),
            "lm_head.weight": rng.standard_normal((64, 32)).astype(np.float32),
            f"{L0}.input_layernorm.weight": np.ones(32, np.float32)}


def ct_tensors(model):
    tensors, dtypes = {}, {}
    for m, t in model.items():
        tensors.update({f"{m}.weight_packed": t.packed, f"{m}.weight_scale": t.scales,
                        f"{m}.weight_global_scale": np.array([t.global_scale], np.float32),
                        f"{m}.input_global_scale": np.array([1234.5], np.float32)})
        dtypes[f"{m}.weight_scale"] = "F8_E4M3"
    return tensors, dtypes


def modelopt_tensors(model):
    tensors, dtypes = {}, {}
    for m, t in model.items():
        t = t.to_layout("modelopt")
        tensors.update({f"{m}.weight": t.packed, f"{m}.weight_scale": t.scales,
                        f"{m}.weight_scale_2": np.array(t.global_scale, np.float32),
                        f"{m}.input_scale": np.array(0.01, np.float32)})
        dtypes[f"{m}.weight_scale"] = "F8_E4M3"
    return tensors, dtypes


def write_dir(path, config, tensors, dtypes=None, hf_quant=None):
    path.mkdir(exist_ok=True)
    if config is not None:
        (path / "config.json").write_text(json.dumps(config))
    if hf_quant is not None:
        (path / "hf_quant_config.json").write_text(json.dumps(hf_quant))
    save_safetensors(path / "model.safetensors", tensors, {"format": "pt"}, dtypes)
    return path


def ct_dir(tmp_path, rng, model=None, config=None, edit=None):
    model = model or quantized_model(rng)
    tensors, dtypes = ct_tensors(model)
    tensors.update(plain_tensors(rng))
    if edit:
        edit(tensors, dtypes)
    return write_dir(tmp_path / "ct", config or ct_config(), tensors, dtypes), model


# ------------------------------------------------------------------------------------------- NVFP4


def test_ct_nvfp4_loads_every_linear(tmp_path, rng):
    path, model = ct_dir(tmp_path, rng)
    ck = impnb.load_checkpoint(path)
    assert (ck.format, ck.quantization, ck.report.quantized) == ("safetensors", "nvfp4-compressed-tensors", 7)
    assert ck.config.arch == "llama" and ck.raw_config["model_type"] == "llama"
    for m, t in model.items():
        got = ck.tensors[f"{m}.weight"]
        assert isinstance(got, NVFP4Tensor) and got.layout == "compressed-tensors" and got.shape == t.shape
        assert got.packed.tobytes() == t.packed.tobytes() and got.scales.tobytes() == t.scales.tobytes()
        assert np.array_equal(nvfp4_dequantize(got), nvfp4_dequantize(t))
        assert ck.tensors[f"{m}.input_global_scale"].tolist() == [1234.5]  # kept raw for the W4A4 path
        assert f"{m}.weight_packed" not in ck.tensors
    gs = {ck.tensors[_module(leaf) + ".weight"].global_scale for leaf in ("q_proj", "k_proj", "v_proj")}
    assert len(gs) == 1  # fused q/k/v share the global scale
    assert ck.tensors["lm_head.weight"].dtype == np.float32  # ignored: left unquantized


@pytest.mark.parametrize("writer", ["impnb", "safetensors-package"])
def test_modelopt_matches_ct_values(tmp_path, rng, writer):
    """Same bytes, reciprocal scalar (ws2 = 1/gs): dequantized weights agree within 2 ulp; the config_groups
    block that looks like compressed-tensors must not fool the dispatcher."""
    model = quantized_model(rng)
    tensors, dtypes = modelopt_tensors(model)
    tensors.update(plain_tensors(rng))
    path = tmp_path / "mo"
    if writer == "impnb":
        write_dir(path, modelopt_config(), tensors, dtypes)
    else:
        torch = pytest.importorskip("torch")
        save_file = pytest.importorskip("safetensors.torch").save_file
        write_dir(path, modelopt_config(), {"placeholder": np.zeros(1, np.float32)})
        as_torch = {k: torch.from_numpy(np.array(v)) for k, v in tensors.items()}
        for k in dtypes:
            as_torch[k] = as_torch[k].view(torch.float8_e4m3fn)
        save_file(as_torch, path / "model.safetensors")
    ck = impnb.load_checkpoint(path)
    assert ck.quantization == "nvfp4-modelopt" and ck.report.quantized == 7
    for m, t in model.items():
        got = ck.tensors[f"{m}.weight"]
        assert got.layout == "modelopt" and got.global_scale == np.float32(1) / np.float32(t.global_scale)
        np.testing.assert_array_max_ulp(nvfp4_dequantize(got), nvfp4_dequantize(t), maxulp=2)
        assert ck.tensors[f"{m}.input_scale"].shape == ()


def test_modelopt_detected_from_hf_quant_config(tmp_path, rng):
    tensors, dtypes = modelopt_tensors(quantized_model(rng))
    hq = {"producer": {"name": "modelopt", "version": "0.47.0"},
          "quantization": {"quant_algo": "NVFP4", "group_size": 16, "exclude_modules": ["lm_head"]}}
    ck = impnb.load_checkpoint(write_dir(tmp_path / "mo", LLAMA, tensors, dtypes, hf_quant=hq))
    assert ck.quantization == "nvfp4-modelopt"


@pytest.mark.parametrize("bad", [0.0, np.inf, np.nan])
def test_unusable_global_scale_warns_and_gives_zeros(tmp_path, rng, bad):
    victim = _module("o_proj")

    def edit(tensors, dtypes):
        tensors[f"{victim}.weight_global_scale"] = np.array([bad], np.float32)
    with pytest.warns(RuntimeWarning, match="contribute zeros"):
        path, _ = ct_dir(tmp_path, rng, edit=edit)
        ck = impnb.load_checkpoint(path)
    assert ck.report.unusable_global_scale == [victim]
    assert not np.any(nvfp4_dequantize(ck.tensors[f"{victim}.weight"]))
    assert np.any(nvfp4_dequantize(ck.tensors[_module("q_proj") + ".weight"]))


def test_modelopt_zero_weight_scale_2_warns(tmp_path, rng):
    tensors, dtypes = modelopt_tensors(quantized_model(rng))
    tensors[_module("down_proj") + ".weight_scale_2"] = np.array(0.0, np.float32)
    with pytest.warns(RuntimeWarning, match="contribute zeros"):
        ck = impnb.load_checkpoint(write_dir(tmp_path / "mo", modelopt_config(), tensors, dtypes))
    assert ck.report.unusable_global_scale == [_module("down_proj")]


def _edit_ct(tmp_path, rng, edit, config=None, match=None, error=FormatError):
    path, _ = ct_dir(tmp_path, rng, edit=edit, config=config)
    with pytest.raises(error, match=match):
        impnb.load_checkpoint(path)


def test_negative_global_scale(tmp_path, rng):
    m = _module("q_proj")
    _edit_ct(tmp_path, rng, lambda t, d: t.update({f"{m}.weight_global_scale": np.array([-3.0], np.float32)}),
             match="negative")


def test_missing_global_scale(tmp_path, rng):
    _edit_ct(tmp_path, rng, lambda t, d: t.pop(_module("k_proj") + ".weight_global_scale"),
             match="without its global scale")


def test_missing_weight_scale(tmp_path, rng):
    m = _module("k_proj")
    _edit_ct(tmp_path, rng, lambda t, d: (t.pop(f"{m}.weight_scale"), d.pop(f"{m}.weight_scale")),
             match="without the rest")


@pytest.mark.parametrize("dtype, match", [("U8", "means mxfp4"), ("F8_E8M0", "means mxfp4"), (None, "no FP4")])
def test_wrong_scale_dtype(tmp_path, rng, dtype, match):
    """U8 / E8M0 scale bytes read as E4M3 would be silently wrong."""
    m = _module("v_proj")

    def edit(tensors, dtypes):
        if dtype is None:
            tensors[f"{m}.weight_scale"] = tensors[f"{m}.weight_scale"].astype(np.float16)
            del dtypes[f"{m}.weight_scale"]
        else:
            dtypes[f"{m}.weight_scale"] = dtype
    _edit_ct(tmp_path, rng, edit, match=match)


@pytest.mark.parametrize("reshape", ["group8", "transposed", "fewer_rows"])
def test_mismatched_shape_pair(tmp_path, rng, reshape):
    """The scale shape must be [N, K/16] for packed [N, K/2]."""
    m = _module("o_proj")  # packed [32, 16], scales [32, 2]

    def edit(tensors, dtypes):
        s = tensors[f"{m}.weight_scale"]
        tensors[f"{m}.weight_scale"] = {"group8": np.concatenate([s, s], axis=1), "transposed": s.T.copy(),
                                        "fewer_rows": s[:-1]}[reshape]
    _edit_ct(tmp_path, rng, edit, match="group 8|does not pair")


def test_ignored_module_must_not_be_packed(tmp_path, rng):
    _edit_ct(tmp_path, rng, None, config=ct_config(ignore=["lm_head", "re:.*self_attn\\.q_proj$"]),
             match="ignore list leaves it unquantized")


def test_modelopt_ignored_module_glob(tmp_path, rng):
    tensors, dtypes = modelopt_tensors(quantized_model(rng))
    with pytest.raises(FormatError, match="ignore list"):
        impnb.load_checkpoint(write_dir(tmp_path / "mo", modelopt_config(ignore=["*.mlp.up_proj"]), tensors, dtypes))


def test_fused_shards_with_different_global_scales_warn(tmp_path, rng):
    path, _ = ct_dir(tmp_path, rng, model=quantized_model(rng, fused=False))
    with pytest.warns(FusedScaleWarning, match="fused shards"):
        ck = impnb.load_checkpoint(path)
    assert sorted(ck.report.fused_scale_mismatch) == [f"{L0}.mlp", f"{L0}.self_attn"]


def test_per_expert_and_stacked_experts(tmp_path, rng):
    experts = {f"{L0}.mlp.experts.{e}.{leaf}": nvfp4_quantize(rng.standard_normal((16, 32)).astype(np.float32))
               for e in range(4) for leaf in ("gate_proj", "up_proj", "down_proj")}
    tensors, dtypes = ct_tensors(experts)
    with pytest.warns(FusedScaleWarning):  # each expert's gate/up were quantized apart
        ck = impnb.load_checkpoint(write_dir(tmp_path / "ct", ct_config(), tensors, dtypes))
    assert ck.report.quantized == 12 and len(ck.report.fused_scale_mismatch) == 4
    assert all(isinstance(ck.tensors[m + ".weight"], NVFP4Tensor) for m in experts)
    stacked = [nvfp4_quantize(rng.standard_normal((16, 32)).astype(np.float32), layout="modelopt") for _ in range(3)]
    m = f"{L0}.mlp.experts.down_proj"
    tensors = {f"{m}.weight": np.stack([t.packed for t in stacked]), f"{m}.weight_scale": np.stack(
        [t.scales for t in stacked]), f"{m}.weight_scale_2": np.array([t.global_scale for t in stacked], np.float32)}
    ck = impnb.load_checkpoint(write_dir(tmp_path / "mo", modelopt_config(), tensors, {f"{m}.weight_scale": "F8_E4M3"}))
    got = ck.tensors[f"{m}.weight"]
    assert isinstance(got, tuple) and len(got) == 3
    for g, t in zip(got, stacked):
        assert np.array_equal(nvfp4_dequantize(g), nvfp4_dequantize(t))


def test_sharded_ct_checkpoint(tmp_path, rng):
    """A module's packed bytes and its scales in different shards, found through the index."""
    model = quantized_model(rng)
    tensors, dtypes = ct_tensors(model)
    path = tmp_path / "sharded"
    path.mkdir()
    (path / "config.json").write_text(json.dumps(ct_config()))
    first = {k: v for k, v in tensors.items() if k.endswith(".weight_packed")}
    second = {k: v for k, v in tensors.items() if k not in first}
    save_safetensors(path / "model-00001-of-00002.safetensors", first)
    save_safetensors(path / "model-00002-of-00002.safetensors", second, dtypes=dtypes)
    weight_map = {k: "model-00001-of-00002.safetensors" if k in first else "model-00002-of-00002.safetensors"
                  for k in tensors}
    (path / INDEX_NAME).write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    ck = impnb.load_checkpoint(path)
    assert ck.report.quantized == 7 and ck.quantization == "nvfp4-compressed-tensors"
    with pytest.raises(FormatError, match="weight scale without"):  # one shard alone is incomplete
        impnb.load_checkpoint(path / "model-00002-of-00002.safetensors")


# ------------------------------------------------------------------------------------------- detection


def test_packed_tensors_without_quantization_config(tmp_path, rng):
    tensors, dtypes = ct_tensors(quantized_model(rng))
    with pytest.raises(FormatError, match="declares no quantization_config"):
        impnb.load_checkpoint(write_dir(tmp_path / "x", LLAMA, tensors, dtypes))


def test_modelopt_tensors_in_ct_checkpoint(tmp_path, rng):
    tensors, dtypes = modelopt_tensors(quantized_model(rng))
    with pytest.raises(FormatError, match="without"):
        impnb.load_checkpoint(write_dir(tmp_path / "x", ct_config(), tensors, dtypes))


@pytest.mark.parametrize("qc", [{"quant_method": "gptq", "bits": 4},
                                {"quant_method": "compressed-tensors", "format": "float-quantized",
                                 "config_groups": {"g": {"weights": {"num_bits": 8}}}},
                                {"quant_method": "modelopt", "quant_algo": "FP8"}])
def test_unsupported_schemes_say_so(tmp_path, rng, qc):
    with pytest.raises(Unsupported, match="not supported"):
        impnb.load_checkpoint(write_dir(tmp_path / "u", {**LLAMA, "quantization_config": qc}, plain_tensors(rng)))


def test_unquantized_checkpoint(tmp_path, rng):
    path = write_dir(tmp_path / "p", LLAMA, plain_tensors(rng))
    for ck in (impnb.load_checkpoint(path), impnb.load_checkpoint(path / "model.safetensors")):
        assert ck.quantization is None and ck.tensors["lm_head.weight"].shape == (64, 32)
        assert ck.config.arch == "llama" and ck.metadata == {"format": "pt"}
        assert "quantization=None" in repr(ck)


def test_not_a_checkpoint(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FormatError, match="no \\*.safetensors"):
        impnb.load_checkpoint(tmp_path / "empty")
    (tmp_path / "junk.bin").write_bytes(b"\x01\x02")
    with pytest.raises(FormatError, match="neither GGUF"):
        impnb.load_checkpoint(tmp_path / "junk.bin")
    with pytest.raises(Unsupported, match="pickle"):
        impnb.load_checkpoint(tmp_path)
    (tmp_path / "config.json").write_text('{"a": 1, "a": 2}')
    (tmp_path / "x.safetensors").write_bytes(b"\x02" + b"\0" * 7 + b"{}")
    with pytest.raises(FormatError, match="config.json .*duplicate key"):
        impnb.load_checkpoint(tmp_path)
    with pytest.raises(FileNotFoundError):
        impnb.load_checkpoint(tmp_path / "absent")


def test_awq_pre_quant_scale_is_reported(tmp_path, rng):
    tensors, dtypes = modelopt_tensors(quantized_model(rng))
    m = _module("down_proj")
    tensors[f"{m}.pre_quant_scale"] = np.ones(64, np.float32)
    with pytest.warns(RuntimeWarning, match="pre_quant_scale"):
        ck = impnb.load_checkpoint(write_dir(tmp_path / "awq", modelopt_config("NVFP4_AWQ"), tensors, dtypes))
    assert ck.report.pre_quant_scale == [m] and ck.tensors[f"{m}.pre_quant_scale"].shape == (64,)


def test_unknown_architecture_says_what_is_supported(tmp_path, rng):
    config = {**LLAMA, "architectures": ["FooForCausalLM"], "model_type": "foo"}
    with pytest.raises((ValueError, Unsupported), match="supported: .*llama"):
        impnb.load_checkpoint(write_dir(tmp_path / "foo", config, plain_tensors(rng)))
