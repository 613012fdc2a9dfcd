"""Golden dumps: record taps, save with a manifest, reload, diff in graph order, refuse stale versions, plot."""
from __future__ import annotations

import json

import numpy as np
import pytest

from impnb import golden

LAYERS = 3
PER_LAYER = ["attn_norm", "q", "k", "v", "attn_out", "ffn_norm", "ffn_out", "residual"]


def _record(rng, *, bump_from_layer=None, include=None):
    """A fake forward's taps in graph order; optionally a growing error from one layer on."""
    rec = golden.GoldenRecorder(include=include)
    x = rng.standard_normal((4, 8)).astype(np.float32)  # [T, D]
    rec.tap("embedding", None, x)
    for i in range(LAYERS):
        for name in PER_LAYER:
            y = x * (i + 1)
            if bump_from_layer is not None and i >= bump_from_layer:
                y = y + 0.01 * (i + 1 - bump_from_layer) * np.abs(y).max()
            rec.tap(name, i, y)
    rec.tap("final_norm", None, x)
    rec.tap("logits", None, np.concatenate([x, x], axis=1))
    return rec


def _save(tmp_path, name, rec, tokens=(1, 2, 3, 4)):
    path = tmp_path / name
    golden.save(str(path), rec, token_ids=list(tokens), backend="reference", model="fake", model_sha="abc")
    return str(path)


def test_roundtrip_keeps_order_values_and_manifest(tmp_path):
    rec = _record(np.random.default_rng(0))
    dump = golden.load(_save(tmp_path, "a.safetensors", rec))
    assert dump.manifest["taps"][0] == "embedding" and dump.manifest["taps"][-1] == "logits"
    assert dump.manifest["taps"][1] == "blk.0.attn_norm"
    assert {"format_version", "model_hash", "token_ids", "backend", "commit"} <= set(dump.manifest)
    for key, value in rec.tensors.items():
        np.testing.assert_array_equal(dump.tensors[key], value)


def test_identical_dumps_pass_and_the_first_bad_tap_is_named(tmp_path, capsys):
    a = _save(tmp_path, "a.safetensors", _record(np.random.default_rng(0)))
    same = _save(tmp_path, "same.safetensors", _record(np.random.default_rng(0)))
    bad = _save(tmp_path, "b.safetensors", _record(np.random.default_rng(0), bump_from_layer=1))
    assert golden.main(["diff", a, same]) == 0
    assert "all" in capsys.readouterr().out
    assert golden.main(["diff", a, bad]) == 1
    out = capsys.readouterr().out
    assert "first tap beyond max rel 0.001: blk.1.attn_norm" in out
    rows = golden.compare(golden.load(a), golden.load(bad))
    assert [r.key for r in rows] == golden.load(a).manifest["taps"]  # graph order
    assert rows[0].max_abs == 0.0 and rows[0].cosine == pytest.approx(1.0)


def test_stale_format_version_is_refused_with_a_hint(tmp_path):
    from safetensors.numpy import save_file
    path = str(tmp_path / "old.safetensors")
    manifest = {"format_version": golden.FORMAT_VERSION - 1, "taps": ["logits"], "token_ids": [1]}
    save_file({"logits": np.zeros((1, 2), np.float32)}, path, metadata={"impnb_golden": json.dumps(manifest)})
    with pytest.raises(ValueError, match="regenerate it with: python -m impnb.generate"):
        golden.load(path)


def test_different_prompts_cannot_be_compared(tmp_path, capsys):
    a = _save(tmp_path, "a.safetensors", _record(np.random.default_rng(0)))
    b = _save(tmp_path, "b.safetensors", _record(np.random.default_rng(0)), tokens=(9, 9, 9, 9))
    assert golden.main(["diff", a, b]) == 2
    assert "different token ids" in capsys.readouterr().err


def test_include_patterns_select_taps():
    rec = _record(np.random.default_rng(0), include=["blk.*.q", "logits"])
    assert list(rec.tensors) == ["blk.0.q", "blk.1.q", "blk.2.q", "logits"]


def test_plot_draws_error_growth(tmp_path):
    pytest.importorskip("matplotlib")
    a = _save(tmp_path, "a.safetensors", _record(np.random.default_rng(0)))
    b = _save(tmp_path, "b.safetensors", _record(np.random.default_rng(0), bump_from_layer=1))
    out = tmp_path / "growth.png"
    assert golden.main(["diff", a, b, "--plot", str(out)]) == 1
    assert out.stat().st_size > 1000 and out.read_bytes()[:4] == b"\x89PNG"
