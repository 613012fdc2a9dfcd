"""The linear-attention ops (impnb/reference/linear_attention.py) against their own alternative forms and against
transformers' torch implementations: the chunked prefill equals the step-by-step recurrence (several chunk sizes,
lengths that are not multiples of the chunk), a prefill split anywhere equals one pass (the state carries the
sequence), the conv step iterated equals the prefill form, and the L2 norm, gates and gated norm are transformers'
(torch fallbacks of modeling_qwen3_next / mamba)."""
from __future__ import annotations

import numpy as np
import pytest

from impnb import ops, tolerances
from impnb.reference import linear_attention as la
from impnb.reference.norms import gated_rms_norm, l2_norm

F32 = np.float32


def _delta_inputs(rng, t, hk=2, dk=16, hv=4, dv=12, g_scale=1.0):
    q, k, v = (rng.standard_normal(s).astype(F32) for s in ((t, hk, dk), (t, hk, dk), (t, hv, dv)))
    g = (-np.exp(rng.standard_normal((t, hv)) - 1.0) * g_scale).astype(F32)
    beta = (1.0 / (1.0 + np.exp(-2.0 * rng.standard_normal((t, hv))))).astype(F32)
    state = (0.5 * rng.standard_normal((hv, dk, dv))).astype(F32)
    return q, k, v, g, beta, state


@pytest.mark.parametrize("t,chunk", [(1, 4), (7, 4), (13, 8), (30, 64), (65, 64), (100, 32), (37, 5), (9, 1)])
def test_chunked_equals_recurrent(rng, t, chunk):
    args = _delta_inputs(rng, t)
    rec = la.gated_delta_rule(*args)
    chk = la.gated_delta_rule_chunked(*args, chunk_size=chunk)
    tolerances.assert_close("gated_delta_rule_chunked", rec, chk)
    assert np.abs(rec[0]).max() > 0.05 and np.abs(rec[1]).max() > 0.1  # not a trivially small answer


def test_chunked_equals_recurrent_real_geometry_strong_decay(rng):
    """Qwen3.5 linear-layer geometry (16 key heads x 128, 32 value heads x 128), 80 tokens in chunks of 64."""
    args = _delta_inputs(rng, 80, hk=16, dk=128, hv=32, dv=128, g_scale=8.0)
    tolerances.assert_close("gated_delta_rule_chunked", la.gated_delta_rule(*args),
                            la.gated_delta_rule_chunked(*args, chunk_size=64))


@pytest.mark.parametrize("op,kw", [("gated_delta_rule", {}), ("gated_delta_rule_chunked", {"chunk_size": 4})])
def test_split_sequence_carries_the_state(rng, op, kw):
    q, k, v, g, beta, state = _delta_inputs(rng, 11)
    fn = getattr(la, op)
    whole, s_whole = fn(q, k, v, g, beta, state, **kw)
    first, s_mid = fn(q[:6], k[:6], v[:6], g[:6], beta[:6], state, **kw)
    second, s_end = fn(q[6:], k[6:], v[6:], g[6:], beta[6:], s_mid, **kw)
    tolerances.assert_close(op, (whole, s_whole), (np.concatenate([first, second]), s_end))


def test_decode_step_is_the_recurrence_definition(rng):
    """One token by hand: S = e^g S; S += k beta (v - S^T k)^T; o = S^T q (normalised, scaled q; GQA mapping)."""
    q, k, v, g, beta, state = _delta_inputs(rng, 1, hk=1, dk=8, hv=2, dv=3)
    o, s = la.gated_delta_rule(q, k, v, g, beta, state)
    qn = q[0, 0] / np.sqrt((q[0, 0] ** 2).sum() + 1e-6) / np.sqrt(8)
    kn = k[0, 0] / np.sqrt((k[0, 0] ** 2).sum() + 1e-6)
    for h in range(2):  # both value heads read key head 0
        sh = state[h].astype(np.float64) * np.exp(g[0, h])
        sh = sh + np.outer(kn, beta[0, h] * (v[0, h] - sh.T @ kn))
        np.testing.assert_allclose(s[h], sh, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(o[0, h], sh.T @ qn, rtol=1e-5, atol=1e-6)


def test_conv_step_iterated_equals_prefill_and_split_prefill(rng):
    t, c, kw = 9, 6, 4
    x = rng.standard_normal((t, c)).astype(F32)
    w = rng.standard_normal((c, kw)).astype(F32)
    state = rng.standard_normal((kw - 1, c)).astype(F32)
    y, final = la.causal_conv1d(x, w, state)
    s, steps = state, []
    for row in x:
        out, s = la.causal_conv1d_step(row, w, s)
        steps.append(out)
    np.testing.assert_array_equal(np.stack(steps), y)
    np.testing.assert_array_equal(s, final)
    y1, mid = la.causal_conv1d(x[:2], w, state)  # a chunk shorter than the kernel
    y2, end = la.causal_conv1d(x[2:], w, mid)
    np.testing.assert_array_equal(np.concatenate([y1, y2]), y)
    np.testing.assert_array_equal(end, final)
    np.testing.assert_array_equal(final, x[-3:])


@pytest.mark.parametrize("op,args", [
    ("causal_conv1d", (np.zeros((2, 3), F32), np.zeros((3, 4), F32), np.zeros((2, 3), F32))),
    ("causal_conv1d_step", (np.zeros((1, 3), F32), np.zeros((3, 4), F32), np.zeros((3, 3), F32))),
    ("gated_delta_rule", (np.zeros((2, 3, 4), F32),) * 2 + (np.zeros((2, 4, 5), F32), np.zeros((2, 4), F32),
                                                             np.zeros((2, 4), F32), np.zeros((4, 4, 5), F32))),
    ("gdn_gates", (np.zeros((2, 3), F32), np.zeros((2, 3), F32), np.zeros(4, F32), np.zeros(4, F32))),
])
def test_bad_shapes_are_one_line_value_errors(op, args):
    with pytest.raises(ValueError, match=op):
        ops.call(op, *args, backend="reference")


def test_chunk_size_must_be_positive(rng):
    with pytest.raises(ValueError, match="chunk_size"):
        la.gated_delta_rule_chunked(*_delta_inputs(rng, 3), chunk_size=0)


# ---- transformers' torch implementations (the held-out oracles run these) --------------------------------------
def _hf():
    pytest.importorskip("torch")
    return pytest.importorskip("transformers.models.qwen3_next.modeling_qwen3_next")


@pytest.mark.oracle
@pytest.mark.parametrize("t,chunk", [(1, 64), (23, 8), (70, 64)])
def test_delta_rule_matches_transformers(rng, t, chunk):
    m = _hf()
    import torch
    q, k, v, g, beta, state = _delta_inputs(rng, t)
    tt = [torch.from_numpy(a)[None] for a in (q, k, v, g, beta, state)]
    kw = dict(initial_state=tt[5], output_final_state=True, use_qk_l2norm_in_kernel=True)
    theirs = m.torch_recurrent_gated_delta_rule(*tt[:5], **kw)
    tolerances.assert_close("gated_delta_rule", tuple(x[0].numpy() for x in theirs),
                            la.gated_delta_rule(q, k, v, g, beta, state))
    theirs = m.torch_chunk_gated_delta_rule(*tt[:5], chunk_size=chunk, **kw)
    tolerances.assert_close("gated_delta_rule_chunked", tuple(x[0].numpy() for x in theirs),
                            la.gated_delta_rule_chunked(q, k, v, g, beta, state, chunk_size=chunk))


@pytest.mark.oracle
def test_conv_gates_and_norms_match_transformers(rng):
    m = _hf()
    import torch
    from transformers.models.mamba.modeling_mamba import causal_conv1d_fn, causal_conv1d_update
    x = rng.standard_normal((6, 10)).astype(F32)
    w = rng.standard_normal((10, 4)).astype(F32)
    theirs = causal_conv1d_fn(torch.from_numpy(x.T.copy())[None], torch.from_numpy(w), activation="silu")
    ours, _ = la.causal_conv1d(x, w, np.zeros((3, 10), F32))
    tolerances.assert_close("causal_conv1d", theirs[0].numpy().T, ours)
    state = rng.standard_normal((10, 4)).astype(F32)  # transformers keeps K inputs; the oldest is never read
    step = causal_conv1d_update(torch.from_numpy(x[:1].T.copy())[None], torch.from_numpy(state.copy())[None],
                                torch.from_numpy(w), activation="silu")
    ours, _ = la.causal_conv1d_step(x[0], w, state[:, 1:].T)
    tolerances.assert_close("causal_conv1d_step", step[0, :, 0].numpy(), ours)
    a, b = (rng.standard_normal((5, 4)) * 10).astype(F32), (rng.standard_normal((5, 4)) * 10).astype(F32)
    a_log, dt_bias = rng.uniform(-4, 2.7, 4).astype(F32), rng.standard_normal(4).astype(F32)
    neg_a = -np.exp(a_log)
    g_theirs = -torch.from_numpy(a_log).exp() * torch.nn.functional.softplus(torch.from_numpy(a + dt_bias))
    tolerances.assert_close("gdn_gates", (g_theirs.numpy(), torch.from_numpy(b).sigmoid().numpy()),
                            la.gdn_gates(a, b, neg_a, dt_bias))
    xs = rng.standard_normal((3, 4, 16)).astype(F32) * 5
    tolerances.assert_close("l2_norm", m.l2norm(torch.from_numpy(xs)).numpy(), l2_norm(xs))
    norm = m.Qwen3NextRMSNormGated(16, eps=1e-6)
    with torch.no_grad():
        norm.weight.copy_(torch.from_numpy(1 + 0.1 * rng.standard_normal(16).astype(F32)))
        z = rng.standard_normal((3, 16)).astype(F32) * 3
        theirs = norm(torch.from_numpy(xs[:, 0]), torch.from_numpy(z)).numpy()
    tolerances.assert_close("gated_rms_norm", theirs, gated_rms_norm(xs[:, 0], z, norm.weight.detach().numpy(),
                                                                      eps=1e-6))
