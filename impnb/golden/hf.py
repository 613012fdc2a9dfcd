"""Golden dump of the same checkpoint run by transformers (float32), mapped to impnb's tap names.

Forward hooks on the decoder's modules give the taps (batch axis dropped): ``embed_tokens`` -> embedding (Gemma's
scaled embedding module includes the sqrt(hidden) factor); per layer ``input_layernorm`` -> attn_norm,
``v_proj`` -> v, ``o_proj`` -> attn_out, ``pre_feedforward_layernorm`` (Gemma) or ``post_attention_layernorm``
(Llama family: the pre-FFN norm) -> ffn_norm, ``post_feedforward_layernorm`` (Gemma) or ``mlp`` -> ffn_out,
the decoder layer's output -> residual; ``norm`` -> final_norm; the model's logits (after any final softcap) ->
logits. q and k after RoPE are the outputs of the modeling module's ``apply_rotary_pos_emb``, recorded in call
order (one call per layer). HF's ``hidden_states[-1]`` is taken after the final norm, so residuals come from the
layer hooks, never from ``output_hidden_states``. A module an architecture lacks leaves its tap out (the diff
compares what both dumps hold).
"""
from __future__ import annotations

import sys
from contextlib import ExitStack
from pathlib import Path

import numpy as np


def _load(path: Path):
    """(model, tokenizer) in float32 from a GGUF file, a directory with one GGUF, or an HF checkpoint directory."""
    import torch
    import transformers
    gguf = path if path.is_file() else None
    if path.is_dir() and not (path / "config.json").exists():
        found = sorted(path.glob("*.gguf"))
        gguf = found[0] if len(found) == 1 else None
    folder, kwargs = (gguf.parent, {"gguf_file": gguf.name}) if gguf else (path, {})
    model = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, **kwargs).eval()
    return model, lambda: transformers.AutoTokenizer.from_pretrained(folder, **kwargs)


def _array(t) -> np.ndarray:
    t = t[0] if isinstance(t, (tuple, list)) else t
    return t.detach().to("cpu").float().numpy()[0].copy()  # drop the batch axis


class _Taps:
    def __init__(self, head_dim: int):
        self.tensors: dict[str, np.ndarray] = {}
        self.head_dim = head_dim
        self.rope_calls = 0

    def hook(self, module, key: str, heads: bool = False):
        def record(_module, _inputs, output):
            a = _array(output)
            self.tensors[key] = a.reshape(a.shape[0], -1, self.head_dim) if heads else a
        return module.register_forward_hook(record)

    def rope(self, original):
        def wrapped(q, k, *args, **kwargs):
            q_out, k_out = original(q, k, *args, **kwargs)
            layer = self.rope_calls
            self.rope_calls += 1
            self.tensors[f"blk.{layer}.q"] = _array(q_out).transpose(1, 0, 2)  # [Hq, T, D] -> [T, Hq, D]
            self.tensors[f"blk.{layer}.k"] = _array(k_out).transpose(1, 0, 2)
            return q_out, k_out
        return wrapped


def _layer_modules(layer) -> dict[str, object]:
    attn = layer.self_attn
    ffn_norm = getattr(layer, "pre_feedforward_layernorm", None) or getattr(layer, "post_attention_layernorm", None)
    ffn_out = getattr(layer, "post_feedforward_layernorm", None) or getattr(layer, "mlp", None)
    return {"attn_norm": getattr(layer, "input_layernorm", None), "v": getattr(attn, "v_proj", None),
            "attn_out": getattr(attn, "o_proj", None), "ffn_norm": ffn_norm, "ffn_out": ffn_out}


def record(model, ids) -> dict[str, np.ndarray]:
    """Run ``ids`` through ``model`` once; float32 taps in impnb's graph order."""
    import torch
    core = model.model
    head_dim = getattr(model.config, "head_dim", None) or model.config.hidden_size // model.config.num_attention_heads
    taps = _Taps(head_dim)
    with ExitStack() as stack:
        handles = [taps.hook(core.embed_tokens, "embedding"), taps.hook(core.norm, "final_norm")]
        for i, layer in enumerate(core.layers):
            for name, module in _layer_modules(layer).items():
                if module is not None:
                    handles.append(taps.hook(module, f"blk.{i}.{name}", heads=name == "v"))
            handles.append(taps.hook(layer, f"blk.{i}.residual"))
        for h in handles:
            stack.callback(h.remove)
        modeling = sys.modules[type(core.layers[0].self_attn).__module__]
        if hasattr(modeling, "apply_rotary_pos_emb"):
            original = modeling.apply_rotary_pos_emb
            modeling.apply_rotary_pos_emb = taps.rope(original)
            stack.callback(setattr, modeling, "apply_rotary_pos_emb", original)
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([list(ids)]), use_cache=False).logits
    taps.tensors["logits"] = _array(logits)
    return _ordered(taps.tensors, len(core.layers))


def _ordered(tensors: dict, n_layers: int) -> dict[str, np.ndarray]:
    from . import PER_LAYER
    keys = ["embedding"] + [f"blk.{i}.{n}" for i in range(n_layers) for n in PER_LAYER] + ["final_norm", "logits"]
    return {k: tensors[k].astype(np.float32) for k in keys if k in tensors}


def import_hf(model_or_dir: str, out: str, *, prompt: str | None = None, ids=None) -> dict:
    """Write transformers' golden dump of ``model_or_dir`` for ``prompt`` (its own tokenizer) or ``ids``."""
    try:
        import torch  # noqa: F401
        import transformers
    except ImportError as exc:
        raise ImportError(f"import-hf needs torch and transformers: pip install -e '.[oracle]' ({exc})") from None
    from ..api import resolve_model_path
    from . import model_hash, save_dump
    path = Path(resolve_model_path(model_or_dir))
    model, tokenizer = _load(path)
    if ids is None:
        ids = tokenizer()(prompt)["input_ids"]
    tensors = record(model, ids)
    return save_dump(out, tensors, {}, token_ids=ids, backend="transformers float32",
                     producer=f"transformers {transformers.__version__}", model=str(path),
                     model_sha=model_hash(str(path)))
