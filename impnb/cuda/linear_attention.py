"""Linear attention (gated DeltaNet), CUDA path: Numba kernels with the signatures of
impnb/reference/linear_attention.py (see its docstring for the math). They run on a GPU and, unchanged, in the
Numba CUDA simulator.

Dimensions: T tokens (Tp padded to whole chunks), C conv channels, K kernel width, Hk / Hv key / value heads,
Dk / Dv head dims, N chunks of L tokens. Thread layouts:
  * conv: one thread per output (t, c): K products summed j = 0..K-1; one per state entry for the rolled state.
  * gates: one thread per (t, h).
  * recurrent delta rule: one thread per state column (h, j): column j of S (Dk entries) depends only on column j
    of v, so each thread runs the whole recurrence of its column; the q / k L2 norms are recomputed per thread in
    the same order (every thread of a head gets the same bits).
  * chunked delta rule: (1) one thread per (t, key head) normalises q / k into zero-padded buffers; (2) one per
    (h, chunk) takes the cumulative log-decay gamma; (3) one per (h, chunk, i, m) forms the UT system and the
    intra-chunk scores; (4) one per (h, chunk, column) solves the unit lower triangular system by forward
    substitution for U (v columns) and W (k columns); (5) one per state column (h, j) scans the chunks.
Float32 throughout (sums in a fixed order per thread: differences to the reference are summation-order ones).
"""
from __future__ import annotations

import math

import numpy as np
from numba import cuda

from . import _alloc
from ._common import kernel_float32
from ._launch import launch_numba
from ..reference.linear_attention import check_conv_shapes, check_delta_shapes

F32 = np.float32
ONE = F32(1.0)
SOFTPLUS_THRESHOLD = F32(20.0)


_f32 = kernel_float32


# ---- short convolution ---------------------------------------------------------------------------------------
@cuda.jit
def _conv_kernel(x, w, state, y, t_len, c_len, k_len, silu):
    """y[t, c] = act(sum_j w[c, j] * xs[t + j, c]), xs = state rows then x rows (all flattened row-major)."""
    idx = cuda.grid(1)
    if idx >= t_len * c_len:
        return
    t = idx // c_len
    c = idx - t * c_len
    acc = F32(0.0)
    for j in range(k_len):
        row = t + j  # row of xs
        if row < k_len - 1:
            val = state[row * c_len + c]
        else:
            val = x[(row - (k_len - 1)) * c_len + c]
        acc += w[c * k_len + j] * val
    if silu:
        acc = acc / (ONE + math.exp(-acc))
    y[idx] = acc


@cuda.jit
def _conv_state_kernel(x, state, new_state, t_len, c_len, k_len):
    """new_state[r, c] = xs[T + r, c]: the last K-1 inputs."""
    idx = cuda.grid(1)
    if idx >= (k_len - 1) * c_len:
        return
    r = idx // c_len
    c = idx - r * c_len
    row = t_len + r
    if row < k_len - 1:
        new_state[idx] = state[row * c_len + c]
    else:
        new_state[idx] = x[(row - (k_len - 1)) * c_len + c]


def causal_conv1d(x, weight, state, *, activation="silu"):
    """Causal depthwise convolution with a rolling state: (y float32 [T, C], state' [K-1, C]); see the reference."""
    if activation not in ("silu", None):
        raise ValueError(f"activation {activation!r}; expected 'silu' or None")
    x, weight, state = _f32(x), _f32(weight), _f32(state)
    check_conv_shapes(x, weight, state, "causal_conv1d")
    t, c = x.shape
    k = weight.shape[1]
    y = _alloc.empty((t, c), np.float32, label="causal_conv1d y")
    new_state = _alloc.empty((k - 1, c), np.float32, label="causal_conv1d state")
    rows = state.reshape(-1) if k > 1 else _alloc.zeros((1,), np.float32, label="causal_conv1d no state")
    flat = (x.reshape(-1), weight.reshape(-1), rows)  # K = 1: no state rows are read (a 1-element stand-in)
    launch_numba(_conv_kernel, t * c, *flat, y.reshape(-1), t, c, k, activation == "silu")
    launch_numba(_conv_state_kernel, (k - 1) * c, flat[0], flat[2], new_state.reshape(-1), t, c, k)
    return y, new_state


def causal_conv1d_step(x, weight, state, *, activation="silu"):
    """One decode step of causal_conv1d: (y float32 [C], state' [K-1, C]); the same kernels with T = 1."""
    x = _f32(x)
    if x.ndim != 1:
        raise ValueError(f"causal_conv1d_step: x must be one token [C], got shape {x.shape}")
    y, new_state = causal_conv1d(x.reshape(1, -1), weight, state, activation=activation)
    return y.reshape(-1), new_state


# ---- gates ---------------------------------------------------------------------------------------------------
@cuda.jit
def _gates_kernel(a, b, neg_a, dt_bias, g, beta, n, hv):
    idx = cuda.grid(1)
    if idx >= n:
        return
    h = idx % hv
    z = a[idx] + dt_bias[h]
    soft = z if z > SOFTPLUS_THRESHOLD else F32(math.log1p(math.exp(z)))
    g[idx] = neg_a[h] * soft
    beta[idx] = ONE / (ONE + math.exp(-b[idx]))


def gdn_gates(a, b, A, dt_bias):
    """(g = A softplus(a + dt_bias), beta = sigmoid(b)), float32 [T, Hv] each; see the reference."""
    a, b, A, dt_bias = _f32(a), _f32(b), _f32(A), _f32(dt_bias)
    if a.shape != b.shape or a.shape[-1:] != A.shape or A.shape != dt_bias.shape:
        raise ValueError(f"gdn_gates: a {a.shape}, b {b.shape}, A {A.shape}, dt_bias {dt_bias.shape} do not agree")
    g = _alloc.empty(a.shape, np.float32, label="gdn_gates g")
    beta = _alloc.empty(a.shape, np.float32, label="gdn_gates beta")
    launch_numba(_gates_kernel, a.size, a.reshape(-1), b.reshape(-1), A, dt_bias, g.reshape(-1),
                 beta.reshape(-1), a.size, A.shape[0] if A.ndim else 1)
    return g, beta


# ---- recurrent delta rule --------------------------------------------------------------------------------------
@cuda.jit(device=True)
def _inv_norm(x, base, d, l2norm, eps):
    """1 / sqrt(sum_i x[base + i]^2 + eps), or 1 without the L2 norm."""
    if not l2norm:
        return ONE
    ss = F32(0.0)
    for i in range(d):
        ss += x[base + i] * x[base + i]
    return ONE / math.sqrt(ss + eps)


@cuda.jit
def _delta_kernel(q, k, v, g, beta, s, o, t_len, hk, dk, hv, dv, scale, l2norm, eps):
    """Thread (h, j): column j of head h's state s [Hv, Dk, Dv] (updated in place) over all T tokens."""
    idx = cuda.grid(1)
    if idx >= hv * dv:
        return
    h = idx // dv
    j = idx - h * dv
    kh = h // (hv // hk)
    col = h * dk * dv + j  # s[h, i, j] = s[col + i * dv]
    for t in range(t_len):
        qk_base = (t * hk + kh) * dk
        q_inv = _inv_norm(q, qk_base, dk, l2norm, eps)
        k_inv = _inv_norm(k, qk_base, dk, l2norm, eps)
        decay = math.exp(g[t * hv + h])
        kv_mem = F32(0.0)
        for i in range(dk):
            si = s[col + i * dv] * decay
            s[col + i * dv] = si
            kv_mem += si * (k[qk_base + i] * k_inv)
        delta = (v[(t * hv + h) * dv + j] - kv_mem) * beta[t * hv + h]
        acc = F32(0.0)
        for i in range(dk):
            si = s[col + i * dv] + (k[qk_base + i] * k_inv) * delta
            s[col + i * dv] = si
            acc += si * ((q[qk_base + i] * q_inv) * scale)
        o[(t * hv + h) * dv + j] = acc


def gated_delta_rule(q, k, v, g, beta, state, *, scale=None, qk_l2norm=True, eps=1e-6):
    """The gated delta rule token by token: (o float32 [T, Hv, Dv], state' [Hv, Dk, Dv]); see the reference."""
    q, k, v, g, beta, state = (_f32(a) for a in (q, k, v, g, beta, state))
    t, hk, dk, hv, dv = check_delta_shapes(q, k, v, g, beta, state, "gated_delta_rule")
    out = _alloc.empty((t, hv, dv), np.float32, label="gated_delta_rule o")
    new_state = _alloc.empty((hv, dk, dv), np.float32, label="gated_delta_rule state")
    new_state[...] = state
    launch_numba(_delta_kernel, hv * dv, q.reshape(-1), k.reshape(-1), v.reshape(-1), g.reshape(-1),
                 beta.reshape(-1), new_state.reshape(-1), out.reshape(-1), t, hk, dk, hv, dv,
                 _scale(scale, dk), bool(qk_l2norm), F32(eps))
    return out, new_state


def _scale(scale, dk):
    return F32(dk ** -0.5 if scale is None else scale)


# ---- chunked delta rule ----------------------------------------------------------------------------------------
@cuda.jit
def _normalise_kernel(q, k, qn, kn, t_len, t_pad, hk, dk, scale, l2norm, eps):
    """Thread (t, kh) of the padded length: qn = l2norm(q) * scale, kn = l2norm(k); zeros past T."""
    idx = cuda.grid(1)
    if idx >= t_pad * hk:
        return
    base = idx * dk
    if idx >= t_len * hk:
        for i in range(dk):
            qn[base + i] = F32(0.0)
            kn[base + i] = F32(0.0)
        return
    q_inv = _inv_norm(q, base, dk, l2norm, eps)
    k_inv = _inv_norm(k, base, dk, l2norm, eps)
    for i in range(dk):
        qn[base + i] = (q[base + i] * q_inv) * scale
        kn[base + i] = k[base + i] * k_inv


@cuda.jit
def _gamma_kernel(g, beta, gamma, beta_pad, t_len, hv, n_chunks, size):
    """Thread (h, n): gamma[h, n, i] = sum_{m <= i} g[n L + m, h] (g = 0 past T); beta_pad likewise (0 past T)."""
    idx = cuda.grid(1)
    if idx >= hv * n_chunks:
        return
    h = idx // n_chunks
    n = idx - h * n_chunks
    acc = F32(0.0)
    for i in range(size):
        t = n * size + i
        gi = F32(0.0)
        bi = F32(0.0)
        if t < t_len:
            gi = g[t * hv + h]
            bi = beta[t * hv + h]
        acc += gi
        gamma[idx * size + i] = acc
        beta_pad[idx * size + i] = bi


@cuda.jit
def _pairs_kernel(qn, kn, gamma, beta_pad, system, intra, hk, dk, hv, n_chunks, size):
    """Thread (h, n, i, m): system = beta_i (k_i . k_m) D_im (m < i), intra = (q_i . k_m) D_im (m <= i), else 0."""
    idx = cuda.grid(1)
    if idx >= hv * n_chunks * size * size:
        return
    hn = idx // (size * size)
    rem = idx - hn * size * size
    i = rem // size
    m = rem - i * size
    h = hn // n_chunks
    n = hn - h * n_chunks
    if m > i:
        system[idx] = F32(0.0)
        intra[idx] = F32(0.0)
        return
    kh = h // (hv // hk)
    bi = beta_pad[hn * size + i]
    base_i = ((n * size + i) * hk + kh) * dk
    base_m = ((n * size + m) * hk + kh) * dk
    kk = F32(0.0)
    qk = F32(0.0)
    for d in range(dk):
        kk += (kn[base_i + d] * bi) * kn[base_m + d]
        qk += qn[base_i + d] * kn[base_m + d]
    decay = math.exp(gamma[hn * size + i] - gamma[hn * size + m])
    system[idx] = kk * decay if m < i else F32(0.0)
    intra[idx] = qk * decay


@cuda.jit
def _solve_kernel(v, kn, gamma, beta_pad, system, u, w, t_len, hk, dk, hv, dv, n_chunks, size):
    """Thread (h, n, col): forward substitution (I + L) x = rhs for one column; col < Dv: U (rhs = beta v),
    else W (rhs = beta exp(gamma) k). u [Hv, N, L, Dv], w [Hv, N, L, Dk]."""
    idx = cuda.grid(1)
    width = dv + dk
    if idx >= hv * n_chunks * width:
        return
    hn = idx // width
    col = idx - hn * width
    h = hn // n_chunks
    n = hn - h * n_chunks
    kh = h // (hv // hk)
    for i in range(size):
        t = n * size + i
        bi = beta_pad[hn * size + i]
        if col < dv:
            rhs = F32(0.0)
            if t < t_len:
                rhs = v[(t * hv + h) * dv + col] * bi
        else:
            rhs = (kn[(t * hk + kh) * dk + col - dv] * bi) * math.exp(gamma[hn * size + i])
        acc = F32(0.0)
        for m in range(i):
            if col < dv:
                xm = u[(hn * size + m) * dv + col]
            else:
                xm = w[(hn * size + m) * dk + col - dv]
            acc += system[(hn * size + i) * size + m] * xm
        if col < dv:
            u[(hn * size + i) * dv + col] = rhs - acc
        else:
            w[(hn * size + i) * dk + col - dv] = rhs - acc


@cuda.jit
def _scan_kernel(qn, kn, gamma, intra, u, w, s, v_new, o, t_len, hk, dk, hv, dv, n_chunks, size):
    """Thread (h, j): state column j across the chunks; v_new [Hv, L, Dv] is this column's scratch."""
    idx = cuda.grid(1)
    if idx >= hv * dv:
        return
    h = idx // dv
    j = idx - h * dv
    kh = h // (hv // hk)
    col = h * dk * dv + j
    for n in range(n_chunks):
        hn = h * n_chunks + n
        g_last = gamma[hn * size + size - 1]
        for i in range(size):  # V' = U - W S
            acc = F32(0.0)
            for d in range(dk):
                acc += w[(hn * size + i) * dk + d] * s[col + d * dv]
            v_new[(h * size + i) * dv + j] = u[(hn * size + i) * dv + j] - acc
        for i in range(size):  # O = (Q exp(gamma)) S + intra V'
            t = n * size + i
            q_decay = math.exp(gamma[hn * size + i])
            inter = F32(0.0)
            for d in range(dk):
                inter += (qn[(t * hk + kh) * dk + d] * q_decay) * s[col + d * dv]
            local = F32(0.0)
            for m in range(i + 1):
                local += intra[(hn * size + i) * size + m] * v_new[(h * size + m) * dv + j]
            if t < t_len:
                o[(t * hv + h) * dv + j] = inter + local
        chunk_decay = math.exp(g_last)
        for d in range(dk):  # S <- exp(gamma_L) S + (K exp(gamma_L - gamma))^T V'
            acc = F32(0.0)
            for i in range(size):
                k_decay = math.exp(g_last - gamma[hn * size + i])
                acc += (kn[((n * size + i) * hk + kh) * dk + d] * k_decay) * v_new[(h * size + i) * dv + j]
            s[col + d * dv] = s[col + d * dv] * chunk_decay + acc


def gated_delta_rule_chunked(q, k, v, g, beta, state, *, chunk_size=64, scale=None, qk_l2norm=True, eps=1e-6):
    """The gated delta rule chunk by chunk: (o float32 [T, Hv, Dv], state' [Hv, Dk, Dv]); see the reference."""
    if not (isinstance(chunk_size, (int, np.integer)) and chunk_size >= 1):
        raise ValueError(f"gated_delta_rule_chunked: chunk_size must be a positive integer, got {chunk_size!r}")
    q, k, v, g, beta, state = (_f32(a) for a in (q, k, v, g, beta, state))
    t, hk, dk, hv, dv = check_delta_shapes(q, k, v, g, beta, state, "gated_delta_rule_chunked")
    size = int(chunk_size)
    n_chunks = -(-t // size)
    t_pad = n_chunks * size
    buf = _chunk_buffers(t_pad, hk, dk, hv, dv, n_chunks, size)
    launch_numba(_normalise_kernel, t_pad * hk, q.reshape(-1), k.reshape(-1), buf["qn"], buf["kn"], t, t_pad, hk,
                 dk, _scale(scale, dk), bool(qk_l2norm), F32(eps))
    launch_numba(_gamma_kernel, hv * n_chunks, g.reshape(-1), beta.reshape(-1), buf["gamma"], buf["beta"], t, hv,
                 n_chunks, size)
    launch_numba(_pairs_kernel, hv * n_chunks * size * size, buf["qn"], buf["kn"], buf["gamma"], buf["beta"],
                 buf["system"], buf["intra"], hk, dk, hv, n_chunks, size)
    launch_numba(_solve_kernel, hv * n_chunks * (dv + dk), v.reshape(-1), buf["kn"], buf["gamma"], buf["beta"],
                 buf["system"], buf["u"], buf["w"], t, hk, dk, hv, dv, n_chunks, size)
    out = _alloc.empty((t, hv, dv), np.float32, label="gated_delta_rule_chunked o")
    new_state = _alloc.empty((hv, dk, dv), np.float32, label="gated_delta_rule_chunked state")
    new_state[...] = state
    launch_numba(_scan_kernel, hv * dv, buf["qn"], buf["kn"], buf["gamma"], buf["intra"], buf["u"], buf["w"],
                 new_state.reshape(-1), buf["v_new"], out.reshape(-1), t, hk, dk, hv, dv, n_chunks, size)
    return out, new_state


def _chunk_buffers(t_pad, hk, dk, hv, dv, n_chunks, size) -> dict:
    """Flat float32 scratch of the chunked kernels (every element is written before it is read)."""
    shapes = {"qn": t_pad * hk * dk, "kn": t_pad * hk * dk, "gamma": hv * t_pad, "beta": hv * t_pad,
              "system": hv * n_chunks * size * size, "intra": hv * n_chunks * size * size,
              "u": hv * t_pad * dv, "w": hv * t_pad * dk, "v_new": hv * size * dv}
    return {name: _alloc.empty((n,), np.float32, label=f"gated_delta_rule_chunked {name}")
            for name, n in shapes.items()}
