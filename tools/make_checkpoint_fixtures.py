"""Write tests/data/checkpoints/: tiny NVFP4 / MXFP4 checkpoints made by the real producers, for
tests/test_producer_checkpoints.py.

    ct_nvfp4_tiny/        compressed-tensors 0.20 (ModelCompressor, format nvfp4-pack-quantized, NVFP4A16 preset)
    ct_mxfp4_tiny/        compressed-tensors 0.20 (format mxfp4-pack-quantized, MXFP4A16 preset, U8 E8M0 scales)
    modelopt_nvfp4_tiny/  nvidia-modelopt 0.47 (mtq.quantize NVFP4_DEFAULT_CFG + export_hf_checkpoint)
Each holds the producer's config.json (+ hf_quant_config.json), model.safetensors, and expected.npz: per quantized
Linear, "<module>" = the producer's OWN float32 dequantization of the stored bytes (the oracle), and
"<module>.original" = the bf16 weight before quantization (as float32).

The model: a 1-layer LlamaForCausalLM (hidden 32, intermediate 64, 4 heads, 2 KV heads, vocab 64), bf16, seed 0.
compressed-tensors needs its scales computed by a calibration library (llm-compressor); here they come from
compressed-tensors' own helpers (generate_gparam over the fused q/k/v and gate/up shards together, as
llm-compressor's fusion handling does, then calculate_qparams per 16-block).

Run in a venv with torch 2.13, transformers, compressed-tensors==0.20.0, nvidia-modelopt==0.47.0:
    python tools/make_checkpoint_fixtures.py [out_dir]
"""
from __future__ import annotations

import json
import os
import sys

import numpy as np
import torch

OUT = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "tests", "data",
                                                         "checkpoints")
FUSED = (("q_proj", "k_proj", "v_proj"), ("gate_proj", "up_proj"))


def tiny_llama():
    from transformers import LlamaConfig, LlamaForCausalLM
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                      architectures=["LlamaForCausalLM"], tie_word_embeddings=False)
    return LlamaForCausalLM(cfg).to(torch.bfloat16).eval()


def _linears(model):
    return {n: m for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and n != "lm_head"}


def _fused_peers(name, names):
    parent, _, leaf = name.rpartition(".")
    for family in FUSED:
        if leaf in family:
            return [f"{parent}.{x}" for x in family if f"{parent}.{x}" in names]
    return [name]


def make_ct(out):
    from compressed_tensors.compressors import ModelCompressor
    from compressed_tensors.compressors.nvfp4.helpers import unpack_fp4_from_uint8
    from compressed_tensors.quantization import (QuantizationConfig, apply_quantization_config,
                                                 preset_name_to_scheme)
    from compressed_tensors.quantization.lifecycle.forward import dequantize
    from compressed_tensors.quantization.utils import calculate_qparams, generate_gparam
    from safetensors.torch import load_file
    model = tiny_llama()
    original = {n: m.weight.detach().float().numpy().copy() for n, m in _linears(model).items()}
    scheme = preset_name_to_scheme("NVFP4A16", ["Linear"])
    apply_quantization_config(model, QuantizationConfig(config_groups={"group_0": scheme}, ignore=["lm_head"]))
    mods = _linears(model)
    with torch.no_grad():
        for name, m in mods.items():
            peers = [mods[p].weight for p in _fused_peers(name, mods)]
            gs = generate_gparam(min(w.min() for w in peers), max(w.max() for w in peers))
            blocks = m.weight.reshape(m.weight.shape[0], -1, 16)
            scale, _ = calculate_qparams(blocks.amin(-1), blocks.amax(-1), scheme.weights, global_scale=gs)
            m.weight_global_scale.data.copy_(gs.reshape(m.weight_global_scale.shape))
            m.weight_scale.data.copy_(scale.reshape(m.weight_scale.shape))
    compressor = ModelCompressor.from_pretrained_model(model, quantization_format="nvfp4-pack-quantized")
    compressor.compress_model(model)
    model.save_pretrained(out)
    compressor.update_config(out)
    stored = load_file(os.path.join(out, "model.safetensors"))
    expected = {}
    for name in mods:
        packed = stored[f"{name}.weight_packed"]
        q = unpack_fp4_from_uint8(packed, packed.shape[0], 2 * packed.shape[1], dtype=torch.float32)
        w = dequantize(q, stored[f"{name}.weight_scale"].float(), args=scheme.weights, dtype=torch.float32,
                       global_scale=stored[f"{name}.weight_global_scale"])
        expected[name], expected[f"{name}.original"] = w.numpy(), original[name]
    return expected


def make_ct_mxfp4(out):
    from compressed_tensors.compressors import ModelCompressor
    from compressed_tensors.compressors.mx_utils import decompress_mx_scale
    from compressed_tensors.compressors.nvfp4.helpers import unpack_fp4_from_uint8
    from compressed_tensors.quantization import (QuantizationConfig, apply_quantization_config,
                                                 preset_name_to_scheme)
    from compressed_tensors.quantization.lifecycle.forward import dequantize
    from compressed_tensors.quantization.utils import calculate_qparams
    from safetensors.torch import load_file
    model = tiny_llama()
    original = {n: m.weight.detach().float().numpy().copy() for n, m in _linears(model).items()}
    scheme = preset_name_to_scheme("MXFP4A16", ["Linear"])
    apply_quantization_config(model, QuantizationConfig(config_groups={"group_0": scheme}, ignore=["lm_head"]))
    mods = _linears(model)
    with torch.no_grad():
        for m in mods.values():
            blocks = m.weight.reshape(m.weight.shape[0], -1, 32)
            scale, _ = calculate_qparams(blocks.amin(-1), blocks.amax(-1), scheme.weights)
            m.weight_scale.data.copy_(scale.reshape(m.weight_scale.shape))
    compressor = ModelCompressor.from_pretrained_model(model, quantization_format="mxfp4-pack-quantized")
    compressor.compress_model(model)
    model.save_pretrained(out)
    compressor.update_config(out)
    stored = load_file(os.path.join(out, "model.safetensors"))
    expected = {}
    for name in mods:
        packed = stored[f"{name}.weight_packed"]
        q = unpack_fp4_from_uint8(packed, packed.shape[0], 2 * packed.shape[1], dtype=torch.float32)
        scale = decompress_mx_scale(stored[f"{name}.weight_scale"]).to(torch.float32)
        w = dequantize(q, scale, args=scheme.weights, dtype=torch.float32)
        expected[name], expected[f"{name}.original"] = w.numpy(), original[name]
    return expected


def make_modelopt(out):
    import modelopt.torch.quantization as mtq
    from modelopt.torch.export import export_hf_checkpoint
    from modelopt.torch.quantization.qtensor import NVFP4QTensor
    from safetensors.torch import load_file
    model = tiny_llama()
    original = {n: m.weight.detach().float().numpy().copy() for n, m in _linears(model).items()}
    torch.manual_seed(1)
    mtq.quantize(model, mtq.NVFP4_DEFAULT_CFG, lambda m: m(torch.randint(0, 64, (2, 16))))
    export_hf_checkpoint(model, export_dir=out)
    stored = load_file(os.path.join(out, "model.safetensors"))
    expected = {}
    for name in original:
        packed = stored[f"{name}.weight"]
        shape = (packed.shape[0], 2 * packed.shape[1])
        w = NVFP4QTensor(shape, torch.float32, packed).dequantize(
            dtype=torch.float32, scale=stored[f"{name}.weight_scale"],
            double_scale=stored[f"{name}.weight_scale_2"].float(), block_sizes={-1: 16})
        expected[name], expected[f"{name}.original"] = w.numpy(), original[name]
    return expected


def main():
    for sub, make in (("ct_nvfp4_tiny", make_ct), ("ct_mxfp4_tiny", make_ct_mxfp4),
                      ("modelopt_nvfp4_tiny", make_modelopt)):
        out = os.path.join(OUT, sub)
        os.makedirs(out, exist_ok=True)
        expected = make(out)
        np.savez_compressed(os.path.join(out, "expected.npz"), **expected)
        for junk in ("generation_config.json",):
            if os.path.exists(os.path.join(out, junk)):
                os.remove(os.path.join(out, junk))
        files = sorted(os.listdir(out))
        print(f"{out}: {files}, {len(expected) // 2} quantized Linears")
        json.loads(open(os.path.join(out, "config.json")).read())  # sanity: valid JSON


if __name__ == "__main__":
    main()
