"""The engine's prefill: a prompt in chunks of at most ``engine.chunk`` tokens, through GEMMs (eager, not a graph).

Dimension legend: M tokens of the chunk, Dm hidden, N / K a linear's rows / width, H / HKV / D heads and head dim,
S cache slots in the view, E experts, TK top-k, V vocab.

Every linear is dequantized (a row block at a time into one preallocated float32 scratch: NVFP4 with the
nvfp4_dequantize op's kernel, exactly as impnb.reference.nvfp4_dequantize; bf16 / f16 widen exactly) and multiplied
with cuBLAS SGEMM (``cupy.matmul``, float32 in and out; CuPy leaves TF32 off unless CUPY_TF32=1), so prefill has the
reference's float32 numerics up to summation order. Norms are the rms_norm / rms_norm_add ops' kernels over M rows,
QK-norm, RoPE and the KV append the qkv_rope_append kernel over M rows, the MLP activation the gated_activation
kernel; attention reads the cache view [0, S) with the mask built from the slots' stored positions
(impnb.cuda.masks / impnb.cuda.attention, the registry ops). MoE: token by token through the decode MoE kernels
(rms_norm_linear router, moe_route, rms_norm_moe_experts: device routing, the top-k experts' GEMVs, experts summed
in top-k order).
"""
from __future__ import annotations

import numpy as np

from ..cuda import moe as moe_ops
from ..cuda._kernels import FMT_BF16, FMT_F32, FMT_NVFP4
from ..cuda.activations import gated_act_rows
from ..cuda.embedding import embed
from ..cuda.linear import rms_norm_gemv
from ..cuda.norms import rms_norm_add_rows, rms_norm_rows
from ..cuda.nvfp4 import dequant_rows
from ..cuda.rope import append_rows

SCRATCH_FLOATS = 1 << 24  # 64 MiB of float32 for dequantized weight row blocks


class Prefill:
    def __init__(self, engine):
        import cupy as cp
        self.e = engine
        cfg = engine.config
        kmax = max([cfg.hidden_size] + [L.o.K for L in engine.w.layers] +
                   [L.down.K for L in engine.w.layers if L.down is not None])
        self.scratch = cp.zeros(max(SCRATCH_FLOATS, 64 * kmax), cp.float32)

    # ---------------------------------------------------------------- linears
    def weight_rows(self, lin, r0: int, n: int):
        """Rows [r0, r0 + n) of ``lin`` as float32 [n, K] (a view of the scratch, or of the weight itself)."""
        import cupy as cp
        if lin.fmt == FMT_F32:
            return lin.data[r0:r0 + n]
        out = self.scratch[:n * lin.K].reshape(n, lin.K)
        if lin.fmt == FMT_NVFP4:
            dequant_rows(lin.data, lin.scales, lin.gscale, int(lin.ct), r0, n, lin.K, out)
        elif lin.fmt == FMT_BF16:  # bf16 bits are the high half of the float32's
            out[...] = (lin.data[r0:r0 + n].astype(cp.uint32) << 16).view(cp.float32)
        else:
            out[...] = lin.data[r0:r0 + n].astype(cp.float32)
        return out

    def linear(self, lin, x, r0: int = 0, n: int | None = None):
        """x [M, K] @ rows [r0, r0 + n) of ``lin`` transposed (+ bias) -> float32 [M, n]."""
        import cupy as cp
        n = lin.N if n is None else n
        step = max(1, self.scratch.size // lin.K)
        out = cp.empty((x.shape[0], n), cp.float32)
        for a in range(0, n, step):
            b = min(n, a + step)
            out[:, a:b] = x @ self.weight_rows(lin, r0 + a, b - a).T
        if lin.bias is not None:
            out += lin.bias[r0:r0 + n]
        return out

    # ---------------------------------------------------------------- the pass
    def run(self, ids: np.ndarray, p0: int, *, all_logits: bool, taps=None):
        import cupy as cp
        e = self.e
        rows = []
        for a in range(0, ids.size, e.chunk):
            x = self.chunk(ids[a:a + e.chunk], p0 + a, taps)
            if all_logits:
                rows.append(self.logits_rows(x, taps))
        if all_logits:
            return cp.concatenate(rows)
        cfg = e.config
        e.x[...] = x[-1]
        rms_norm_gemv(e.w.lm_head, e.x, e.logits, norm=e.w.final_norm, eps=cfg.rms_eps, offset=cfg.norm_offset,
                      softcap=cfg.final_softcap or 0.0)
        return e.logits

    def logits_rows(self, x, taps=None):
        import cupy as cp
        cfg, w = self.e.config, self.e.w
        h = self.norm(x, w.final_norm)
        _tap(taps, "final_norm", None, h)
        out = self.linear(w.lm_head, h)
        if cfg.final_softcap:
            c = np.float32(cfg.final_softcap)
            out = c * cp.tanh(out / c)
        _tap(taps, "logits", None, out)
        return out

    def norm(self, x, weight):
        import cupy as cp
        cfg = self.e.config
        out = cp.empty_like(x)
        rms_norm_rows(x, weight, out, x.shape[0], x.shape[1], cfg.rms_eps, cfg.norm_offset)
        return out

    def chunk(self, ids: np.ndarray, p0: int, taps):
        import cupy as cp
        e, cfg = self.e, self.e.config
        m = ids.size
        ids_dev = cp.asarray(ids.astype(np.int32))
        x = cp.empty((m, cfg.hidden_size), cp.float32)
        embed(e.w.embed, ids_dev, x, m, e.w.embed_scale)
        _tap(taps, "embedding", None, x)
        e.st[0] = p0
        for L in e.w.layers:
            self.attention(L, x, p0, m, taps)
            if L.router is not None:
                self.moe(L, x, taps)
            else:
                self.mlp(L, x, taps)
            _tap(taps, "residual", L.index, x)
        return x

    def attention(self, L, x, p0, m, taps):
        import cupy as cp
        from ..cuda.attention import attention
        from ..cuda.masks import attention_mask
        h = self.norm(x, L.attn_norm)
        _tap(taps, "attn_norm", L.index, h)
        qkv = self.linear(L.qkv, h)  # [M, (H + 2 HKV) D]
        q = cp.empty((m, L.H, L.D), cp.float32)
        append_rows(qkv, L.qkv.N, q, rows=m, q_norm=L.q_norm, k_norm=L.k_norm, v_norm=L.v_norm, k_eq_v=L.k_eq_v,
                    eps=L.eps, offset=L.offset, **L.rope_args(self.e))
        used = min(L.C, p0 + m)
        positions = cp.arange(p0, p0 + m, dtype=cp.int64)
        mask = attention_mask(positions, L.slot_pos[:used], window=L.window or None)
        _tap(taps, "q", L.index, q)
        slots = (positions % L.C) if L.window else positions
        _tap(taps, "k", L.index, L.kc[slots])
        _tap(taps, "v", L.index, L.vc[slots])
        out = attention(q, L.kc[:used], L.vc[:used], mask, scale=L.scale, softcap=L.softcap or None,
                        sinks=L.sinks).reshape(m, L.H * L.D)
        y = self.linear(L.o, out)
        _tap(taps, "attn_out", L.index, y)
        self.residual(x, y, L.post_attn_norm, L)

    def mlp(self, L, x, taps):
        import cupy as cp
        h = self.norm(x, L.ffn_norm)
        _tap(taps, "ffn_norm", L.index, h)
        gu = self.linear(L.gu, h)
        inner = L.gu.N // 2
        a = cp.empty((x.shape[0], inner), cp.float32)
        gated_act_rows(gu, x.shape[0], inner, L.act, a)
        y = self.linear(L.down, a)
        self.ffn_out_tap(taps, y, L)
        self.residual(x, y, L.post_ffn_norm, L)

    def moe(self, L, x, taps):
        """Each token through the decode path's MoE kernels (router GEMV, device top-k, grouped expert GEMVs): no
        host round trip for the routing, and the top-k experts' rows are read once per token."""
        import cupy as cp
        e, moe = self.e, self.e.config.moe
        _tap(taps, "ffn_norm", L.index, self.norm(x, L.ffn_norm) if taps is not None else None)
        logits = cp.empty((x.shape[0], moe.n_experts), cp.float32)
        y = cp.zeros_like(x)
        for t in range(x.shape[0]):
            rms_norm_gemv(L.router, x[t], logits[t], norm=L.ffn_norm, eps=L.eps, offset=L.offset)
            moe_ops.route_topk(logits[t], moe.n_experts, moe.top_k, moe.gating, moe.renormalize, e.moe_ids, e.moe_w)
            moe_ops.experts_up(L.experts_gu, e.moe_ids, x[t], e.moe_gu, norm=L.ffn_norm, eps=L.eps, offset=L.offset,
                               top_k=moe.top_k)
            moe_ops.experts_down(L.experts_down, e.moe_ids, e.moe_w, e.moe_gu, y[t], activation=L.act,
                                 top_k=moe.top_k)
        _tap(taps, "router_logits", L.index, logits)
        self.ffn_out_tap(taps, y, L)
        self.residual(x, y, L.post_ffn_norm, L)

    def ffn_out_tap(self, taps, y, L):
        """The reference taps ffn_out after the sandwich post-norm (impnb/model/blocks.py)."""
        if taps is not None:
            taps.tap("ffn_out", L.index, y if L.post_ffn_norm is None else self.norm(y, L.post_ffn_norm))

    def residual(self, x, y, post_norm, L):
        if post_norm is None:
            x += y
        else:
            rms_norm_add_rows(y, post_norm, x, x.shape[0], x.shape[1], L.eps, L.offset)


def _tap(taps, name, layer, array):
    if taps is not None:
        taps.tap(name, layer, array)
