"""GGUF files of the hybrid architectures (llama.cpp qwen3next / qwen35 / qwen35moe), written the way llama.cpp's
converter writes them (tests/hybrid_gguf.py): impnb reads back the Hugging Face tensors and the safetensors model's
logits; and, where a llama.cpp build is available (env LLAMA_CPP_DIR: a source tree with build/bin holding
libllama), llama.cpp's own logits and greedy ids on the same file equal impnb's.

Measured (this file's cases, 70-token prompt then 4 greedy tokens, float32 weights): GGUF vs safetensors in impnb
<= 3e-7 of the largest logit (the +1 / -1 of the norms and log(-(-exp(A_log))) round); llama.cpp (CPU, float32 KV
cache and attention) vs impnb 1.6e-7 .. 3.6e-7, identical greedy ids, on all three architectures.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
tf = pytest.importorskip("transformers")
pytest.importorskip("gguf")

import impnb  # noqa: E402
from impnb.model import Model  # noqa: E402
from tests.hybrid_gguf import write_gguf  # noqa: E402

pytestmark = pytest.mark.oracle

SMALL = dict(vocab_size=300, hidden_size=64, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
             head_dim=16, max_position_embeddings=512, linear_num_key_heads=2, linear_num_value_heads=4,
             linear_key_head_dim=8, linear_value_head_dim=8)  # llama.cpp takes Dv = Dk
MOE = dict(num_experts=4, num_experts_per_tok=2, moe_intermediate_size=24, shared_expert_intermediate_size=32)
CONFIGS = {
    "qwen3next": lambda: tf.Qwen3NextConfig(**SMALL, intermediate_size=96, **MOE),
    "qwen35": lambda: tf.Qwen3_5TextConfig(**SMALL, intermediate_size=96),
    "qwen35moe": lambda: tf.Qwen3_5MoeTextConfig(**SMALL, **MOE, layer_types=["linear_attention",
                                                                              "full_attention"] * 2),
}
PROMPT = list(np.random.default_rng(7).integers(0, 256, size=70))


def _checkpoint(arch, path):
    torch.manual_seed(0)
    hf = tf.AutoModelForCausalLM.from_config(CONFIGS[arch](), dtype=torch.float32).eval()
    with torch.no_grad():
        for name, p in hf.named_parameters():
            if any(s in name for s in ("norm", "A_log", "dt_bias")):
                p.add_(torch.randn_like(p) * 0.1)
    hf.save_pretrained(path)
    ckpt = impnb.load_checkpoint(path)
    return ckpt, json.loads((path / "config.json").read_text())


def _gguf_model(path):
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*has not been verified.*")
        ckpt = impnb.load_checkpoint(path)
        return ckpt, Model(ckpt.config, ckpt.tensors)


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def files(request, tmp_path_factory):
    arch, root = request.param, tmp_path_factory.mktemp(request.param)
    ckpt, hf_config = _checkpoint(arch, root / "hf")
    gguf_path = root / f"{arch}.gguf"
    write_gguf(str(gguf_path), {k: np.asarray(v) for k, v in ckpt.tensors.items()}, hf_config)
    return arch, ckpt, hf_config, gguf_path


def test_gguf_reads_back_the_hf_tensors_and_logits(files):
    arch, ckpt, _, gguf_path = files
    gguf_ckpt, gguf_model = _gguf_model(gguf_path)
    assert gguf_ckpt.config.arch == ckpt.config.arch and gguf_ckpt.config.linear_attention == \
        ckpt.config.linear_attention
    assert [lc.kind for lc in gguf_ckpt.config.layers] == [lc.kind for lc in ckpt.config.layers]
    assert gguf_model.unused_tensors == []
    st_model = Model(ckpt.config, ckpt.tensors)
    for key in ("in_proj", "conv", "A", "dt_bias", "norm", "out"):  # every linear-layer weight, value order too
        np.testing.assert_allclose(gguf_model.layers[0][key], st_model.layers[0][key], rtol=2e-6, atol=1e-7,
                                   err_msg=f"{arch} layer 0 {key}")
    ours, theirs = gguf_model.logits(PROMPT), st_model.logits(PROMPT)
    rel = float(np.abs(ours - theirs).max() / np.abs(theirs).max())
    print(f"{arch}: GGUF vs safetensors max relative logit difference {rel:.1e}")
    assert rel < 1e-6


def test_multi_token_prediction_layers_are_set_aside(files, tmp_path):
    """llama.cpp appends the MTP layers after the text layers (block_count includes them): they become mtp.*."""
    import gguf
    arch, _, _, gguf_path = files
    reader = gguf.GGUFReader(str(gguf_path))
    writer = gguf.GGUFWriter(str(tmp_path / "mtp.gguf"), arch)
    n = int(reader.fields[f"{arch}.block_count"].parts[-1][0])
    for field in reader.fields.values():
        if field.name.startswith("GGUF.") or field.name == "general.architecture":
            continue
        if field.name == f"{arch}.block_count":
            writer.add_uint32(field.name, n + 1)
            continue
        _copy_field(writer, field)
    writer.add_uint32(f"{arch}.nextn_predict_layers", 1)
    for t in reader.tensors:
        writer.add_tensor(t.name, np.array(t.data).reshape([int(d) for d in reversed(t.shape)]))
        if t.name.startswith(f"blk.{n - 1}."):  # a copy of the last (full-attention) layer as the MTP layer
            writer.add_tensor(t.name.replace(f"blk.{n - 1}.", f"blk.{n}.", 1),
                              np.array(t.data).reshape([int(d) for d in reversed(t.shape)]))
    writer.add_tensor(f"blk.{n}.nextn.eh_proj.weight", np.ones((64, 128), np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with_mtp, base = _gguf_model(tmp_path / "mtp.gguf")[1], _gguf_model(gguf_path)[1]
    assert with_mtp.config.n_layers == n and with_mtp.unused_tensors and all(
        name.startswith("mtp.") for name in with_mtp.unused_tensors)
    np.testing.assert_array_equal(with_mtp.logits(PROMPT[:9]), base.logits(PROMPT[:9]))


def _copy_field(writer, field):
    import gguf
    types = field.types
    if types[0] == gguf.GGUFValueType.ARRAY:
        values = field.contents()
        writer.add_array(field.name, values)
    elif types[0] == gguf.GGUFValueType.STRING:
        writer.add_string(field.name, field.contents())
    else:
        writer.add_key_value(field.name, field.contents(), types[0])


# ---- llama.cpp on the same file --------------------------------------------------------------------------------
def _llama_cpp_tool(tmp_path) -> str:
    root = os.environ.get("LLAMA_CPP_DIR")
    lib = os.path.join(root or "", "build", "bin")
    if not root or not os.path.isfile(os.path.join(lib, "libllama.so")) or shutil.which("g++") is None:
        pytest.skip("set LLAMA_CPP_DIR to a llama.cpp source tree with a CPU build in build/bin (and have g++)")
    exe = str(tmp_path / "llama_cpp_logits")
    src = os.path.join(os.path.dirname(__file__), "..", "tools", "llama_cpp_logits.cpp")
    subprocess.run(["g++", "-std=c++17", "-O1", src, f"-I{root}/include", f"-I{root}/ggml/include", f"-L{lib}",
                    "-lllama", "-lggml", "-lggml-base", "-o", exe], check=True)
    return exe


def test_llama_cpp_logits_and_greedy_ids_equal_impnb(files, tmp_path):
    arch, _, _, gguf_path = files
    exe = _llama_cpp_tool(tmp_path)
    lib = os.path.join(os.environ["LLAMA_CPP_DIR"], "build", "bin")
    run = subprocess.run([exe, str(gguf_path), "4"] + [str(t) for t in PROMPT], capture_output=True, text=True,
                         env={**os.environ, "LD_LIBRARY_PATH": lib}, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    lines = run.stdout.splitlines()
    theirs = [np.array(line.split()[1:], np.float32) for line in lines if line.startswith("logits")]
    tokens = [int(line.split()[1]) for line in lines if line.startswith("token")]
    _, model = _gguf_model(gguf_path)
    cache = model.new_cache(len(PROMPT) + 8)
    ours = [model.forward(PROMPT, cache)[-1]]
    for token in tokens:
        assert token == int(ours[-1].argmax())
        ours.append(model.forward([token], cache)[0])
    rel = max(float(np.abs(a - b).max() / np.abs(b).max()) for a, b in zip(ours, theirs))
    print(f"{arch}: llama.cpp vs impnb max relative logit difference {rel:.1e} over {len(theirs)} positions")
    assert len(theirs) == 5 and rel < 1e-5


def test_generate_cli_and_golden_dump_on_a_hybrid_gguf(files, tmp_path):
    """`python -m impnb.generate` on the GGUF (its byte-level vocabulary): the greedy ids of the model's own decode
    loop, and a golden dump holding the recurrent states."""
    arch, _, _, gguf_path = files
    dump = tmp_path / "taps.safetensors"
    run = subprocess.run([sys.executable, "-m", "impnb.generate", "--model", str(gguf_path), "--prompt",
                          "hello world", "--max-new-tokens", "4", "--ignore-eos", "--json", "--dump-golden",
                          str(dump)], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "IMPNB_BACKEND": "reference"})
    assert run.returncode == 0, run.stderr[-2000:]
    out = json.loads(run.stdout)
    assert out["prompt_ids"] == list(b"hello world")
    _, model = _gguf_model(gguf_path)
    cache, ids = model.new_cache(16), []
    logits = model.forward(out["prompt_ids"], cache)[-1]
    for _ in range(4):
        ids.append(int(logits.argmax()))
        logits = model.forward(ids[-1:], cache)[0]
    assert out["ids"] == ids
    from impnb import golden
    taps = golden.load(str(dump))
    lin = model.config.linear_attention
    assert taps.tensors["blk.0.recurrent_state"].shape == (1, lin.n_value_heads, lin.key_head_dim,
                                                            lin.value_head_dim)
    assert taps.tensors["blk.0.conv_state"].shape == (1, lin.conv_kernel - 1, lin.conv_channels)
    assert taps.tensors["logits"].shape == (11, 300)


def test_quantize_cli_refuses_a_hybrid_gguf_in_one_line(files, tmp_path):
    """No config.json writer exists for these architectures yet: a clear error and exit status 2, no traceback."""
    _, _, _, gguf_path = files
    run = subprocess.run([sys.executable, "-W", "ignore", "-m", "impnb.quantize", "--model", str(gguf_path), "--out",
                          str(tmp_path / "q"), "--quiet"], capture_output=True, text=True, timeout=300)
    assert run.returncode == 2
    assert run.stderr.strip().count("\n") == 0 and "not supported" in run.stderr
