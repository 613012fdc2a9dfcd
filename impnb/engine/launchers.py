"""How the engine launches its kernels: the registered ops' CUDA paths on resident buffers (``Launchers``), or the
same launches each compared with its op's reference on host copies of its inputs (``CheckedLaunches``: the eager,
op-by-op replay of the decode step that ``--backend check`` runs; the graph replays the very same launches).

Each method is one launch (or, for the MoE experts, the two launches of one op) and names the op it belongs to.
``set_layer(layer)`` tells the launchers which decoder layer runs (impnb/engine/layers.py calls it), so a
CrossCheckError names op and layer. The module functions are looked up at call time (tests plant bugs in them).
"""
from __future__ import annotations

import numpy as np

from ..cuda import attention as attn_ops
from ..cuda import embedding as embed_ops
from ..cuda import linear as linear_ops
from ..cuda import moe as moe_ops
from ..cuda import norms as norm_ops
from ..cuda import rope as rope_ops
from ..cuda import sampling as sampling_ops


class Launchers:
    """The decode step's launches, unchecked (what the captured graph holds)."""

    layer = None

    def set_layer(self, layer) -> None:
        self.layer = layer

    def rms_norm_gemv(self, w, x, y, **kw):  # op rms_norm_linear
        linear_ops.rms_norm_gemv(w, x, y, **kw)

    def gated_gemv(self, w, gate_up, y, **kw):  # op gated_linear
        linear_ops.gated_gemv(w, gate_up, y, **kw)

    def norm_qkv_rope_gemv(self, w, x, norm, **kw):  # op rms_norm_qkv_rope_append
        rope_ops.norm_qkv_rope_gemv(w, x, norm, **kw)

    def append_rows(self, qkv, row_stride, q, **kw):  # op qkv_rope_append
        rope_ops.append_rows(qkv, row_stride, q, **kw)

    def attention_partials(self, q, kc, vc, slot_pos, st, part, **kw):  # op attention_decode
        return attn_ops.attention_partials(q, kc, vc, slot_pos, st, part, **kw)

    def attention_output_gemv(self, w, part, sinks, splits, d, y, **kw):  # op attention_output
        attn_ops.attention_output_gemv(w, part, sinks, splits, d, y, **kw)

    def rms_norm_add_rows(self, t, weight, x, rows, d, eps, offset, **kw):  # op rms_norm_add
        norm_ops.rms_norm_add_rows(t, weight, x, rows, d, eps, offset, **kw)

    def route_topk(self, logits, n_experts, top_k, gating, renormalize, ids, weights):  # op moe_route
        moe_ops.route_topk(logits, n_experts, top_k, gating, renormalize, ids, weights)

    def experts(self, up, down, ids, weights, x, hidden, out, *, norm, eps, offset, activation, top_k):
        """op rms_norm_moe_experts: out += experts(rms_norm(x)) (moe_up_gemv then moe_down_gemv)."""
        moe_ops.experts_up(up, ids, x, hidden, norm=norm, eps=eps, offset=offset, top_k=top_k)
        moe_ops.experts_down(down, ids, weights, hidden, out, activation=activation, top_k=top_k)

    def embed(self, table, ids, x, rows, scale):  # op embedding
        embed_ops.embed(table, ids, x, rows, scale)

    def argmax(self, logits, ban, vocab, part_v, part_i, st, out_ids, max_out):  # op argmax_token
        sampling_ops.argmax_device(logits, ban, vocab, part_v, part_i, st, out_ids, max_out)


class CheckedLaunches(Launchers):
    """Every launch followed by its op's reference on host copies of the inputs, compared through the tolerance
    table; the first op outside its rule raises CrossCheckError naming op and layer. Eager only (it synchronises)."""

    def _check(self, op, reference, fast, args=(), kwargs=None):
        from .. import tolerances
        from ..errors import CrossCheckError
        try:
            tolerances.assert_close(op, reference, fast, args=args, kwargs=kwargs or {})
        except CrossCheckError as exc:
            index = getattr(self.layer, "index", self.layer)
            where = "outside the layers" if index is None else f"layer {index}"
            raise exc.in_context(index, f"{where} of the engine's decode step") from None

    def rms_norm_gemv(self, w, x, y, *, norm, eps, offset=0.0, softcap=0.0, accumulate=False):
        from ..reference.linear import rms_norm_linear
        xh, nh, y0, wh = _h(x)[None], _h(norm), _h(y), host_weight(w)
        super().rms_norm_gemv(w, x, y, norm=norm, eps=eps, offset=offset, softcap=softcap, accumulate=accumulate)
        kw = dict(eps=eps, offset=offset, softcap=softcap or None)
        ref = rms_norm_linear(xh, nh, wh, _h(w.bias), **kw)
        self._check("rms_norm_linear", ref + (y0[None, :w.N] if accumulate else 0), _h(y)[None, :w.N],
                    (xh, nh, wh, _h(w.bias)), kw)

    def gated_gemv(self, w, gate_up, y, *, activation, accumulate=False):
        from ..reference.linear import gated_linear
        gu, wh = _h(gate_up)[None, :2 * w.K], host_weight(w)
        kw = dict(activation=activation, residual=_h(y)[None, :w.N] if accumulate else None)
        super().gated_gemv(w, gate_up, y, activation=activation, accumulate=accumulate)
        self._check("gated_linear", gated_linear(gu, wh, _h(w.bias), **kw), _h(y)[None, :w.N],
                    (gu, wh, _h(w.bias)), kw)

    def norm_qkv_rope_gemv(self, w, x, norm, **kw):
        from ..reference.rope import rms_norm_qkv_rope_append
        before, xh, nh, wh = self._cache_state(kw), _h(x)[None], _h(norm), host_weight(w)
        super().norm_qkv_rope_gemv(w, x, norm, **kw)
        lay = self.layer
        ref = rms_norm_qkv_rope_append(xh, nh, wh, *before, n_heads=kw["H"], bias=_h(w.bias), eps=kw["eps"],
                                       offset=kw["offset"], style="interleaved" if kw["interleaved"] else "neox",
                                       attention_scaling=lay.rope_scaling)
        self._check("rms_norm_qkv_rope_append", ref, self._after(kw["q"], kw))

    def append_rows(self, qkv, row_stride, q, **kw):
        from ..reference.rope import qkv_rope_append
        before, rows = self._cache_state(kw), kw["rows"]
        qkv_h = _h(qkv)[:rows * row_stride].reshape(rows, row_stride)
        super().append_rows(qkv, row_stride, q, **kw)
        ref = qkv_rope_append(qkv_h, *before[:3], before[3][0] + np.arange(rows), before[4],
                              n_heads=kw["H"], q_norm=_h(kw["q_norm"]), k_norm=_h(kw["k_norm"]),
                              v_norm=kw["v_norm"], k_eq_v=kw["k_eq_v"], eps=kw["eps"], offset=kw["offset"],
                              style="interleaved" if kw["interleaved"] else "neox",
                              attention_scaling=self.layer.rope_scaling)
        self._check("qkv_rope_append", ref, self._after(q, kw, rows))

    def _cache_state(self, kw):
        """(k_cache, v_cache, slot_pos, positions [1], inv_freq) on the host before the append."""
        lay = self.layer
        return _h(kw["kc"]), _h(kw["vc"]), _h(kw["slot_pos"]), np.array([int(_h(kw["st"])[0])]), lay.inv_freq

    def _after(self, q, kw, rows: int = 1):
        h, d = kw["H"], kw["D"]
        return _h(q)[:rows * h * d].reshape(rows, h, d), _h(kw["kc"]), _h(kw["vc"]), _h(kw["slot_pos"])

    def attention_partials(self, q, kc, vc, slot_pos, st, part, **kw):
        from ..reference.attention import attention_decode
        h, d = kw["H"], kw["D"]
        args = (_h(q)[:h * d].reshape(h, d), _h(kc), _h(vc), _h(slot_pos), int(_h(st)[0]))
        splits = super().attention_partials(q, kc, vc, slot_pos, st, part, **kw)
        rkw = dict(scale=kw["scale"], softcap=kw["softcap"] or None, window=kw["window"] or None, chunk=kw["chunk"])
        self._check("attention_decode", attention_decode(*args, **rkw), _partials(part, h, splits, d), args, rkw)
        return splits

    def attention_output_gemv(self, w, part, sinks, splits, d, y, *, accumulate=False):
        from ..reference.attention import attention_output
        m, l, acc = _partials(part, w.K // d, splits, d)
        wh, y0 = host_weight(w), _h(y)[:w.N]
        kw = dict(sinks=_h(sinks), residual=y0 if accumulate else None)
        super().attention_output_gemv(w, part, sinks, splits, d, y, accumulate=accumulate)
        self._check("attention_output", attention_output(m, l, acc, wh, _h(w.bias), **kw), _h(y)[:w.N],
                    (m, l, acc, wh, _h(w.bias)), kw)

    def rms_norm_add_rows(self, t, weight, x, rows, d, eps, offset, **kw):
        from ..reference.norms import rms_norm_add
        args = (_h(x)[:rows * d].reshape(rows, d), _h(t)[:rows * d].reshape(rows, d), _h(weight))
        super().rms_norm_add_rows(t, weight, x, rows, d, eps, offset, **kw)
        rkw = dict(eps=eps, offset=offset)
        self._check("rms_norm_add", rms_norm_add(*args, **rkw), _h(x)[:rows * d].reshape(rows, d), args, rkw)

    def route_topk(self, logits, n_experts, top_k, gating, renormalize, ids, weights):
        from ..reference.moe import moe_route
        lg = _h(logits)[None, :n_experts]
        super().route_topk(logits, n_experts, top_k, gating, renormalize, ids, weights)
        ref = moe_route(lg, top_k=top_k, gating=gating, renormalize=renormalize)
        self._check("moe_route", ref, (_h(weights)[None, :top_k], _h(ids)[None, :top_k].astype(np.int32)))

    def experts(self, up, down, ids, weights, x, hidden, out, *, norm, eps, offset, activation, top_k):
        from ..reference.moe import rms_norm_moe_experts
        args = (_h(x)[None], _h(norm), _h(weights)[None, :top_k], _h(ids)[None, :top_k], host_weight(up),
                host_weight(down))
        kw = dict(eps=eps, offset=offset, activation=activation, residual=_h(out)[None])
        super().experts(up, down, ids, weights, x, hidden, out, norm=norm, eps=eps, offset=offset,
                        activation=activation, top_k=top_k)
        self._check("rms_norm_moe_experts", rms_norm_moe_experts(*args, **kw), _h(out)[None], args, kw)

    def embed(self, table, ids, x, rows, scale):
        from ..reference.embedding import embedding
        ids_h = _h(ids)[:rows].astype(np.int64)
        super().embed(table, ids, x, rows, scale)
        ref = embedding(ids_h, host_weight(table), scale=scale)
        self._check("embedding", ref, _h(x)[:rows * table.K].reshape(rows, table.K))

    def argmax(self, logits, ban, vocab, part_v, part_i, st, out_ids, max_out):
        from ..reference.sampling import argmax_token, ban_tokens
        lg = _h(logits)[:vocab]
        if ban is not None:
            lg = ban_tokens(lg, np.flatnonzero(_h(ban)))
        super().argmax(logits, ban, vocab, part_v, part_i, st, out_ids, max_out)
        self._check("argmax_token", argmax_token(lg), np.int64(_h(st)[1]))


def _h(a):
    """A host copy (NumPy) of a device array; None stays None."""
    if a is None:
        return None
    from ..cuda._runtime import to_host
    return np.asarray(to_host(a))


def _partials(part, heads: int, splits: int, d: int):
    pm, pl, pacc = (_h(p) for p in part)
    n = heads * splits
    return pm[:n].reshape(heads, splits), pl[:n].reshape(heads, splits), pacc[:n * d].reshape(heads, splits, d)


def host_weight(w):
    """A DeviceLinear as the reference reads it: NVFP4 rows dequantized exactly with each row's own global scale
    (fused parts may differ), bf16 / f16 widened; stacked experts [E, N, K]."""
    from ..cuda._kernels import FMT_BF16, FMT_F16, FMT_NVFP4
    data = _h(w.data)
    if w.fmt == FMT_NVFP4:
        dense = _nvfp4_rows(data, _h(w.scales), _h(w.gscale), w.ct)
    elif w.fmt == FMT_BF16:
        dense = (data.astype(np.uint32) << 16).view(np.float32)
    elif w.fmt == FMT_F16:
        dense = data.astype(np.float32)
    else:
        dense = data
    return dense.reshape(w.experts, w.N, w.K) if w.experts else dense


def _nvfp4_rows(packed, scales, gscale, ct: bool):
    from ..formats import NVFP4Tensor
    from ..reference.nvfp4 import nvfp4_dequantize
    out = np.zeros((packed.shape[0], 2 * packed.shape[1]), np.float32)
    start = 0
    for end in list(np.flatnonzero(np.diff(gscale)) + 1) + [gscale.shape[0]]:
        g = float(gscale[start])
        if g != 0.0:  # 0: an unusable tensor, zeros (as the reference)
            t = NVFP4Tensor(packed[start:end], scales[start:end], g, "compressed-tensors" if ct else "modelopt")
            out[start:end] = nvfp4_dequantize(t)
        start = end
    return out
