"""Sampling ops, CUDA path (same signatures as impnb/reference/sampling.py): CuPy on the device.

Dimensions: V vocabulary, ... rows, N ids of a token set. Same contract as the reference: stable order (descending,
ties -> lower id), float64 keep/cut decisions and CDF, the caller's uniform u. A cumulative sum on the device adds
in a different order than NumPy's, so a draw can only differ when the CDF lands within ~1e-15 of u's threshold.
argmax_token runs the engine's two-pass device argmax (kernels/sampling.cu; ``argmax_device`` on resident
buffers inside the decode graph). GPU only (CuPy).
"""
from __future__ import annotations

from ._outputs import guarded
from ._launch import gpu_only, require_gpu


def _rows(logits):
    import cupy as cp
    x = cp.asarray(logits)
    if x.ndim == 0:
        raise ValueError("logits must have a vocabulary axis, got a scalar")
    if x.dtype.kind != "f":
        raise ValueError(f"logits must be floating point, got {x.dtype}")
    return x.astype(cp.float32, copy=True)


def _token_set(ids, vocab: int, what: str):
    import cupy as cp
    import numpy as np
    from ._runtime import to_host
    host = np.unique(np.asarray(to_host(ids) if ids is not None else [], dtype=np.int64).reshape(-1))
    if host.size and (host[0] < 0 or host[-1] >= vocab):
        bad = host[(host < 0) | (host >= vocab)]
        raise ValueError(f"{what}: token id(s) {bad[:8].tolist()} outside the vocabulary [0, {vocab})")
    return cp.asarray(host)


@gpu_only
def repetition_penalty(logits, token_ids, penalty: float):
    """CTRL-style repetition penalty: x[t] * p if x[t] < 0 else x[t] / p, for t in the set token_ids; float32."""
    require_gpu("repetition_penalty")
    import cupy as cp
    x = _rows(logits)
    if not penalty > 0:
        raise ValueError(f"repetition penalty must be > 0, got {penalty}")
    ids = _token_set(token_ids, x.shape[-1], "repetition_penalty")
    if ids.size == 0 or penalty == 1.0:
        return guarded(x, "repetition_penalty")
    p = cp.float32(penalty)
    picked = x[..., ids]
    x[..., ids] = cp.where(picked < 0, picked * p, picked / p)
    return guarded(x, "repetition_penalty")


@gpu_only
def ban_tokens(logits, banned_ids):
    """x[..., t] <- -inf for every t in ``banned_ids``; float32 [..., V]."""
    require_gpu("ban_tokens")
    import cupy as cp
    x = _rows(logits)
    ids = _token_set(banned_ids, x.shape[-1], "ban_tokens")
    if ids.size:
        x[..., ids] = -cp.inf
    return guarded(x, "ban_tokens")


def _check_row_values(x, op: str) -> None:
    import cupy as cp
    if bool((cp.isnan(x) | cp.isposinf(x)).any()):
        raise ValueError(f"{op}: logits contain NaN or +inf")
    if not bool(cp.isfinite(x).any(axis=-1).all()):
        raise ValueError(f"{op}: a row has no finite logit (every token banned or filtered)")


def _softmax64(x):
    import cupy as cp
    m = cp.max(x, axis=-1, keepdims=True).astype(cp.float64)
    e = cp.exp(x.astype(cp.float64) - m)
    return e / cp.sum(e, axis=-1, keepdims=True)


@gpu_only
def filter_logits(logits, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0, min_p: float = 0.0):
    """Temperature, then top-k, top-p and min-p filtering (HF's order); filtered entries -inf; float32 [..., V]."""
    require_gpu("filter_logits")
    import cupy as cp
    x = _rows(logits)
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0 for filter_logits (greedy uses argmax_token), got {temperature}")
    if top_k < 0 or not 0.0 < top_p <= 1.0 or not 0.0 <= min_p <= 1.0:
        raise ValueError(f"need top_k >= 0, 0 < top_p <= 1, 0 <= min_p <= 1; got {top_k}, {top_p}, {min_p}")
    _check_row_values(x, "filter_logits")
    x = x / cp.float32(temperature)
    order = cp.argsort(-x, axis=-1)  # stable: ties -> lower id
    if 0 < top_k < x.shape[-1]:
        cp.put_along_axis(x, order[..., top_k:], -cp.inf, axis=-1)
    if top_p < 1.0:
        p_sorted = cp.take_along_axis(_softmax64(x), order, axis=-1)
        mass_before = cp.cumsum(p_sorted, axis=-1) - p_sorted
        cut = mass_before >= top_p
        cut[..., 0] = False
        cp.put_along_axis(x, order, cp.where(cut, -cp.inf, cp.take_along_axis(x, order, axis=-1)), axis=-1)
    if min_p > 0.0:
        m = cp.max(x, axis=-1, keepdims=True).astype(cp.float64)
        x[cp.exp(x.astype(cp.float64) - m) < min_p] = -cp.inf
    return guarded(x, "filter_logits")


@gpu_only
def sample_token(logits, u):
    """Inverse-CDF draw in token-id order with the caller's uniform u in [0, 1): int64 [...]."""
    require_gpu("sample_token")
    import cupy as cp
    x = cp.asarray(logits, dtype=cp.float32)
    u = cp.asarray(u, dtype=cp.float64)
    if u.shape != x.shape[:-1]:
        raise ValueError(f"u has shape {u.shape}; expected one draw per row {x.shape[:-1]}")
    if bool(((u < 0) | (u >= 1) | cp.isnan(u)).any()):
        raise ValueError(f"u must lie in [0, 1), got {u}")
    _check_row_values(x, "sample_token")
    m = cp.max(x, axis=-1, keepdims=True).astype(cp.float64)
    cdf = cp.cumsum(cp.exp(x.astype(cp.float64) - m), axis=-1)
    target = (u * cdf[..., -1])[..., None]
    ids = cp.sum(cdf <= target, axis=-1)
    return guarded(cp.minimum(ids, x.shape[-1] - 1).astype(cp.int64), "sample_token")


def argmax_groups(vocab: int) -> int:
    """Blocks of the first argmax pass (the engine sizes its partial buffers with it)."""
    from ._launch import sm_count
    return max(1, min(4 * sm_count(), -(-vocab // 256)))


def argmax_device(logits, ban, vocab: int, part_v, part_i, st, out_ids, max_out: int) -> None:
    """Greedy id of logits [V] on the device (kernels/sampling.cu): banned ids (ban uint8 [V] != 0) never win,
    lowest id on ties; st[1] = the id, out_ids[st[2]] = it (while st[2] < max_out), st[2] += 1, st[0] += 1."""
    from ._launch import launch_raw
    groups = int(part_v.shape[0])
    launch_raw("sampling.cu", "argmax_partials", (groups,), (256,), (logits, ban, vocab, part_v, part_i))
    launch_raw("sampling.cu", "argmax_select", (1,), (32,), (part_v, part_i, groups, st, out_ids, max_out))


@gpu_only
def argmax_token(logits):
    """Greedy choice: the id of the largest logit, the LOWEST id on ties. [..., V] -> int64 [...].
    The engine's two-pass device argmax, one row at a time."""
    require_gpu("argmax_token")
    import cupy as cp
    import numpy as np
    from . import _alloc
    x = cp.asarray(logits)
    if x.ndim == 0:
        raise ValueError("logits must have a vocabulary axis, got a scalar")
    if bool(cp.isnan(x).any()):
        raise ValueError("argmax_token: logits contain NaN")
    rows = cp.ascontiguousarray(x.astype(cp.float32)).reshape(-1, x.shape[-1])
    vocab = int(x.shape[-1])
    groups = argmax_groups(vocab)
    part_v, part_i = cp.empty(groups, cp.float32), cp.empty(groups, cp.int32)
    st, picked = cp.zeros(4, cp.int32), cp.zeros(1, cp.int32)
    out = _alloc.empty((rows.shape[0],), np.int64, label="argmax_token")
    for r in range(rows.shape[0]):
        st[2] = 0
        argmax_device(rows[r], None, vocab, part_v, part_i, st, picked, 1)
        out[r] = picked[0]
    return out.reshape(x.shape[:-1])
