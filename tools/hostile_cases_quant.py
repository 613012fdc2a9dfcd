"""Hostile quantization configs (compressed-tensors and ModelOpt NVFP4 checkpoints) and tokenizer files for
tools/hostile_inputs.py (see tools/hostile_cases.py for the Case contract)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

import hostile_bases as hb
from hostile_cases import INF, NAN, Case, _with_file

LINEARS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj",
           "mlp.up_proj", "mlp.down_proj")
CT_CONFIG = {"quant_method": "compressed-tensors", "format": "nvfp4-pack-quantized", "ignore": ["lm_head"],
             "config_groups": {"group_0": {"format": "nvfp4-pack-quantized", "targets": ["Linear"],
                                           "weights": {"num_bits": 4, "type": "float", "group_size": 16,
                                                       "strategy": "tensor_group"}}}}
MO_CONFIG = {"quant_method": "modelopt", "quant_algo": "NVFP4", "ignore": ["lm_head"]}
MO_FILE = {"producer": {"name": "modelopt", "version": "0.47.0"},
           "quantization": {"quant_algo": "NVFP4", "group_size": 16, "exclude_modules": ["lm_head"]}}


def quantized(layout: str) -> tuple[dict, dict]:
    """(tensors, dtypes) of the tiny llama with every Linear in NVFP4 (impnb's reference quantizer)."""
    from impnb.reference.nvfp4 import nvfp4_quantize
    tensors, dtypes = hb.hf_tensors(), {}
    for i in range(hb.LAYERS):
        for lin in LINEARS:
            m = f"model.layers.{i}.{lin}"
            q = nvfp4_quantize(np.asarray(tensors.pop(m + ".weight"), np.float32), layout=layout)
            if layout == "compressed-tensors":
                tensors.update({m + ".weight_packed": q.packed, m + ".weight_scale": q.scales,
                                m + ".weight_global_scale": np.array([q.global_scale], np.float32)})
            else:
                tensors.update({m + ".weight": q.packed, m + ".weight_scale": q.scales,
                                m + ".weight_scale_2": np.array(q.global_scale, np.float32)})
            dtypes[m + ".weight_scale"] = "F8_E4M3"
    return tensors, dtypes


def _quant_case(name, expect, layout="compressed-tensors", edit_config=None, edit_tensors=None, edit_file=None):
    def build(d: Path) -> Path:
        tensors, dtypes = quantized(layout)
        if edit_tensors:
            edit_tensors(tensors, dtypes)   # edits both in place
        config = dict(hb.HF_CONFIGS["llama"])
        config["quantization_config"] = json.loads(json.dumps(CT_CONFIG if layout == "compressed-tensors" else MO_CONFIG))
        if edit_config:
            edit_config(config["quantization_config"], config)
        directory = hb.write_hf(d / "m", config=config, tensors=tensors, dtypes=dtypes)
        if layout == "modelopt":
            hq = json.loads(json.dumps(MO_FILE))
            if edit_file:
                edit_file(hq)
            (directory / "hf_quant_config.json").write_text(json.dumps(hq, allow_nan=True))
        return directory
    return Case("quant-config", f"{layout}: {name}", expect, build)


M = "model.layers.0.self_attn.q_proj"


def _set(key, value):
    return lambda qc, config: qc.__setitem__(key, value)


def quant_cases() -> list[Case]:
    cases = [_quant_case("valid", "load"), _quant_case("valid", "load", "modelopt")]
    for method in ("gptq", "awq", "fp8", 7, None, ["compressed-tensors"]):
        cases.append(_quant_case(f"quant_method={method!r}", "refuse", edit_config=_set("quant_method", method)))
    for fmt in ("int-quantized", "nvfp4", 5, ""):
        cases.append(_quant_case(f"format={fmt!r}", "refuse", edit_config=lambda qc, c, f=fmt: (
            qc.__setitem__("format", f), qc["config_groups"]["group_0"].__setitem__("format", f))))
    for size in (32, 8, "16", -1, None):
        cases.append(_quant_case(f"group_size={size!r}", "either" if size is None else "refuse",
                                 edit_config=lambda qc, c, s=size: qc["config_groups"]["group_0"]["weights"]
                                 .__setitem__("group_size", s)))
    for ignore, expect in ((["re:(a|a)*b"], "load"), (["re:(x+x+)+y", "re:.*lm_head"], "load"),
                           (["re:(unclosed"], "refuse"), ("lm_head", "refuse"), ([7], "refuse"),
                           (["re:.*q_proj"], "refuse"), (["lm_head"] * 5000, "refuse"), (["re:(?<=a)b"], "refuse"),
                           (["x" * 5000], "refuse"), (["re:(?i)lm_head"], "refuse"), ([], "load")):
        cases.append(_quant_case(f"ignore={str(ignore)[:40]}", expect, edit_config=_set("ignore", ignore)))
    for value, expect in ((0.0, "either"), (INF, "either"), (NAN, "either"), (-1.0, "refuse")):
        cases.append(_quant_case(f"global scale {value}", expect, edit_tensors=lambda t, dt, v=value: t.__setitem__(
            M + ".weight_global_scale", np.array([v], np.float32))))
    cases += [
        _quant_case("scale stored as U8", "refuse", edit_tensors=lambda t, dt: dt.pop(M + ".weight_scale")),
        _quant_case("global scale missing", "refuse", edit_tensors=lambda t, dt: t.pop(M + ".weight_global_scale")),
        _quant_case("scale missing", "refuse", edit_tensors=lambda t, dt: (t.pop(M + ".weight_scale"),
                                                                          dt.pop(M + ".weight_scale"))),
        _quant_case("packed of the wrong width", "refuse", edit_tensors=lambda t, dt: t.__setitem__(
            M + ".weight_packed", np.zeros((32, 8), np.uint8))),
        _quant_case("dense weight beside the packed one", "refuse", edit_tensors=lambda t, dt: t.__setitem__(
            M + ".weight", np.ones((32, 32), np.float32))),
        _quant_case("global scale of 3 elements", "refuse", edit_tensors=lambda t, dt: t.__setitem__(
            M + ".weight_global_scale", np.ones(3, np.float32))),
        _quant_case("global scale as I32", "refuse", edit_tensors=lambda t, dt: t.__setitem__(
            M + ".weight_global_scale", np.ones(1, np.int32))),
        _quant_case("packed without a config", "refuse", edit_config=lambda qc, c: c.pop("quantization_config")),
        _quant_case("config_groups a list", "refuse", edit_config=_set("config_groups", [1])),
        _quant_case("quantization_config a string", "refuse",
                    edit_config=lambda qc, c: c.__setitem__("quantization_config", "nvfp4")),
        _quant_case("quant_algo unknown", "refuse", "modelopt", edit_config=_set("quant_algo", "INT3")),
        _quant_case("quant_algo MIXED without layers", "refuse", "modelopt",
                    edit_config=_set("quant_algo", "MIXED_PRECISION"),
                    edit_file=lambda hq: hq["quantization"].__setitem__("quant_algo", "MIXED_PRECISION")),
        _quant_case("hf_quant_config group 32", "refuse", "modelopt", edit_config=lambda qc, c: qc.pop("quant_algo"),
                    edit_file=lambda hq: hq["quantization"].__setitem__("group_size", 32)),
        _quant_case("exclude_modules catastrophic glob", "load", "modelopt", edit_config=lambda qc, c: qc.pop("ignore"),
                    edit_file=lambda hq: hq["quantization"].__setitem__("exclude_modules", ["*a*a*a*a*a*a*a*b"])),
        _quant_case("a NaN block-scale byte", "refuse", edit_tensors=lambda t, dt: t[M + ".weight_scale"].__setitem__(
            (0, 0), 0x7F)),
        _quant_case("all-zero tensor as ModelOpt writes it (ws2 0, NaN scales)", "either", "modelopt",
                    edit_tensors=lambda t, dt: (t.__setitem__(M + ".weight_scale_2", np.array(0.0, np.float32)),
                                                t[M + ".weight_scale"].fill(0xFF), t[M + ".weight"].fill(0))),
        _quant_case("weight_scale_2 NaN", "either", "modelopt", edit_tensors=lambda t, dt: t.__setitem__(
            M + ".weight_scale_2", np.array(NAN, np.float32))),
        _quant_case("weight_scale_2 negative", "refuse", "modelopt", edit_tensors=lambda t, dt: t.__setitem__(
            M + ".weight_scale_2", np.array(-2.0, np.float32))),
    ]
    return cases


# ---------------------------------------------------------------------------------------------- tokenizer files
def _tok_case(name, expect, edit=None, *, files=None) -> Case:
    def build(d: Path) -> Path:
        directory = hb.write_hf(d / "m")
        if edit:
            obj = json.loads((directory / "tokenizer.json").read_text())
            edit(obj)
            (directory / "tokenizer.json").write_text(json.dumps(obj, allow_nan=True))
        for fname, text in (files or {}).items():
            if text is None:
                (directory / fname).unlink()
            else:
                _with_file(directory, fname, text)
        return directory
    return Case("tokenizer", name, expect, build)


def _split(pattern):
    return lambda o: o.__setitem__("pre_tokenizer", {"type": "Split", "pattern": {"Regex": pattern},
                                                     "behavior": "Isolated", "invert": False})


def tokenizer_cases() -> list[Case]:
    cases = [_tok_case("valid", "load"),
             _tok_case("no tokenizer files (token ids only)", "load",
                       files={"tokenizer.json": None, "tokenizer_config.json": None})]
    for pattern in (r"(a|aa)+$", r"(\w+\s?)+$", r"(?:x*)*y", r"(.)\1", "[", "a" * 5000):
        cases.append(_tok_case(f"pre-tokenizer regex {pattern[:30]!r}", "refuse", _split(pattern)))
    cases.append(_tok_case("pre-tokenizer regex \\s+ (fine)", "load", _split(r"\s+")))
    cases.append(_tok_case("pre-tokenizer lookbehind (?<=a+)b (Oniguruma accepts it)", "either", _split(r"(?<=a+)b")))
    cases += [
        _tok_case("BPE dropout 0.5", "refuse", lambda o: o.__setitem__("model", {
            "type": "BPE", "dropout": 0.5, "vocab": {"w5": 0, "w": 1, "5": 2}, "merges": ["w 5"]})),
        _tok_case("model type Mystery", "refuse", lambda o: o["model"].__setitem__("type", "Mystery")),
        _tok_case("model a list", "refuse", lambda o: o.__setitem__("model", [1])),
        _tok_case("added token of 5000 characters", "refuse", lambda o: o["added_tokens"].append(
            {"id": 63, "content": "z" * 5000, "single_word": False, "lstrip": False, "rstrip": False,
             "normalized": False, "special": True})),
        _tok_case("normalizer Replace with a pathological regex", "refuse", lambda o: o.__setitem__("normalizer", {
            "type": "Replace", "pattern": {"Regex": "(a+)+$"}, "content": "b"})),
        _tok_case("vocab ids out of order", "either", lambda o: o["model"]["vocab"].__setitem__("w9", 999)),
        _tok_case("tokenizer of 300 tokens for a 64-token model (text past 64 refused at encode)", "load",
                  lambda o: o["model"]["vocab"].update({f"x{i}": i for i in range(64, 300)})),
        _tok_case("vocab a string", "refuse", lambda o: o["model"].__setitem__("vocab", "w5")),
        _tok_case("tokenizer.json nested 100000 deep", "refuse",
                  files={"tokenizer.json": '{"a": ' + "[" * 100000 + "]" * 100000 + "}"}),
        _tok_case("tokenizer.json not JSON", "refuse", files={"tokenizer.json": "{"}),
        _tok_case("tokenizer.json not UTF-8", "refuse", files={"tokenizer.json": b'{"model": "\xfe"}'}),
        _tok_case("tokenizer_config add_bos_token a string", "either",
                  files={"tokenizer_config.json": json.dumps({"add_bos_token": "yes", "bos_token": "<s>"})}),
        _tok_case("tokenizer_config bos_token an object", "either",
                  files={"tokenizer_config.json": json.dumps({"bos_token": {"content": "<s>"}, "eos_token": 7})}),
        _tok_case("tokenizer_config nested 100000 deep", "refuse",
                  files={"tokenizer_config.json": '{"a": ' + "[" * 100000 + "]" * 100000 + "}"}),
        _tok_case("generation_config eos a string", "either",
                  files={"generation_config.json": json.dumps({"eos_token_id": "</s>"})}),
        _tok_case("generation_config with NaN", "refuse",
                  files={"generation_config.json": '{"eos_token_id": NaN}'}),
        _tok_case("generation_config duplicate keys", "refuse",
                  files={"generation_config.json": '{"eos_token_id": 2, "eos_token_id": 3}'}),
    ]
    return cases
