"""Mutants of the hybrid linear-attention ops (Qwen3-Next / Qwen3.5): the short convolution and its rolling state,
the gates, the gated delta rule (recurrent and chunked), the gated RMSNorm, the L2 norm and the sigmoid gate."""
from __future__ import annotations

import numpy as np

from . import copy_of, mutant
from .model import _silu

F32 = np.float32


def _sigmoid(x):
    with np.errstate(over="ignore"):
        return F32(1.0) / (F32(1.0) + np.exp(-np.asarray(x, F32)))


# ---- short convolution ---------------------------------------------------------------------------------------
@copy_of("causal_conv1d")
def causal_conv1d(x, weight, state, *, activation="silu", state_lag=0, roll_state=True, use_activation=True,
                  kernel_flipped=False):
    x, weight, state = (np.asarray(a, F32) for a in (x, weight, state))
    t, k = x.shape[0], weight.shape[1]
    xs = np.concatenate([state, x], axis=0)
    w = weight[:, ::-1] if kernel_flipped else weight
    y = np.zeros_like(x)
    for j in range(k):
        y += w[:, j] * xs[j:j + t]
    if activation == "silu" and use_activation:
        y = _silu(y)
    kept = xs[t - state_lag:t - state_lag + k - 1] if roll_state else state
    return y, np.ascontiguousarray(kept, dtype=F32)


mutant("causal_conv1d", "state_shifted_by_one", "keeps the K-1 inputs ending one token early as the next state "
       "(drops the newest input)", causal_conv1d, state_lag=1)
mutant("causal_conv1d", "state_not_rolled", "returns the incoming conv state unchanged", causal_conv1d,
       roll_state=False)
mutant("causal_conv1d", "silu_missing", "never applies the SiLU after the convolution", causal_conv1d,
       use_activation=False)
mutant("causal_conv1d", "kernel_flipped", "applies weight[c, K-1-j] to input t - (K-1) + j (true convolution "
       "instead of PyTorch's cross-correlation)", causal_conv1d, kernel_flipped=True)


@copy_of("causal_conv1d_step")
def causal_conv1d_step(x, weight, state, *, activation="silu", roll_state=True, new_token_first=False,
                       use_activation=True, current_tap_first=False):
    x, weight, state = (np.asarray(a, F32) for a in (x, weight, state))
    w = weight[:, ::-1] if current_tap_first else weight
    y = (w[:, :-1] * state.T).sum(axis=1, dtype=F32) + w[:, -1] * x
    if activation == "silu" and use_activation:
        y = _silu(y)
    if not roll_state:
        kept = state
    elif new_token_first:
        kept = np.concatenate([x[None], state[:-1]], axis=0)
    else:
        kept = np.concatenate([state[1:], x[None]], axis=0)
    return y.astype(F32), np.ascontiguousarray(kept, dtype=F32)


mutant("causal_conv1d_step", "state_not_rolled", "convolves correctly but never stores the new input in the state",
       causal_conv1d_step, roll_state=False)
mutant("causal_conv1d_step", "state_rolled_backwards", "shifts the state the wrong way: the new input goes to the "
       "oldest slot", causal_conv1d_step, new_token_first=True)
mutant("causal_conv1d_step", "silu_missing", "never applies the SiLU in the decode step", causal_conv1d_step,
       use_activation=False)
mutant("causal_conv1d_step", "current_tap_first", "weights the new input with weight[c, 0] (the oldest tap)",
       causal_conv1d_step, current_tap_first=True)


# ---- gates ---------------------------------------------------------------------------------------------------
@copy_of("gdn_gates")
def gdn_gates(a, b, A, dt_bias, *, gate_sign=1.0, sigmoid_beta=True, use_dt_bias=True):
    a, b, A, dt_bias = (np.asarray(v, F32) for v in (a, b, A, dt_bias))
    z = F32(gate_sign) * (a + (dt_bias if use_dt_bias else F32(0.0)))
    with np.errstate(over="ignore"):
        soft = np.where(z > F32(20.0), z, np.log1p(np.exp(z))).astype(F32)
    beta = _sigmoid(b) if sigmoid_beta else b
    return (A * soft).astype(F32), beta.astype(F32)


mutant("gdn_gates", "gate_sign_flipped", "computes softplus(-(a + dt_bias)): the decay rises where it must fall",
       gdn_gates, gate_sign=-1.0)
mutant("gdn_gates", "beta_not_sigmoided", "uses the raw b projection as the write strength beta", gdn_gates,
       sigmoid_beta=False)
mutant("gdn_gates", "dt_bias_ignored", "drops dt_bias inside the softplus", gdn_gates, use_dt_bias=False)


# ---- the gated delta rule ------------------------------------------------------------------------------------
def _l2(x, eps, eps_outside=False):
    ss = np.sum(np.square(x), axis=-1, keepdims=True, dtype=F32)
    return x / (np.sqrt(ss) + F32(eps)) if eps_outside else x * (F32(1.0) / np.sqrt(ss + F32(eps)))


def _prepare(q, k, v, state, scale, qk_l2norm, eps, *, l2_eps_outside=False, scale_q=True, kv_head_modulo=False):
    """q, k normalised, q scaled, both mapped to the value heads; float32 copies."""
    q, k, v, s = (np.asarray(a, F32) for a in (q, k, v, state))
    hk, dk, hv = q.shape[1], q.shape[2], v.shape[1]
    if qk_l2norm:
        q, k = _l2(q, eps, l2_eps_outside), _l2(k, eps, l2_eps_outside)
    if scale_q:
        q = q * F32(dk ** -0.5 if scale is None else scale)
    head = np.arange(hv) % hk if kv_head_modulo else np.arange(hv) // (hv // hk)
    return q[:, head], k[:, head], v, s.copy()


@copy_of("gated_delta_rule")
def gated_delta_rule(q, k, v, g, beta, state, *, scale=None, qk_l2norm=True, eps=1e-6, decay_after_write=False,
                     predict_before_decay=False, read_before_write=False, **prepare):
    q, k, v, s = _prepare(q, k, v, state, scale, qk_l2norm, eps, **prepare)
    g, beta = np.asarray(g, F32), np.asarray(beta, F32)
    out = np.empty_like(v)
    for t in range(v.shape[0]):
        decay = np.exp(g[t])[:, None, None]
        kv_mem = np.einsum("hkv,hk->hv", s, k[t])  # S^T k before the decay, for predict_before_decay
        if not decay_after_write:
            s = s * decay
        if not predict_before_decay:
            kv_mem = np.einsum("hkv,hk->hv", s, k[t])
        read = np.einsum("hkv,hk->hv", s, q[t])
        s = s + k[t][:, :, None] * ((v[t] - kv_mem) * beta[t][:, None])[:, None, :]
        if decay_after_write:
            s = s * decay
        out[t] = read if read_before_write else np.einsum("hkv,hk->hv", s, q[t])
    return out, s.astype(F32)


mutant("gated_delta_rule", "decay_after_update", "applies the decay exp(g) after the delta-rule write instead of "
       "before it", gated_delta_rule, decay_after_write=True)
mutant("gated_delta_rule", "prediction_from_undecayed_state", "computes the delta v - S^T k from the state before "
       "its decay", gated_delta_rule, predict_before_decay=True)
mutant("gated_delta_rule", "read_before_write", "reads o = S^T q before the token's own write", gated_delta_rule,
       read_before_write=True)
mutant("gated_delta_rule", "q_not_scaled", "never scales q by 1/sqrt(Dk) (or the given scale)", gated_delta_rule,
       scale_q=False)
mutant("gated_delta_rule", "gqa_head_modulo", "value head h reads key head h % Hk instead of h // (Hv / Hk)",
       gated_delta_rule, kv_head_modulo=True)
mutant("gated_delta_rule", "l2_eps_outside_sqrt", "L2-normalises q and k as x / (sqrt(sum x^2) + eps)",
       gated_delta_rule, l2_eps_outside=True)


@copy_of("gated_delta_rule_chunked")
def gated_delta_rule_chunked(q, k, v, g, beta, state, *, chunk_size=64, scale=None, qk_l2norm=True, eps=1e-6,
                             carry_state=True, drop_partial_chunk=False, pad_g_with_last=False,
                             exclusive_decay=False, intra_strictly_causal=False):
    q, k, v, s = _prepare(q, k, v, state, scale, qk_l2norm, eps)
    g, beta = np.asarray(g, F32), np.asarray(beta, F32)
    t, n = v.shape[0], chunk_size
    out = np.zeros_like(v)
    initial = s
    for start in range(0, t, n):
        stop = min(start + n, t)
        if drop_partial_chunk and stop - start < n:
            break
        rows = slice(start, stop)
        pad_g = g[stop - 1] if pad_g_with_last else np.zeros_like(g[0])
        o, s = _chunk(s if carry_state else initial, q[rows], k[rows], v[rows], g[rows], beta[rows], n, pad_g,
                      exclusive_decay, intra_strictly_causal)
        out[rows] = o
    return out, s.astype(F32)


def _chunk(s, q, k, v, g, beta, n, pad_g, exclusive_decay, intra_strictly_causal):
    """One chunk of the UT-transform form, per value head: (outputs of its real tokens, the state after it)."""
    real = v.shape[0]
    pad = n - real
    if pad:
        q, k, v, beta = (np.concatenate([a, np.zeros((pad,) + a.shape[1:], F32)]) for a in (q, k, v, beta))
        g = np.concatenate([g, np.broadcast_to(pad_g, (pad,) + g.shape[1:])]).astype(F32)
    q, k, v = (np.moveaxis(a, 1, 0) for a in (q, k, v))  # [H, L, D]
    g, beta = g.T, beta.T  # [H, L]
    gamma = np.cumsum(g, axis=-1, dtype=F32)
    if exclusive_decay:
        gamma = gamma - g
    with np.errstate(over="ignore"):
        decay = np.where(np.tri(n, dtype=bool), np.exp(gamma[:, :, None] - gamma[:, None, :]), F32(0.0)).astype(F32)
    kb = k * beta[..., None]
    a = np.tril((kb @ k.swapaxes(1, 2)) * decay, -1)
    identity = np.eye(n, dtype=F32)
    u = np.linalg.solve(identity + a, v * beta[..., None]).astype(F32)
    w = np.linalg.solve(identity + a, kb * np.exp(gamma)[..., None]).astype(F32)
    v_new = u - w @ s
    intra = (q @ k.swapaxes(1, 2)) * (np.tril(decay, -1) if intra_strictly_causal else decay)
    o = (q * np.exp(gamma)[..., None]) @ s + intra @ v_new
    last = gamma[:, -1:]
    s = s * np.exp(last)[..., None] + (k * np.exp(last - gamma)[..., None]).swapaxes(1, 2) @ v_new
    return np.moveaxis(o, 0, 1)[:real], s


mutant("gated_delta_rule_chunked", "state_not_carried", "starts every chunk from the state the sequence entered "
       "with (drops the state carried between chunks)", gated_delta_rule_chunked, carry_state=False)
mutant("gated_delta_rule_chunked", "partial_last_chunk_dropped", "processes whole chunks only: the tokens after the "
       "last full chunk get no output and never reach the state", gated_delta_rule_chunked, drop_partial_chunk=True)
mutant("gated_delta_rule_chunked", "padding_decays_the_state", "pads a partial last chunk with copies of its last "
       "log-decay instead of 0, so the final state decays once per padded slot", gated_delta_rule_chunked,
       pad_g_with_last=True)
mutant("gated_delta_rule_chunked", "exclusive_cumulative_decay", "uses the exclusive cumulative log-decay "
       "(token i decayed by g_1..g_{i-1}, not g_1..g_i)", gated_delta_rule_chunked, exclusive_decay=True)
mutant("gated_delta_rule_chunked", "intra_chunk_excludes_self", "masks the intra-chunk attention strictly below "
       "the diagonal (a token does not read its own write)", gated_delta_rule_chunked, intra_strictly_causal=True)


# ---- gated RMSNorm / L2 norm / sigmoid gate ------------------------------------------------------------------
@copy_of("gated_rms_norm")
def gated_rms_norm(x, gate, weight, *, eps, silu_on_x=False, gate_before_norm=False, weight_offset=0.0,
                   sigmoid_gate=False, eps_inside_sqrt=True):
    x, gate, w = np.asarray(x, F32), np.asarray(gate, F32), np.asarray(weight, F32) + F32(weight_offset)
    act = _sigmoid(gate) if sigmoid_gate else _silu(gate)
    if gate_before_norm:
        x = x * act

    def normed(a):
        ms = np.mean(np.square(a), axis=-1, keepdims=True, dtype=F32)
        return a * (F32(1.0) / (np.sqrt(ms + F32(eps)) if eps_inside_sqrt else np.sqrt(ms) + F32(eps))) * w

    y = normed(x)
    if gate_before_norm:
        return y
    return _silu(y) * gate if silu_on_x else y * act


mutant("gated_rms_norm", "silu_on_x", "applies the SiLU to the normed x and multiplies by the raw gate",
       gated_rms_norm, silu_on_x=True)
mutant("gated_rms_norm", "gate_before_norm", "gates first and normalises x * silu(gate) (norm and weight after the "
       "gate)", gated_rms_norm, gate_before_norm=True)
mutant("gated_rms_norm", "zero_centred_weight", "multiplies by (1 + w) as the model's other norms do; the gated "
       "norm keeps a plain weight", gated_rms_norm, weight_offset=1.0)
mutant("gated_rms_norm", "sigmoid_gate", "multiplies by sigmoid(gate) instead of silu(gate)", gated_rms_norm,
       sigmoid_gate=True)
mutant("gated_rms_norm", "eps_outside_sqrt", "adds eps after the square root", gated_rms_norm,
       eps_inside_sqrt=False)


@copy_of("l2_norm")
def l2_norm(x, *, eps=1e-6, eps_outside_sqrt=False, clamp_norm=False, mean_of_squares=False):
    x = np.asarray(x, F32)
    reduce = np.mean if mean_of_squares else np.sum
    ss = reduce(np.square(x), axis=-1, keepdims=True, dtype=F32)
    if clamp_norm:  # torch.nn.functional.normalize: x / max(||x||, eps)
        return x / np.maximum(np.sqrt(ss), F32(eps))
    return x / (np.sqrt(ss) + F32(eps)) if eps_outside_sqrt else x * (F32(1.0) / np.sqrt(ss + F32(eps)))


mutant("l2_norm", "eps_outside_sqrt", "normalises by sqrt(sum x^2) + eps", l2_norm, eps_outside_sqrt=True)
mutant("l2_norm", "clamped_norm", "divides by max(||x||, eps) (torch's F.normalize) instead of sqrt(sum x^2 + eps)",
       l2_norm, clamp_norm=True)
mutant("l2_norm", "mean_of_squares", "divides by the root of the mean square (an RMSNorm) instead of the sum",
       l2_norm, mean_of_squares=True)


@copy_of("sigmoid_gate")
def sigmoid_gate(x, gate, *, silu_gate=False, operands_swapped=False, gate_sign=1.0):
    x, gate = np.asarray(x, F32), np.asarray(gate, F32)
    if operands_swapped:
        return (gate * _sigmoid(x)).astype(F32)
    g = F32(gate_sign) * gate
    return x * (_silu(g) if silu_gate else _sigmoid(g))


mutant("sigmoid_gate", "silu_gate", "multiplies by silu(gate) instead of sigmoid(gate)", sigmoid_gate,
       silu_gate=True)
mutant("sigmoid_gate", "operands_swapped", "computes gate * sigmoid(x)", sigmoid_gate, operands_swapped=True)
mutant("sigmoid_gate", "gate_sign_flipped", "computes x * sigmoid(-gate)", sigmoid_gate, gate_sign=-1.0)
