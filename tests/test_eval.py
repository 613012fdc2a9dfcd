"""impnb.eval: perplexity and top-1 agreement (on fake models with known answers, and on a tiny checkpoint)."""
from __future__ import annotations

import math

import numpy as np

from impnb.eval import compare_models, eval_text, score

from .quantize_helpers import write_tiny_llama


class _Uniform:
    """Every next token equally likely: perplexity is exactly the vocabulary size."""

    def __init__(self, vocab):
        self.vocab, self.calls = vocab, []

    def logits(self, ids):
        self.calls.append(len(ids))
        return np.zeros((len(ids), self.vocab), np.float32)


class _Oracle:
    """Knows the text: puts a huge logit on the true next token (perplexity -> 1) and argmax is the truth."""

    def __init__(self, ids, vocab):
        self.ids, self.vocab, self.pos = list(ids), vocab, 0

    def logits(self, window):
        t = len(window)
        out = np.zeros((t, self.vocab), np.float32)
        start = self.pos
        for i in range(t):
            out[i, self.ids[start + i + 1]] = 100.0
        self.pos += t
        return out


def test_uniform_model_has_perplexity_of_the_vocabulary():
    model = _Uniform(50)
    s = score(model, list(range(21)), ctx=8, label="u")
    assert s.count == 20 and model.calls == [8, 8, 4]  # windows of ctx + 1 ids overlap by one
    assert math.isclose(s.perplexity, 50.0, rel_tol=1e-12)


def test_perfect_model_and_argmax():
    ids = [3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5]
    s = score(_Oracle(ids, 10), ids, ctx=4, label="o")
    assert s.count == 10 and s.perplexity < 1.0001
    np.testing.assert_array_equal(s.argmax, ids[1:])


def test_eval_text_is_shipped():
    text = eval_text()
    assert text.startswith("The unanimous Declaration") and "shall not perish from the earth" in text
    assert len(text.split()) > 1500


def test_compare_models_on_a_tiny_checkpoint(tmp_path, rng):
    src = write_tiny_llama(tmp_path / "src", rng)
    same = compare_models(str(src), str(src), n_tokens=40, ctx=16, progress=False)
    assert same.agreement == 1.0 and same.scores[0].perplexity == same.scores[1].perplexity
    assert same.scores[0].count == 39 and "top-1 next-token agreement: 100.0%" in same.table()
