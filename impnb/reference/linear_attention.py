"""Linear attention of the hybrid Qwen3-Next / Qwen3.5 layers: the reference for impnb/cuda/linear_attention.py.

The token mixer of a "linear_attention" layer is a gated DeltaNet (Yang, Kautz, Hatamizadeh, "Gated Delta
Networks: Improving Mamba2 with Delta Rule", ICLR 2025): a causal depthwise short convolution over the q|k|v
channels, then the gated delta rule over a fixed-size per-head state instead of a growing KV cache.

Dimensions: T = tokens, C = channels of the short convolution, K = its kernel width, Hk / Hv = key / value heads
(Hv a multiple of Hk: GQA, key head h // (Hv / Hk) serves value head h), Dk / Dv = key / value head dims.

    causal_conv1d       x [T, C], weight [C, K], state [K-1, C]   -> (y [T, C], state' [K-1, C])   prefill
    causal_conv1d_step  x [C] (one token), same weight and state  -> (y [C], state')               decode
    gdn_gates           a, b [T, Hv], A [Hv], dt_bias [Hv]        -> (g [T, Hv], beta [T, Hv])
    gated_delta_rule    q, k [T, Hk, Dk], v [T, Hv, Dv], g, beta [T, Hv], S [Hv, Dk, Dv] -> (o [T, Hv, Dv], S')
    gated_delta_rule_chunked   the same map computed chunk by chunk (prefill); equal within the tolerance table

The state S is kept as transformers and flash-linear-attention keep it: [Hv, Dk, Dv] (rows indexed by the key,
columns by the value), the transpose of the paper's S_t [Dv, Dk]. Everything is float32 (as transformers runs the
torch fallbacks, torch_recurrent_gated_delta_rule / torch_chunk_gated_delta_rule, which upcast to float32).
"""
from __future__ import annotations

import numpy as np

from .activations import silu
from .norms import l2_norm

F32 = np.float32
SOFTPLUS_THRESHOLD = F32(20.0)  # torch.nn.functional.softplus: x itself above 20 (beta = 1)


# ---- short convolution ---------------------------------------------------------------------------------------
def causal_conv1d(x, weight, state, *, activation="silu"):
    """Causal depthwise convolution with a rolling state (prefill form).

    With xs = concat(state, x) [K-1+T, C] (state: the K-1 inputs before x; zeros for a fresh sequence),
        y[t, c]  = act( sum_{j=0}^{K-1} weight[c, j] * xs[t + j, c] )     (j = K-1 is the current token)
        state'   = xs[T:]                                                   (the last K-1 inputs)
    act = silu (activation="silu") or the identity (None). The sum runs over j in increasing order, float32.
    x: float32 [T, C]; weight [C, K]; state [K-1, C]. Returns (y float32 [T, C], state' float32 [K-1, C]).
    """
    x, weight, state = _conv_inputs(x, weight, state, "causal_conv1d")
    t, k = x.shape[0], weight.shape[1]
    xs = np.concatenate([state, x], axis=0)  # [K-1+T, C]
    y = np.zeros_like(x)
    for j in range(k):
        y += weight[:, j] * xs[j:j + t]
    return _activate(y, activation), np.ascontiguousarray(xs[t:])


def causal_conv1d_step(x, weight, state, *, activation="silu"):
    """One decode step of causal_conv1d: the convolution of the K-1 stored inputs and the new one.

        y[c]   = act( sum_{j=0}^{K-2} weight[c, j] * state[j, c] + weight[c, K-1] * x[c] )
        state' = concat(state[1:], x[None])
    x: float32 [C]; weight [C, K]; state [K-1, C]. Returns (y float32 [C], state' float32 [K-1, C]).
    """
    x = np.asarray(x, dtype=F32)
    if x.ndim != 1:
        raise ValueError(f"causal_conv1d_step: x must be one token [C], got shape {x.shape}")
    y, new_state = causal_conv1d(x[None], weight, state, activation=activation)
    return y[0], new_state


def _conv_inputs(x, weight, state, op):
    x, weight, state = (np.asarray(a, dtype=F32) for a in (x, weight, state))
    check_conv_shapes(x, weight, state, op)
    return x, weight, state


def check_conv_shapes(x, weight, state, op):
    """ValueError unless x [T, C], weight [C, K], state [K-1, C] agree (shared with the CUDA path)."""
    if x.ndim != 2 or weight.ndim != 2 or state.ndim != 2:
        raise ValueError(f"{op}: x [T, C], weight [C, K], state [K-1, C] expected; got {x.shape}, "
                         f"{weight.shape}, {state.shape}")
    c, k = weight.shape
    if k < 1 or x.shape[1] != c or state.shape != (k - 1, c):
        raise ValueError(f"{op}: shapes x {x.shape}, weight {weight.shape}, state {state.shape} do not agree "
                         f"(state must be [K-1, C] = [{k - 1}, {c}])")


def _activate(y, activation):
    if activation is None:
        return y
    if activation == "silu":
        return silu(y)
    raise ValueError(f"activation {activation!r}; expected 'silu' or None")


# ---- gates ---------------------------------------------------------------------------------------------------
def gdn_gates(a, b, A, dt_bias):
    """Decay and write strength of the gated delta rule, from the two per-head projections a and b.

        g[t, h]    = A[h] * softplus(a[t, h] + dt_bias[h])     (A = -exp(A_log) < 0, so g <= 0; alpha = exp(g))
        beta[t, h] = sigmoid(b[t, h])
    softplus(x) = log1p(exp(x)), and x itself for x > 20 (torch's threshold). a, b: float32 [T, Hv]; A, dt_bias:
    float32 [Hv]. Returns (g float32 [T, Hv], beta float32 [T, Hv]).
    """
    a, b = np.asarray(a, dtype=F32), np.asarray(b, dtype=F32)
    A, dt_bias = np.asarray(A, dtype=F32), np.asarray(dt_bias, dtype=F32)
    if a.shape != b.shape or a.shape[-1:] != A.shape or A.shape != dt_bias.shape:
        raise ValueError(f"gdn_gates: a {a.shape}, b {b.shape}, A {A.shape}, dt_bias {dt_bias.shape} do not agree")
    z = a + dt_bias
    with np.errstate(over="ignore"):
        soft = np.where(z > SOFTPLUS_THRESHOLD, z, np.log1p(np.exp(z))).astype(F32)
        beta = F32(1.0) / (F32(1.0) + np.exp(-b))
    return (A * soft).astype(F32), beta.astype(F32)


# ---- the gated delta rule ------------------------------------------------------------------------------------
def gated_delta_rule(q, k, v, g, beta, state, *, scale=None, qk_l2norm=True, eps=1e-6):
    """The gated delta rule, token by token (the recurrent form; decode runs it with T = 1).

    For every value head h (reading key head h // (Hv / Hk)) and token t, with S [Dk, Dv] the head's state:
        q_t <- l2norm(q_t) * scale,  k_t <- l2norm(k_t)       (qk_l2norm; l2norm(x) = x / sqrt(sum x^2 + eps))
        S   <- exp(g_t) S                                     decay (alpha_t = exp(g_t), g_t <= 0)
        u_t  = beta_t (v_t - S^T k_t)                          the delta: what the decayed memory mispredicts
        S   <- S + k_t u_t^T                                   write
        o_t  = S^T q_t                                         read, after the write
    i.e. S_t = alpha_t (I - beta_t k_t k_t^T) S_{t-1} + beta_t k_t v_t^T: the paper's
    S_t = S_{t-1} (alpha_t (I - beta_t k_t k_t^T)) + beta_t v_t k_t^T with S transposed. scale defaults to
    Dk^-1/2. Float32, in transformers' order (decay, then S^T k, delta, write, read).

    q, k: float32 [T, Hk, Dk]; v: [T, Hv, Dv]; g, beta: [T, Hv]; state: [Hv, Dk, Dv].
    Returns (o float32 [T, Hv, Dv], state' float32 [Hv, Dk, Dv]).
    """
    q, k, v, g, beta, s = _delta_inputs(q, k, v, g, beta, state, scale, qk_l2norm, eps, "gated_delta_rule")
    out = np.empty_like(v)
    decay = np.exp(g)  # [T, Hv]
    for t in range(v.shape[0]):
        s = s * decay[t][:, None, None]
        kv_mem = (s * k[t][:, :, None]).sum(axis=1)  # [Hv, Dv] = S^T k
        delta = (v[t] - kv_mem) * beta[t][:, None]
        s = s + k[t][:, :, None] * delta[:, None, :]
        out[t] = (s * q[t][:, :, None]).sum(axis=1)
    return out, s


def gated_delta_rule_chunked(q, k, v, g, beta, state, *, chunk_size=64, scale=None, qk_l2norm=True, eps=1e-6):
    """The gated delta rule computed chunk by chunk (prefill): the same map as gated_delta_rule.

    The sequence is zero-padded to a multiple of ``chunk_size`` (a padded token has beta = 0 and g = 0: it neither
    writes nor decays). Within a chunk of length L, with gamma_i = sum_{m<=i} g_m the cumulative log-decay and
    D_im = exp(gamma_i - gamma_m) for m <= i (0 above the diagonal), the L delta-rule writes are condensed by the
    UT transform (the WY representation of DeltaNet):
        (I + tril_-1(diag(beta) K K^T * D)) [U | W] = [diag(beta) V | diag(beta exp(gamma)) K]
    Then, sequentially over chunks, from the state S entering the chunk:
        V' = U - W S                                     the writes corrected by what S already predicts
        O  = (Q * exp(gamma)) S + ((Q K^T) * D) V'       inter-chunk read + intra-chunk (causal) attention
        S <- exp(gamma_L) S + (K * exp(gamma_L - gamma))^T V'
    The triangular system is solved by forward substitution, row by row. Float32, transformers' order.
    Arguments and returns as gated_delta_rule.
    """
    if not (isinstance(chunk_size, (int, np.integer)) and chunk_size >= 1):
        raise ValueError(f"gated_delta_rule_chunked: chunk_size must be a positive integer, got {chunk_size!r}")
    q, k, v, g, beta, s = _delta_inputs(q, k, v, g, beta, state, scale, qk_l2norm, eps, "gated_delta_rule_chunked")
    t = v.shape[0]
    pad = (-t) % chunk_size
    chunks = [_to_chunks(x, pad, chunk_size) for x in (q, k, v, g, beta)]  # [N, Hv, L, D] / [N, Hv, L]
    qc, kc, vc, gc, bc = chunks
    gamma = np.cumsum(gc, axis=-1, dtype=F32)  # [N, Hv, L]
    lower = np.tril(np.ones((chunk_size, chunk_size), dtype=bool))
    with np.errstate(over="ignore"):  # masked entries exp(positive) are discarded by the where
        decay = np.where(lower, np.exp(gamma[..., :, None] - gamma[..., None, :]), F32(0.0)).astype(F32)
    kb = kc * bc[..., None]
    system = (kb @ kc.swapaxes(-1, -2)) * decay  # [N, Hv, L, L]; only its strict lower triangle is used
    u = _unit_lower_solve(system, vc * bc[..., None])
    w = _unit_lower_solve(system, kb * np.exp(gamma)[..., None])
    intra = (qc @ kc.swapaxes(-1, -2)) * decay
    q_decayed = qc * np.exp(gamma)[..., None]
    k_decayed = np.ascontiguousarray((kc * np.exp(gamma[..., -1:] - gamma)[..., None]).swapaxes(-1, -2))
    out = np.empty_like(vc)
    for n in range(qc.shape[0]):
        v_new = u[n] - w[n] @ s  # [Hv, L, Dv]
        out[n] = q_decayed[n] @ s + intra[n] @ v_new
        s = s * np.exp(gamma[n, :, -1])[:, None, None] + k_decayed[n] @ v_new
    out = out.transpose(0, 2, 1, 3).reshape(-1, out.shape[1], out.shape[-1])[:t]  # [T, Hv, Dv]
    return np.ascontiguousarray(out, dtype=F32), s.astype(F32)


def _to_chunks(x, pad, size):
    """[T, Hv, ...] -> zero-padded [N, Hv, L, ...] (token axis split into N chunks of L = size, chunk-major so that
    each chunk is one contiguous batch of matrices)."""
    if pad:
        x = np.concatenate([x, np.zeros((pad,) + x.shape[1:], dtype=F32)], axis=0)
    x = x.reshape(-1, size, *x.shape[1:])  # [N, L, Hv, ...]
    return np.ascontiguousarray(np.moveaxis(x, 2, 1))


def _unit_lower_solve(system, rhs):
    """X with (I + strictly_lower(system)) X = rhs, by forward substitution over the L rows; [..., L, L], [..., L, D]."""
    x = np.empty_like(rhs)
    for i in range(rhs.shape[-2]):
        x[..., i, :] = rhs[..., i, :] - (system[..., i:i + 1, :i] @ x[..., :i, :])[..., 0, :]
    return x


def _delta_inputs(q, k, v, g, beta, state, scale, qk_l2norm, eps, op):
    """Validate shapes; l2-normalise and scale q / k; repeat them to the value heads. Float32 throughout."""
    q, k, v, g, beta, state = (np.asarray(a, dtype=F32) for a in (q, k, v, g, beta, state))
    _, hk, dk, hv, _ = check_delta_shapes(q, k, v, g, beta, state, op)
    if qk_l2norm:
        q, k = l2_norm(q, eps=eps), l2_norm(k, eps=eps)
    q = q * F32(dk ** -0.5 if scale is None else scale)
    rep = hv // hk
    if rep > 1:
        q, k = np.repeat(q, rep, axis=1), np.repeat(k, rep, axis=1)
    return q, k, v, g, beta, state.copy()


def check_delta_shapes(q, k, v, g, beta, state, op):
    """(T, Hk, Dk, Hv, Dv), or ValueError naming the disagreeing shapes (shared with the CUDA path)."""
    if q.ndim != 3 or k.shape != q.shape or v.ndim != 3 or v.shape[0] != q.shape[0]:
        raise ValueError(f"{op}: q, k [T, Hk, Dk] and v [T, Hv, Dv] expected; got {q.shape}, {k.shape}, {v.shape}")
    t, hk, dk = q.shape
    hv, dv = v.shape[1:]
    if hk == 0 or hv % hk:
        raise ValueError(f"{op}: {hv} value heads are not a multiple of {hk} key heads")
    if g.shape != (t, hv) or beta.shape != (t, hv) or state.shape != (hv, dk, dv):
        raise ValueError(f"{op}: g {g.shape}, beta {beta.shape} must be [{t}, {hv}] and state {state.shape} "
                         f"[{hv}, {dk}, {dv}]")
    return t, hk, dk, hv, dv
