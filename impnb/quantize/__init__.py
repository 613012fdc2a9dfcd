"""NVFP4 quantizer: ``python -m impnb.quantize --model SRC --out DIR --layout compressed-tensors|modelopt``.

Converts a GGUF file, an HF checkpoint directory or an installed model package into an NVFP4 checkpoint directory
in the layout llm-compressor (NVFP4A16 / NVFP4 presets) or NVIDIA ModelOpt (unified HF export) write, readable by
compressed-tensors, vLLM-style loaders and impnb itself. Modules:
    source.py           the input: GGUF / HF dir / package -> HF-named tensors + config.json + tokenizer files
    hf_config.py        ModelConfig -> HF config.json (GGUF sources)
    tokenizer_files.py  GGUF vocabulary + chat template -> tokenizer.json / tokenizer_config.json
    plan.py             which Linears are quantized, fused global scales, the quantization call
    layouts.py          tensor names / dtypes / quantization_config of the two conventions
    calibrate.py        W4A4: activation amax per Linear input (static_minmax) from calibration prompts
    convert.py          the pipeline and the deterministic writer
    __main__.py         the CLI (with --eval: impnb.eval's perplexity / top-1 agreement report)
"""
from __future__ import annotations

from .convert import Report, quantize_checkpoint

__all__ = ["quantize_checkpoint", "Report"]
