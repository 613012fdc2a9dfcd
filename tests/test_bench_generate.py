"""tools/bench_generate.py end to end on the CPU: a tiny llama GGUF through impnb.generate (fresh processes), a stub
llama-bench printing llama-bench's JSON, HF transformers on the same file when installed; the result file's schema,
the peer figures and ratios taken from the stub, and a missing or failing peer becoming a row with its reason."""
from __future__ import annotations

import importlib.util
import json
import os
import stat
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
import bench_generate  # noqa: E402
import bench_llama  # noqa: E402
from bench_report import ROW_KEYS  # noqa: E402

from .hybrid_gguf import _vocabulary  # noqa: E402

PROMPT, DECODE = 16, 4
STUB_PP, STUB_TG, STUB_TG_DEEP = 1234.5, 67.25, 51.0  # what the stub llama-bench reports


def write_tiny_llama_gguf(path: Path, vocab=320, hidden=32, layers=2, heads=4, kv_heads=2, ffn=64) -> None:
    """A llama GGUF with random float32 weights and a byte-level vocabulary, loadable by impnb and transformers."""
    import gguf
    rng = np.random.default_rng(0)
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("tiny-llama")
    w.add_block_count(layers)
    w.add_context_length(256)
    w.add_embedding_length(hidden)
    w.add_feed_forward_length(ffn)
    w.add_head_count(heads)
    w.add_head_count_kv(kv_heads)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_dimension_count(hidden // heads)
    w.add_vocab_size(vocab)
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    _vocabulary(w, vocab)
    hd = hidden // heads
    shapes = {"attn_q": (heads * hd, hidden), "attn_k": (kv_heads * hd, hidden), "attn_v": (kv_heads * hd, hidden),
              "attn_output": (hidden, heads * hd), "ffn_gate": (ffn, hidden), "ffn_up": (ffn, hidden),
              "ffn_down": (hidden, ffn)}
    w.add_tensor("token_embd.weight", (0.1 * rng.standard_normal((vocab, hidden))).astype(np.float32))
    w.add_tensor("output_norm.weight", np.ones(hidden, np.float32))
    for i in range(layers):
        w.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(hidden, np.float32))
        w.add_tensor(f"blk.{i}.ffn_norm.weight", np.ones(hidden, np.float32))
        for name, shape in shapes.items():
            w.add_tensor(f"blk.{i}.{name}.weight", (0.1 * rng.standard_normal(shape)).astype(np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


STUB = """#!{python}
import json, sys
a = sys.argv[1:]
opt = {{a[i]: a[i + 1] for i in range(0, len(a) - 1, 2)}}
open({log!r}, "a").write(json.dumps(a) + "\\n")
if {fail}:
    print("error: failed to load model", file=sys.stderr)
    sys.exit(1)
p, n, d = int(opt["-p"]), int(opt["-n"]), int(opt.get("-d", 0))
tests = []
if p:
    tests.append(dict(n_prompt=p, n_gen=0, n_depth=d, avg_ts={pp}, samples_ts=[{pp}], backends="CPU", n_threads=2))
if n:
    tests.append(dict(n_prompt=0, n_gen=n, n_depth=d, avg_ts={tg_deep} if d else {tg}, backends="CPU"))
print(json.dumps(tests))
"""


def write_stub(path: Path, log: Path, fail: bool = False) -> Path:
    path.write_text(STUB.format(python=sys.executable, log=str(log), fail=fail, pp=STUB_PP, tg=STUB_TG,
                                tg_deep=STUB_TG_DEEP))
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return path


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("bench") / "tiny-llama.gguf"
    write_tiny_llama_gguf(path)
    return path


def _hf_installed() -> bool:
    return all(importlib.util.find_spec(m) is not None for m in ("torch", "transformers"))


def _run(tmp_path, tiny, *extra) -> dict:
    out = tmp_path / "result.json"
    argv = ["--model", str(tiny), "--prompt-tokens", str(PROMPT), "--decode-tokens", str(DECODE), "--repeats", "1",
            "--cpu", "--out", str(out), *extra]
    assert bench_generate.main(argv) == 0
    return json.loads(out.read_text())


def test_end_to_end_schema_stub_llama_bench_and_hf(tmp_path, tiny, capsys):
    log = tmp_path / "llama-bench.log"
    stub = write_stub(tmp_path / "llama-bench", log)
    doc = _run(tmp_path, tiny, "--llama-bench", str(stub), "--readme")
    assert doc["device"] == "cpu" and doc["prompt_tokens"] == PROMPT and doc["decode_tokens"] == DECODE
    assert {"device", "commit", "date", "rows", "host", "command"} <= set(doc)
    for row in doc["rows"]:
        assert set(ROW_KEYS) <= set(row), set(ROW_KEYS) - set(row)
        assert (row["model"], row["file"], row["weights"]) == ("tiny-llama", "tiny-llama.gguf", "F32")
        assert (row["prompt_tokens"], row["decode_tokens"]) == (PROMPT, DECODE)
    engines = [(r["engine"], r["cold"]) for r in doc["rows"]]
    assert engines == [("impnb", True), ("impnb", False), ("llama.cpp", False), ("hf-eager", True),
                       ("hf-eager", False)]

    cold, warm, llama, hf_cold, hf_warm = doc["rows"]
    for row in (cold, warm):
        assert row["path"] == "impnb.generate" and row["backend"] == "reference" and row["reason"] is None
        assert row["prefill_tok_s"] > 0 and row["decode_tok_s"] > 0 and row["load_s"] > 0
        assert row["decode_timed_tokens"] == DECODE - 1
        assert abs(row["prefill_tok_s"] * row["prefill_s"] - PROMPT) < 1e-6 * PROMPT
        assert 0 <= row["untimed_s"] < row["wall_s"]

    assert (llama["prefill_tok_s"], llama["decode_tok_s"]) == (STUB_PP, STUB_TG)
    assert llama["decode_tok_s_after_prompt"] == STUB_TG_DEEP
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(calls) == 2 and all(c[c.index("-t") + 1] == str(os.cpu_count()) for c in calls)
    assert calls[0][calls[0].index("-p") + 1] == str(PROMPT) and calls[1][calls[1].index("-d") + 1] == str(PROMPT)
    assert warm["vs_llama_cpp"]["decode"] == pytest.approx(warm["decode_tok_s"] / STUB_TG)
    assert warm["vs_llama_cpp"]["prefill"] == pytest.approx(warm["prefill_tok_s"] / STUB_PP)

    if _hf_installed():
        for row in (hf_cold, hf_warm):
            assert row["reason"] is None and row["prefill_tok_s"] > 0 and row["decode_tok_s"] > 0
        assert hf_cold["load_s"] > 0 and hf_warm["load_s"] is None
        assert warm["vs_hf_eager"]["decode"] == pytest.approx(warm["decode_tok_s"] / hf_warm["decode_tok_s"])
        assert cold["vs_hf_eager"]["decode"] == pytest.approx(cold["decode_tok_s"] / hf_cold["decode_tok_s"])
        assert hf_warm["same_first_ids_as_impnb"] is True  # float32 both: the same model gives the same ids
    else:
        assert "No module named" in hf_warm["reason"] and hf_warm["decode_tok_s"] is None

    printed = capsys.readouterr().out
    assert "| tiny-llama | F32 | llama.cpp | CPU | warm (llama-bench) | - | 1234 | 67.2 |" in printed
    md = tmp_path / "again.md"
    assert bench_generate.main(["--readme", "--results", str(tmp_path / "result.json")]) == 0
    md.write_text(capsys.readouterr().out)
    assert md.read_text().count("\n| tiny-llama |") == len(doc["rows"])


def test_missing_llama_bench_and_absent_hf_become_rows_with_reasons(tmp_path, tiny, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(_no_torch(tmp_path)))  # the HF process finds no torch
    doc = _run(tmp_path, tiny, "--llama-bench", str(tmp_path / "no-such-llama-bench"))
    rows = {(r["engine"], r["cold"]): r for r in doc["rows"]}
    llama = rows["llama.cpp", False]
    assert llama["prefill_tok_s"] is None and "no-such-llama-bench: not an executable file" in llama["reason"]
    hf = rows["hf-eager", False]
    assert hf["decode_tok_s"] is None and hf["reason"] == "RuntimeError: torch is hidden for this test"
    assert rows["impnb", False]["vs_llama_cpp"] == {"prefill": None, "decode": None}
    assert rows["impnb", False]["decode_tok_s"] > 0


def _no_torch(tmp_path) -> Path:
    """A folder whose ``torch`` package fails to import (put first on the child's PYTHONPATH)."""
    fake = tmp_path / "no-torch" / "torch"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise RuntimeError('torch is hidden for this test')\n")
    return fake.parent


def test_failing_llama_bench_gives_its_last_error_line(tmp_path):
    stub = write_stub(tmp_path / "llama-bench", tmp_path / "log", fail=True)
    base = {k: None for k in ROW_KEYS} | dict(model="m", file="f.gguf", file_path=str(tmp_path / "f.gguf"))
    row = bench_llama.llama_row(base, str(stub), "", prompt=8, decode=4, repeats=1, gpu=False, threads=2,
                                timeout=60)
    assert row["reason"] == "llama-bench exited with status 1: error: failed to load model"
    assert row["decode_tok_s"] is None and row["engine"] == "llama.cpp"


def test_llama_bench_arguments_on_a_gpu_and_the_search_order(tmp_path, monkeypatch):
    assert bench_llama.bench_args("m.gguf", 512, 128, 3, gpu=True, threads=16) == [
        "-m", "m.gguf", "-p", "512", "-n", "128", "-r", "3", "-o", "json", "-ngl", "99", "-fa", "1"]
    stub = write_stub(tmp_path / "llama-bench", tmp_path / "log")
    monkeypatch.setenv("LLAMA_BENCH", str(stub))
    assert bench_llama.find_llama_bench(None) == (str(stub), "")
    assert bench_llama.find_llama_bench(str(tmp_path / "nope"))[0] is None  # an explicit path wins, even if bad


def test_bad_model_is_a_one_line_usage_error(tmp_path, capsys):
    assert bench_generate.main(["--model", str(tmp_path / "missing.gguf"), "--cpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: model ") and "no such file" in err and "\n" not in err
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF\x03\x00")
    assert bench_generate.main(["--model", str(bad), "--cpu"]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_a_disturbed_measurement_is_taken_again_and_the_quietest_attempt_kept(monkeypatch):
    waits = iter([40.0, 25.0, 30.0])
    monkeypatch.setattr(bench_generate, "wait_for_quiet", lambda pct, max_s: None)
    args = bench_generate.parse_args(["--busy-retries", "2", "--busy-pct", "10"])
    rows = bench_generate.with_retries(lambda: [{"model": "m", "engine": "impnb", "cold": True, "reason": "x",
                                                 "cpu_wait_pct": next(waits)}], args)
    assert [(r["cpu_wait_pct"], r["attempt"]) for r in rows] == [(25.0, 2)]
    args = bench_generate.parse_args([])  # no retries by default: the one attempt stands
    rows = bench_generate.with_retries(lambda: [{"model": "m", "engine": "impnb", "cold": True, "reason": "x",
                                                 "cpu_wait_pct": 90.0}], args)
    assert rows[0]["attempt"] == 1
