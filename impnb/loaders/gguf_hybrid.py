"""GGUF files of the hybrid linear-attention architectures (llama.cpp qwen3next, qwen35, qwen35moe): the value
changes llama.cpp's converter makes (conversion/qwen.py: Qwen3NextModel, _LinearAttentionVReorderBase), undone so
that the tensors are exactly the Hugging Face ones, and its multi-token-prediction layers set aside.

Legend: Hk / Hv key / value heads of the linear layers, r = Hv / Hk, Dk / Dv head dims, C = 2 Hk Dk + Hv Dv.
NumPy orientation is HF's (rows = outputs; the GGUF reader reverses ne).

  converter                                                undone here
  every "*norm.weight" except linear_attn.norm: w + 1       w - 1 (the zero-centred (1 + w) weights of HF)
  A_log -> ssm_a = -exp(A_log)                              A_log = log(-ssm_a)
  conv1d [C, 1, K] squeezed to [C, K]                       kept [C, K] (the model accepts both)
  Qwen3-Next in_proj_qkvz -> attn_qkv + attn_gate           kept split (the model reads in_proj_qkv + in_proj_z)
  Qwen3.5 (Hk != Hv): value heads reordered from grouped    tiled -> grouped on the same axes: the v rows of
    (head g r + j, by key head g) to tiled (j Hk + g) in     attn_qkv, the rows of attn_gate, ssm_beta, ssm_alpha,
    in_proj_qkv (v rows), in_proj_z, in_proj_b / _a,        the entries of ssm_a, ssm_dt, the v channels of
    A_log, dt_bias, conv1d (v channels), out_proj (cols)    ssm_conv1d and the columns of ssm_out
  MTP layers appended after block_count - nextn layers      renamed mtp.layers.{j}. (ignored by the text model)
"""
from __future__ import annotations

import re

import numpy as np

from ..errors import FormatError

_LAYER = re.compile(r"^blk\.(\d+)\.(.+)$")
# (GGUF stem, axis of the value heads, per-head width: "v" = Dv, 1 = one entry per head)
_TILED = {"attn_gate.weight": (0, "v"), "ssm_beta.weight": (0, 1), "ssm_alpha.weight": (0, 1), "ssm_a": (0, 1),
          "ssm_dt.bias": (0, 1), "ssm_out.weight": (1, "v")}


def undo_converter(gguf_name: str, w: np.ndarray, meta: dict, arch: str, where: str) -> np.ndarray:
    """The HF value of one tensor of a qwen3next / qwen35 / qwen35moe file (see the module docstring)."""
    m = _LAYER.match(gguf_name)
    stem = m.group(2) if m else gguf_name
    if arch in ("qwen35", "qwen35moe"):
        w = _untile(stem, w, meta, arch, where)
    if gguf_name.endswith("norm.weight") and stem != "ssm_norm.weight":
        w = w - np.float32(1.0)
    if stem == "ssm_a":
        with np.errstate(divide="ignore", invalid="ignore"):
            w = np.log(-w).astype(np.float32)
        if not np.isfinite(w).all():
            raise FormatError(f"{where}: ssm_a must be negative (it stores -exp(A_log))")
    return w


def _geometry(meta: dict, arch: str, where: str) -> tuple[int, int, int, int]:
    def get(key):
        value = meta.get(f"{arch}.{key}")
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise FormatError(f"{where}: {arch}.{key} must be a positive integer to undo the value-head order, "
                              f"got {value!r}")
        return value
    hk, hv, dk, inner = get("ssm.group_count"), get("ssm.time_step_rank"), get("ssm.state_size"), get("ssm.inner_size")
    if hv % hk or inner % hv:
        raise FormatError(f"{where}: {hv} value heads / inner size {inner} do not fit {hk} key heads")
    return hk, hv, dk, inner // hv


def _untile(stem: str, w: np.ndarray, meta: dict, arch: str, where: str) -> np.ndarray:
    if stem not in _TILED and stem not in ("attn_qkv.weight", "ssm_conv1d.weight"):
        return w
    hk, hv, dk, dv = _geometry(meta, arch, where)
    if hk == hv:
        return w
    if stem in ("attn_qkv.weight", "ssm_conv1d.weight"):  # q | k rows / channels stay, v part is tiled
        split = 2 * hk * dk
        return np.concatenate([w[:split], _grouped(w[split:], 0, hk, hv, dv)], axis=0)
    axis, width = _TILED[stem]
    return _grouped(w, axis, hk, hv, dv if width == "v" else 1)


def _grouped(w: np.ndarray, axis: int, hk: int, hv: int, width: int) -> np.ndarray:
    """Tiled value heads (position j Hk + g) back to grouped (g r + j) along ``axis`` (heads of ``width``)."""
    r = hv // hk
    moved = np.moveaxis(w, axis, 0)
    if moved.shape[0] != hv * width:
        raise FormatError(f"value-head axis of length {moved.shape[0]}, expected {hv} heads x {width}")
    regrouped = moved.reshape(r, hk, width, *moved.shape[1:]).swapaxes(0, 1).reshape(moved.shape)
    return np.ascontiguousarray(np.moveaxis(regrouped, 0, axis))


def set_aside_mtp(canonical: dict, meta: dict, arch: str) -> dict:
    """Rename the tensors of the multi-token-prediction layers (the last nextn_predict_layers of block_count) to
    mtp.layers.{j}.*: the text model does not run them (transformers ignores mtp.* too)."""
    nextn, blocks = meta.get(f"{arch}.nextn_predict_layers"), meta.get(f"{arch}.block_count")
    if not (_is_int(nextn) and _is_int(blocks) and 0 < nextn < blocks):
        return canonical   # nothing to set aside, or values the config validation refuses
    first = blocks - nextn
    out = {}
    for name, info in canonical.items():
        m = re.match(r"^model\.layers\.(\d+)\.(.+)$", name)
        if m and int(m.group(1)) >= first:
            name = f"mtp.layers.{int(m.group(1)) - first}.{m.group(2)}"
        elif (g := _LAYER.match(name)) and int(g.group(1)) >= first:  # nextn.* tensors the table does not name
            name = "mtp." + name
        out[name] = info
    return out


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
