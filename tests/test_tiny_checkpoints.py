"""Tiny transformers-made checkpoints load: every supported architecture, built by transformers with odd but legal
values (head_dim other than hidden / heads, a vocabulary that is not a multiple of 8, tied and untied embeddings,
``rope_scaling: null``, ``num_key_value_heads`` left out, a context of 16 or 64 positions under a sliding window of
thousands), loads through ``impnb.load_model`` and gives transformers' float32 logits. And the validation refuses
only what is broken: a context of one position loads (a prompt that does not fit is the one-line error), and a
tokenizer larger than the model's vocabulary loads with a warning, text whose ids fall past the vocabulary being the
one-line error at encode time."""
from __future__ import annotations

import json
import subprocess
import sys
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
tf = pytest.importorskip("transformers")

import impnb  # noqa: E402
from impnb.kvcache import ContextOverflow  # noqa: E402

pytestmark = pytest.mark.oracle

TOL = 3e-5   # float32 on both sides, as tests/test_model_oracle.py
MOE = dict(num_experts=4, num_experts_per_tok=2, moe_intermediate_size=16)
LINEAR = dict(num_hidden_layers=4, linear_num_key_heads=2, linear_num_value_heads=4, linear_key_head_dim=8,
              linear_value_head_dim=8, shared_expert_intermediate_size=24)
ARCHS = {   # transformers config class, architecture-specific keys that keep the model tiny
    "llama": (tf.LlamaConfig, {}), "mistral": (tf.MistralConfig, {}), "qwen2": (tf.Qwen2Config, {}),
    "qwen3": (tf.Qwen3Config, {}), "qwen3_moe": (tf.Qwen3MoeConfig, MOE),
    "gemma3": (tf.Gemma3TextConfig, {}),
    "gemma4": (tf.Gemma4TextConfig, dict(global_head_dim=16, hidden_size_per_layer_input=8)),
    "gpt_oss": (tf.GptOssConfig, dict(num_local_experts=4, num_experts_per_tok=2)),
    "qwen3_next": (tf.Qwen3NextConfig, dict(LINEAR, **MOE)), "qwen3_5": (tf.Qwen3_5TextConfig, LINEAR),
    "qwen3_5_moe": (tf.Qwen3_5MoeTextConfig, dict(LINEAR, **MOE)),
}


def _odd(cls, extra):
    """head_dim 16 for hidden 32 / 4 heads, vocab 61, tied, context 64; config.json then says rope_scaling null."""
    kw = dict(vocab_size=61, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, head_dim=16, max_position_embeddings=64, tie_word_embeddings=True)
    kw.update(extra)
    if "hidden_size_per_layer_input" in extra:
        kw["vocab_size_per_layer_input"] = kw["vocab_size"]
    return cls(**kw), lambda c: c.update(rope_scaling=None)


def _defaults(cls, extra):
    """num_key_value_heads left out of config.json (transformers' default read back: heads are chosen to fit it),
    head_dim from transformers' default or hidden / heads, untied, context 16, vocab 97."""
    default_kv = cls.__dataclass_fields__["num_key_value_heads"].default
    heads = max(4, default_kv or 4)
    kw = dict(vocab_size=97, hidden_size=64, intermediate_size=48, num_hidden_layers=2, num_attention_heads=heads,
              num_key_value_heads=default_kv or heads, max_position_embeddings=16, tie_word_embeddings=False)
    kw.update(extra)
    if "hidden_size_per_layer_input" in extra:
        kw.update(vocab_size_per_layer_input=97, global_head_dim=512)
    return cls(**kw), lambda c: c.pop("num_key_value_heads")


def _save(config, edit, path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.manual_seed(0)
        model = tf.AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()
        with torch.no_grad():
            for name, p in model.named_parameters():
                if any(s in name for s in ("norm", "A_log", "dt_bias", "sinks")):
                    p.add_(torch.randn_like(p) * 0.1)
        model.save_pretrained(path)
    raw = json.loads((path / "config.json").read_text())
    edit(raw)
    (path / "config.json").write_text(json.dumps(raw))
    return model


@pytest.mark.parametrize("variant", [_odd, _defaults], ids=["odd", "defaults"])
@pytest.mark.parametrize("arch", list(ARCHS))
def test_transformers_made_tiny_checkpoint_loads_and_matches(arch, variant, tmp_path):
    config, edit = variant(*ARCHS[arch])
    hf = _save(config, edit, tmp_path)
    model = impnb.load_model(tmp_path, backend="reference")
    ids = np.random.default_rng(0).integers(0, config.vocab_size, size=min(8, config.max_position_embeddings))
    ours = model.logits(ids)
    with torch.no_grad():
        theirs = hf(torch.tensor(ids[None])).logits[0].numpy()
    rel = float(np.abs(ours - theirs).max() / np.abs(theirs).max())
    assert ours.shape == (len(ids), config.vocab_size) and rel < TOL, f"{arch}: {rel:.2e}"


# ---- small contexts --------------------------------------------------------------------------------------------------
def _tiny_llama(path, context, vocab=61, **extra):
    config = tf.LlamaConfig(vocab_size=vocab, hidden_size=32, intermediate_size=48, num_hidden_layers=1,
                            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=context, **extra)
    return _save(config, lambda c: None, path)


def test_a_context_of_one_position_loads_and_a_longer_prompt_is_one_error(tmp_path):
    hf = _tiny_llama(tmp_path, context=1)
    model = impnb.load_model(tmp_path, backend="reference")
    assert model.config.max_position_embeddings == 1
    with torch.no_grad():
        theirs = hf(torch.tensor([[5]])).logits[0].numpy()
    np.testing.assert_allclose(model.logits([5]), theirs, rtol=0, atol=TOL * np.abs(theirs).max())
    with pytest.raises(ContextOverflow, match="context holds 1 positions"):
        impnb.generate(model, [5, 6], max_new_tokens=1)


def test_a_context_of_zero_is_refused(tmp_path):
    _tiny_llama(tmp_path, context=4)
    raw = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**raw, "max_position_embeddings": 0}))
    with pytest.raises(impnb.ConfigError, match="max_position_embeddings = 0"):
        impnb.load_model(tmp_path, backend="reference")


def test_generation_at_a_short_context_stops_at_its_end(tmp_path):
    _tiny_llama(tmp_path, context=4)
    out = impnb.generate(impnb.load_model(tmp_path, backend="reference"), [1, 2], max_new_tokens=10,
                         ignore_eos=True)
    assert len(out.ids) == 2 and out.stop_reason == "length"


# ---- a tokenizer larger than the model's vocabulary -----------------------------------------------------------------
def _word_tokenizer(path, n_tokens):
    from tokenizers import Tokenizer, models, pre_tokenizers
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, **{f"w{i}": i for i in range(3, n_tokens)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.add_special_tokens(["<s>", "</s>"])
    tok.save(str(path / "tokenizer.json"))
    (path / "tokenizer_config.json").write_text(json.dumps({"bos_token": "<s>", "eos_token": "</s>",
                                                            "add_bos_token": True}))


def test_a_tokenizer_larger_than_the_vocabulary_loads_and_refuses_only_text_past_it(tmp_path):
    _tiny_llama(tmp_path, context=64, vocab=61)
    _word_tokenizer(tmp_path, 500)
    with pytest.warns(UserWarning, match="500 tokens but the model's vocabulary holds 61"):
        model = impnb.load_model(tmp_path, backend="reference")
    assert model.logits([1, 7, 60]).shape == (3, 61)                            # ids work
    out = impnb.generate(model, "w7 w60", max_new_tokens=2, ignore_eos=True)     # text inside the vocabulary works
    assert out.prompt_ids == [1, 7, 60] and len(out.ids) == 2
    with pytest.raises(ValueError, match=r"encodes to token id\(s\) \[61, 499\] outside the model's vocabulary"):
        impnb.generate(model, "w7 w61 w499", max_new_tokens=1)


def test_the_generate_cli_reports_text_past_the_vocabulary_in_one_line(tmp_path):
    _tiny_llama(tmp_path, context=64, vocab=61)
    _word_tokenizer(tmp_path, 500)
    run = subprocess.run([sys.executable, "-m", "impnb.generate", "--model", str(tmp_path), "--prompt", "w7 w300",
                          "--max-new-tokens", "1", "--backend", "reference"], capture_output=True, text=True,
                         timeout=120)
    errors = [line for line in run.stderr.splitlines() if line.startswith("error:")]
    assert run.returncode == 2 and len(errors) == 1 and "[300]" in errors[0], run.stderr[-1000:]
    assert "Traceback" not in run.stderr
