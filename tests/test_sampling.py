"""Sampling: each filter's math on hand-computed cases, banned tokens on the greedy path, seeded determinism,
stop tokens / stop strings, streaming, and no state carried from one generation to the next."""
from __future__ import annotations

import types

import numpy as np
import pytest

from impnb import ops
from impnb.generation import generate
from impnb.reference import sampling as ref
from impnb.sampling import Sampler, SamplingParams

NEG_INF = -np.inf


def _log(p):
    return np.log(np.asarray(p, dtype=np.float64)).astype(np.float32)


# ---- the ops ------------------------------------------------------------------------------------------------------

def test_repetition_penalty_divides_positive_multiplies_negative_once_per_id():
    x = np.array([[2.0, -2.0, 3.0, 0.0]], np.float32)
    out = ref.repetition_penalty(x, [0, 1, 1, 1, 3], 2.0)  # id 1 three times: penalised once
    np.testing.assert_array_equal(out, [[1.0, -4.0, 3.0, 0.0]])
    np.testing.assert_array_equal(x, [[2.0, -2.0, 3.0, 0.0]])  # input untouched


def test_ban_tokens_sets_minus_inf_and_rejects_out_of_vocab_ids():
    out = ref.ban_tokens(np.zeros((2, 5), np.float32), [4, 1])
    assert np.isneginf(out[:, [1, 4]]).all() and (out[:, [0, 2, 3]] == 0).all()
    with pytest.raises(ValueError, match=r"outside the vocabulary \[0, 5\)"):
        ref.ban_tokens(np.zeros(5, np.float32), [5])


def test_temperature_divides_logits():
    out = ref.filter_logits(np.array([1.0, -3.0, 0.5], np.float32), temperature=0.5)
    np.testing.assert_array_equal(out, [2.0, -6.0, 1.0])


def test_top_k_keeps_exactly_k_and_breaks_ties_toward_lower_id():
    x = np.array([1.0, 5.0, 3.0, 5.0, 3.0], np.float32)
    out = ref.filter_logits(x, top_k=3)
    np.testing.assert_array_equal(np.isfinite(out), [False, True, True, True, False])


def test_top_p_keeps_smallest_prefix_reaching_the_mass():
    x = _log([0.05, 0.5, 0.15, 0.3])  # stable order: 1 (0.5), 3 (0.3), 2 (0.15), 0 (0.05)
    assert np.isfinite(ref.filter_logits(x, top_p=0.75)).tolist() == [False, True, False, True]
    assert np.isfinite(ref.filter_logits(x, top_p=0.85)).tolist() == [False, True, True, True]
    assert np.isfinite(ref.filter_logits(x, top_p=0.1)).tolist() == [False, True, False, False]  # first survives


def test_min_p_cuts_below_fraction_of_the_top_probability():
    x = _log([0.4, 0.1, 0.3, 0.2])
    assert np.isfinite(ref.filter_logits(x, min_p=0.45)).tolist() == [True, False, True, True]
    assert np.isfinite(ref.filter_logits(x, min_p=0.6)).tolist() == [True, False, True, False]


def test_filters_apply_in_order_on_renormalised_survivors():
    x = _log([0.4, 0.3, 0.2, 0.1])
    # top-k=2 leaves {0: 0.4, 1: 0.3} -> renormalised 4/7, 3/7; top-p 0.5 then keeps only id 0
    assert np.isfinite(ref.filter_logits(x, top_k=2, top_p=0.5)).tolist() == [True, False, False, False]
    # without top-k, top-p 0.5 needs ids 0 and 1 (0.4 < 0.5)
    assert np.isfinite(ref.filter_logits(x, top_p=0.5)).tolist() == [True, True, False, False]


def test_sample_token_inverts_the_cdf_in_id_order_and_skips_filtered_ids():
    x = np.concatenate([_log([0.25, 0.25, 0.5]), [NEG_INF]]).astype(np.float32)
    draws = {0.0: 0, 0.2499: 0, 0.25: 1, 0.4999: 1, 0.5: 2, 0.999999: 2}
    for u, want in draws.items():
        assert int(ref.sample_token(x, u)) == want, u
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        ref.sample_token(x, 1.0)


def test_sample_token_frequencies_follow_the_softmax(rng):
    p = np.array([0.1, 0.6, 0.0, 0.3])
    rows = 20000
    x = np.broadcast_to(np.where(p > 0, np.log(np.maximum(p, 1e-300)), NEG_INF).astype(np.float32), (rows, 4))
    freq = np.bincount(ref.sample_token(x, rng.random(rows)), minlength=4) / rows
    np.testing.assert_allclose(freq, p, atol=0.015)  # 4 sigma of a binomial at n=20000 is < 0.015


def test_argmax_picks_lowest_id_on_ties_and_refuses_nan():
    assert int(ref.argmax_token(np.array([1.0, 7.0, 7.0, NEG_INF], np.float32))) == 1
    with pytest.raises(ValueError, match="NaN"):
        ref.argmax_token(np.array([1.0, np.nan], np.float32))


def test_all_tokens_filtered_is_a_clear_error():
    with pytest.raises(ValueError, match="no finite logit"):
        ref.sample_token(np.full(3, NEG_INF, np.float32), 0.5)


def test_ops_dispatch_runs_the_reference():
    x = np.array([0.0, 2.0, 1.0], np.float32)
    assert int(ops.argmax_token(x, backend="reference")) == 1


# ---- the Sampler --------------------------------------------------------------------------------------------------

def test_params_validation_names_every_problem():
    with pytest.raises(ValueError, match="top_p.*min_p"):
        SamplingParams(top_p=0.0, min_p=2.0)


def test_banned_token_honoured_on_the_greedy_path():
    logits = np.array([0.0, 9.0, 5.0, 1.0], np.float32)  # argmax 1 is banned
    sampler = Sampler(SamplingParams(temperature=0.0, banned_tokens=(1,)), 4)
    assert sampler.next_token(logits) == 2


def test_banned_token_honoured_when_sampling(rng):
    logits = np.array([0.0, 9.0, 5.0, 1.0], np.float32)
    sampler = Sampler(SamplingParams(temperature=1.5, banned_tokens=(1,), seed=3), 4)
    assert 1 not in {sampler.next_token(logits) for _ in range(200)}


def test_every_token_banned_is_an_error_not_a_banned_token():
    sampler = Sampler(SamplingParams(banned_tokens=(0, 1)), 2)
    with pytest.raises(ValueError, match="banned"):
        sampler.next_token(np.zeros(2, np.float32))


def test_seed_reproduces_the_draws_and_different_seeds_differ(rng):
    logits = rng.standard_normal(64).astype(np.float32)

    def draws(seed):
        s = Sampler(SamplingParams(temperature=1.0, top_p=0.95, seed=seed), 64)
        return [s.next_token(logits) for _ in range(30)]
    assert draws(7) == draws(7)
    assert draws(7) != draws(8)


def test_repetition_penalty_uses_prompt_and_generated_ids():
    logits = np.array([3.0, 2.9, -1.0], np.float32)
    s = Sampler(SamplingParams(repetition_penalty=1.5), 3, history=[0])
    assert s.next_token(logits) == 1  # 3.0 / 1.5 = 2.0 < 2.9
    assert s.next_token(logits) == 0  # now both are penalised: 2.0 vs 2.9 / 1.5


# ---- generate() on a fake bigram model ----------------------------------------------------------------------------

V, EOS = 8, 7
ALPHABET = "abcdefg"  # ids 0..6; 7 is EOS


class _Tok:
    def encode(self, text):
        return [ALPHABET.index(c) for c in text]

    def decode(self, ids):
        return "".join(ALPHABET[i] if i < 7 else "" for i in ids)


class _Cache:
    def __init__(self, max_tokens):
        self.max_tokens, self.length = max_tokens, 0


class FakeModel:
    """Next token = (last + 1) mod 8, with the EOS id reached after 'g'."""

    def __init__(self):
        self.config = types.SimpleNamespace(vocab_size=V, max_position_embeddings=12)
        self.tokenizer, self.stop_ids = _Tok(), {EOS}
        self.calls = 0

    def new_cache(self, max_tokens):
        return _Cache(max_tokens)

    def forward(self, ids, cache, last_only=False):
        self.calls += 1
        cache.length += len(ids)
        assert cache.length <= cache.max_tokens
        logits = np.zeros((len(ids), V), np.float32)
        logits[np.arange(len(ids)), (np.asarray(ids) + 1) % V] = 10.0
        return logits[-1:] if last_only else logits


def test_generate_greedy_stops_on_eos_which_is_in_ids_not_text():
    out = generate(FakeModel(), "d", max_new_tokens=10)
    assert out.ids == [4, 5, 6, EOS] and out.text == "efg" and out.stop_reason == "eos"
    assert out.prompt_ids == [3] and out.timings.prefill_tokens == 1 and out.timings.decode_tokens == 3


def test_ignore_eos_runs_to_max_new_tokens():
    out = generate(FakeModel(), [5], max_new_tokens=5, ignore_eos=True)
    assert out.ids == [6, 7, 0, 1, 2] and out.stop_reason == "length"


def test_stop_string_truncates_text_and_stream_never_shows_it():
    pieces = []
    out = generate(FakeModel(), "a", max_new_tokens=10, stop=["de"], stream=pieces.append)
    assert out.text == "bc" and out.stop_reason == "stop" and "".join(pieces) == "bc"


def test_stream_pieces_add_up_to_the_text():
    pieces = []
    out = generate(FakeModel(), "a", max_new_tokens=4, stream=pieces.append)
    assert "".join(pieces) == out.text == "bcde" and len(pieces) == 4


def test_extra_stop_token_id_and_banned_token_in_generate():
    out = generate(FakeModel(), "a", max_new_tokens=6, stop=[3])
    assert out.ids == [1, 2, 3] and out.stop_reason == "eos"
    banned = generate(FakeModel(), "a", max_new_tokens=1, banned_tokens=[1])
    assert banned.ids != [1]


def test_no_state_leaks_between_generations():
    model = FakeModel()
    first = generate(model, "a", max_new_tokens=5, temperature=0.9, seed=11, return_logits=True)
    second = generate(model, "a", max_new_tokens=5, temperature=0.9, seed=11, return_logits=True)
    assert first.ids == second.ids and np.array_equal(first.logits, second.logits)


def test_bad_prompts_are_clear_errors():
    with pytest.raises(ValueError, match="empty"):
        generate(FakeModel(), [], max_new_tokens=2)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        generate(FakeModel(), [99], max_new_tokens=2)
    with pytest.raises(ValueError, match="max_new_tokens"):
        generate(FakeModel(), [1], max_new_tokens=-1)


# ---- reasoning / channel split (the thought channel leaked into the answer) ------------------------------

@pytest.mark.parametrize("text, reasoning, content", [
    ("Paris.", "", "Paris."),
    ("<|channel>thought\nName: Raphael<channel|>Nice to meet you, Raphael!", "Name: Raphael",
     "Nice to meet you, Raphael!"),
    ("<|channel>thought\nstep 1<|channel>final\nParis.", "step 1", "Paris."),
    ("<|channel|>analysis<|message|>User asks capital.<|end|><|start|>assistant<|channel|>final<|message|>Paris."
     "<|return|>", "User asks capital.", "Paris."),
    ("<think>2+2 is 4</think>\n\nThe answer is 4.", "2+2 is 4", "The answer is 4."),
    ("2+2 is 4</think>The answer is 4.", "2+2 is 4", "The answer is 4."),  # the prompt opened <think>
])
def test_reasoning_is_split_from_the_answer(text, reasoning, content):
    from impnb.reasoning import split_reasoning
    assert split_reasoning(text) == (reasoning, content)


def test_generation_stops_at_the_context_and_refuses_a_prompt_that_fills_it():
    out = generate(FakeModel(), [0] * 10, max_new_tokens=50, ignore_eos=True)
    assert len(out.ids) == 2 and out.stop_reason == "length"  # 10 + 2 = the context of 12
    with pytest.raises(ValueError, match="context holds 12 positions"):
        generate(FakeModel(), [0] * 12, max_new_tokens=1)


# ---- properties of the filters (bounded hypothesis runs) ------------------------------------------------------------

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.extra.numpy import arrays  # noqa: E402

_LOGITS = arrays(np.float32, st.integers(2, 40), elements=st.floats(-20, 20, width=32))


@settings(max_examples=60, deadline=None)
@given(_LOGITS, st.integers(0, 45), st.floats(0.05, 1.0), st.floats(0.0, 0.9), st.floats(0.0, 1.0))
def test_filter_properties(x, top_k, top_p, min_p, u):
    out = ref.filter_logits(x, temperature=1.0, top_k=top_k, top_p=top_p, min_p=min_p)
    kept = np.isfinite(out)
    assert kept[ref.argmax_token(x)]                        # the most likely token always survives
    np.testing.assert_array_equal(out[kept], x[kept])       # survivors keep their logits (temperature 1)
    if top_k:
        assert kept.sum() <= top_k
    if min_p == 0.0 and top_k == 0:                         # top-p alone: the smallest prefix with mass >= top_p
        p = np.exp(x.astype(np.float64) - x.max())
        p /= p.sum()
        assert p[kept].sum() >= top_p - 1e-9 or kept.all()
        assert p[kept].sum() - p[kept].min() < top_p + 1e-9
    token = int(ref.sample_token(out, min(u, 0.999999)))
    assert kept[token]                                      # a filtered token is never drawn


@settings(max_examples=40, deadline=None)
@given(_LOGITS)
def test_argmax_is_first_of_the_stable_order(x):
    assert int(ref.argmax_token(x)) == int(ref.stable_order(x)[0])


@pytest.mark.gpu
def test_cuda_sampler_draws_the_same_ids_as_the_reference(rng):
    """Same logits, same seed (so the same u's): the two backends must choose the same tokens."""
    logits = [(rng.standard_normal(49152) * 3).astype(np.float32) for _ in range(40)]
    params = SamplingParams(temperature=0.8, top_k=50, top_p=0.9, min_p=0.02, repetition_penalty=1.2, seed=9,
                            banned_tokens=(int(np.argmax(logits[0])),))

    def run(backend):
        s = Sampler(params, 49152, backend=backend, history=[1, 2, 3])
        return [s.next_token(x) for x in logits]
    assert run("cuda") == run("reference")
    greedy = SamplingParams(banned_tokens=params.banned_tokens)
    assert [Sampler(greedy, 49152, backend="cuda").next_token(x) for x in logits] == \
           [Sampler(greedy, 49152, backend="reference").next_token(x) for x in logits]
