"""Read llama.cpp's ``llama-eval-callback`` log into a partial golden dump.

The tool prints, for every graph node it evaluates, a header
    common_debug_cb_eval:   <name> = (<type>) <OP>(<src0>{ne}, <src1>{ne}}) = {ne0, ne1, ne2, ne3}
(``ggml_debug:`` in older builds), then the tensor's values as nested brackets (``%12.4f``): every index of axis
3, and of each other axis the first 3 and last 3 indices when it is longer than 6 (all of them otherwise), ``...``
marking the cut; then ``sum = %f`` (the float32 sum of all elements, once per index of axis 3). ggml's ne0 is the
innermost axis, so a tensor {ne0, ne1, ne2, ne3} is NumPy's [ne3, ne2, ne1, ne0] (leading 1s dropped). The token
ids come from its ``number of input tokens = N`` line and the N lines after it, when stderr is in the log.

Names map to impnb's taps (the last node of that name in graph order wins; q and k are the RoPE outputs):
    embd / inp_embd / inp_scaled -> embedding      attn_norm-i -> blk.i.attn_norm     Qcur-i, Kcur-i -> .q, .k
    Vcur-i -> .v      attn_out-i -> .attn_out     ffn_norm-i -> .ffn_norm     ffn_moe_logits-i -> .router_logits
    ffn_out-i (or ffn_post_norm-i, which follows it) -> .ffn_out      l_out-i -> .residual
    result_norm -> final_norm      result_output -> logits
llama.cpp computes only the output token in the last layer after attention: those taps hold one token, and the
diff compares them with the last token of a full dump.

q and k: llama.cpp's converter interleaves each head's rotary halves for Llama-family GGUF files (its RoPE pairs
(2i, 2i+1)), so its Qcur / Kcur hold HF's element j * D/2 + i at position 2i + j. Given the GGUF file (``model``)
the importer reads its architecture and moves those indices back to impnb's (HF's) order; without it the head
order is unknown and q / k are left out.
"""
from __future__ import annotations

import gzip
import lzma
import re
from dataclasses import dataclass, field

import numpy as np

from ..errors import FormatError
from . import PER_LAYER, Corners

HEADER = re.compile(r"^[\w.]+:\s+(?P<name>.+?) = \((?P<type>\w+)\)\s+(?P<op>[A-Z0-9_]+)\((?P<src>.*)\) = "
                    r"\{(?P<ne>\d+(?:, \d+)*)\}\s*$")
SUM = re.compile(r"^\s*sum = (?P<value>\S+)\s*$")
TOKENS = re.compile(r"number of input tokens = (?P<n>\d+)\s*$")
EDGE = 3  # llama.cpp prints the first and last 3 indices of an axis longer than 6
VALUE_PRINT_ABS = 0.5e-4  # %12.4f
SUM_PRINT_ABS = 0.5e-6  # %f

GLOBAL_NAMES = {"embd": "embedding", "inp_embd": "embedding", "inp_scaled": "embedding",
                "result_norm": "final_norm", "result_output": "logits"}
LAYER_NAMES = {"attn_norm": "attn_norm", "Qcur": "q", "Kcur": "k", "Vcur": "v", "attn_out": "attn_out",
               "ffn_norm": "ffn_norm", "ffn_moe_logits": "router_logits", "ffn_out": "ffn_out",
               "ffn_post_norm": "ffn_out", "l_out": "residual"}
REQUIRED_OP = {"Qcur": "ROPE", "Kcur": "ROPE"}


@dataclass
class LoggedTensor:
    name: str
    op: str
    ne: tuple
    values: list = field(default_factory=list)
    total: float | None = None

    @property
    def shape(self) -> tuple:
        """NumPy shape [ne3, ne2, ne1, ne0] without its leading 1s (at least one axis)."""
        shape = list(reversed(self.ne))
        while len(shape) > 1 and shape[0] == 1:
            shape.pop(0)
        return tuple(shape)

    def printed_index(self) -> np.ndarray:
        """int64 [n, ndim]: the indices of the printed values, in print order."""
        ne0, ne1, ne2, ne3 = self.ne
        axes = [range(ne3), _printed(ne2), _printed(ne1), _printed(ne0)]
        grid = np.array(np.meshgrid(*[np.array(list(a), np.int64) for a in axes], indexing="ij"))
        index = grid.reshape(4, -1).T  # [n, 4] in C order = print order
        return index[:, 4 - len(self.shape):]


def _printed(n: int) -> list[int]:
    return list(range(n)) if n <= 2 * EDGE else list(range(EDGE)) + list(range(n - EDGE, n))


def read_lines(path: str) -> list[str]:
    opener = lzma.open if path.endswith(".xz") else gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rt", encoding="utf-8", errors="replace") as fh:
            return fh.read().splitlines()
    except (OSError, lzma.LZMAError, EOFError) as exc:
        raise FormatError(f"{path}: cannot read the log ({type(exc).__name__}: {exc})") from None


def parse(lines: list[str], path: str = "log") -> tuple[list[int] | None, list[LoggedTensor]]:
    """(token ids or None, tensors in graph order) from the lines of an eval-callback log."""
    tokens, tensors, current = None, [], None
    for k, line in enumerate(lines):
        m = HEADER.match(line)
        if m:
            ne = tuple(int(v) for v in m.group("ne").split(", "))
            current = LoggedTensor(m.group("name").strip(), m.group("op"), (ne + (1, 1, 1, 1))[:4])
            tensors.append(current)
        elif (s := SUM.match(line)) and current is not None:
            current.total = _number(s.group("value"), path, current.name)
        elif current is not None and _is_value_row(line):
            current.values.extend(_number(v, path, current.name) for v in _row_tokens(line) if v != "...")
        elif tokens is None and (t := TOKENS.search(line)):
            tokens = _token_rows(lines[k + 1:k + 1 + int(t.group("n"))])
    if not tensors:
        raise FormatError(f"{path}: no tensor headers found; is this llama-eval-callback output?")
    return tokens, tensors


def _token_rows(rows: list[str]) -> list[int] | None:
    """The ids printed one per line after ``number of input tokens`` (None if the lines are not that)."""
    try:
        return [int(row.split()[-1]) for row in rows]
    except (ValueError, IndexError):
        return None


def _row_tokens(line: str) -> list[str]:
    inner = line.strip().rstrip(",").strip()[1:-1]
    return [v.strip() for v in inner.split(",") if v.strip()]


def _is_value_row(line: str) -> bool:
    s = line.strip().rstrip(",").strip()
    return len(s) > 2 and s[0] == "[" and s[-1] == "]"


def _number(text: str, path: str, name: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise FormatError(f"{path}: tensor {name!r}: {text!r} is not a number") from None


def tap_of(t: LoggedTensor) -> str | None:
    """impnb tap key of a logged tensor, or None when it maps to none."""
    if t.name in GLOBAL_NAMES:
        return GLOBAL_NAMES[t.name]
    m = re.fullmatch(r"(?P<base>[A-Za-z_]+)-(?P<layer>\d+)", t.name)
    if not m or m.group("base") not in LAYER_NAMES:
        return None
    if REQUIRED_OP.get(m.group("base"), t.op) != t.op:
        return None
    return f"blk.{int(m.group('layer'))}.{LAYER_NAMES[m.group('base')]}"


def corners_of(t: LoggedTensor, path: str) -> Corners:
    index = t.printed_index()
    if len(t.values) != index.shape[0]:
        raise FormatError(f"{path}: tensor {t.name!r} {list(t.ne)}: expected {index.shape[0]} printed values, "
                          f"found {len(t.values)}")
    return Corners(t.shape, index, np.array(t.values, np.float64), t.total, VALUE_PRINT_ABS, SUM_PRINT_ABS)


def to_partial(tensors: list[LoggedTensor], path: str) -> tuple[dict, dict]:
    """({tap: Corners}, {tap: "name (OP)"}) of the tensors that map to impnb taps; later nodes win."""
    chosen: dict[str, LoggedTensor] = {}
    for t in tensors:
        key = tap_of(t)
        if key is not None and t.values:
            chosen[key] = t
    ordered = sorted(chosen, key=_tap_order)
    return ({k: corners_of(chosen[k], path) for k in ordered},
            {k: f"{chosen[k].name} ({chosen[k].op})" for k in ordered})


def _tap_order(key: str) -> tuple:
    if key == "embedding":
        return (-1, 0)
    m = re.fullmatch(r"blk\.(\d+)\.(.+)", key)
    if m:
        return (int(m.group(1)), PER_LAYER.index(m.group(2)))
    return (1 << 30, 0 if key == "final_norm" else 1)


def qk_interleaved(model: str) -> bool | None:
    """True if llama.cpp holds q / k with interleaved rotary halves for this GGUF file (None: unknown)."""
    if not model:
        return None
    from ..loaders.gguf import read_gguf
    from ..loaders.names import PERMUTED_QK_ARCHS
    return read_gguf(model).architecture in PERMUTED_QK_ARCHS


def _to_hf_head_order(c: Corners) -> Corners:
    """Corners of an interleaved q / k moved to HF's head order: position 2i + j -> j * D/2 + i (last axis)."""
    index = np.array(c.index, copy=True)
    half = c.shape[-1] // 2
    index[:, -1] = (index[:, -1] % 2) * half + index[:, -1] // 2
    return Corners(c.shape, index, c.values, c.total, c.print_abs, c.sum_print_abs)


def _head_order(partial: dict, interleaved: bool | None) -> tuple[dict, list]:
    """(partial taps with q / k in impnb's order, keys left out because their order is unknown)."""
    qk = [k for k in partial if k.endswith((".q", ".k"))]
    if interleaved is None:
        return {k: c for k, c in partial.items() if k not in qk}, qk
    if interleaved:
        partial = {k: (_to_hf_head_order(c) if k in qk else c) for k, c in partial.items()}
    return partial, []


def import_log(path: str, out: str, *, model: str = "") -> dict:
    """Write the partial golden dump of an eval-callback log; returns its manifest (``left_out``: taps dropped
    because their layout is unknown without ``model``)."""
    from . import model_hash, save_dump
    tokens, tensors = parse(read_lines(path), path)
    partial, sources = to_partial(tensors, path)
    partial, left_out = _head_order(partial, qk_interleaved(model))
    if not partial:
        raise FormatError(f"{path}: none of its {len(tensors)} tensors maps to an impnb tap (see "
                          f"impnb/golden/llamacpp.py for the names)")
    return save_dump(out, {}, partial, token_ids=tokens, backend="llama.cpp", producer="llama.cpp eval-callback",
                     model=model, model_sha=model_hash(model) if model else "", order=list(partial),
                     extra={"source": path.rsplit("/", 1)[-1], "llamacpp_nodes": sources,
                            "logged_tensors": len(tensors), "left_out": left_out})
