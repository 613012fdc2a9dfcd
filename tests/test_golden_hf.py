"""ORACLE: import-hf on tiny random-weight HF checkpoints maps transformers' modules to impnb's taps: every tap of
impnb's dump (Llama, Qwen3 with QK-norm, Gemma-3 with sandwich norms and a final softcap) is present and agrees."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
tf = pytest.importorskip("transformers")

import impnb  # noqa: E402
from impnb import golden  # noqa: E402
from impnb.model import Model  # noqa: E402

pytestmark = pytest.mark.oracle

SMALL = dict(vocab_size=300, hidden_size=64, intermediate_size=96, num_hidden_layers=3, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=512)
CONFIGS = {
    "llama": lambda: tf.LlamaConfig(**SMALL),
    "qwen3_qk_norm": lambda: tf.Qwen3Config(**SMALL, head_dim=24),
    "gemma3_sandwich_softcap": lambda: tf.Gemma3TextConfig(**SMALL, head_dim=16, sliding_window=16,
                                                           query_pre_attn_scalar=24, final_logit_softcapping=30.0),
}


def _checkpoint(config, path):
    torch.manual_seed(0)
    model = tf.AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(torch.randn_like(p) * 0.1)  # off the trivial init
    model.save_pretrained(path)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_hf_taps_match_impnb_taps(name, tmp_path):
    _checkpoint(CONFIGS[name](), tmp_path / "ckpt")
    ids = [int(i) for i in np.random.default_rng(3).integers(0, SMALL["vocab_size"], size=9)]
    ckpt = impnb.load_checkpoint(tmp_path / "ckpt")
    model = Model(ckpt.config, ckpt.tensors, backend="reference")
    rec = golden.GoldenRecorder()
    model.forward(np.array(ids), model.new_cache(len(ids)), taps=rec)
    ours = tmp_path / "impnb.safetensors"
    golden.save(str(ours), rec, token_ids=ids, backend="reference")
    theirs = tmp_path / "hf.safetensors"
    assert golden.main(["import-hf", str(tmp_path / "ckpt"), "--ids", ",".join(map(str, ids)), str(theirs)]) == 0
    rows = golden.compare(golden.load(str(ours)), golden.load(str(theirs)))
    assert [r.key for r in rows] == list(rec.tensors)  # every impnb tap has its transformers counterpart
    worst = max(rows, key=lambda r: r.max_rel)
    assert worst.max_rel < 1e-5, (worst.key, worst.max_rel)  # float32 on both sides
