"""W4A4 calibration: the max |x| at each Linear's input over a few prompts (compressed-tensors' static_minmax).

The source model runs unquantized (impnb's reference forward); each projection's input amax is recorded
(impnb.w4a4.record_input_amax), and the writer turns it into the stored scalar (plan.input_scalar:
input_global_scale = 448*6/amax, or ModelOpt input_scale = amax/2688). Fused q/k/v and gate/up read the same input,
so they get the same amax. The default prompts are plain text and a chat turn, none of them from the eval text.
"""
from __future__ import annotations

from .progress import Progress

DEFAULT_PROMPTS = (
    "The quick brown fox jumps over the lazy dog. A journey of a thousand miles begins with a single step.",
    "Photosynthesis converts light energy into chemical energy: carbon dioxide and water become glucose and oxygen.",
    "def fibonacci(n):\n    a, b = 0, 1\n    for _ in range(n):\n        a, b = b, a + b\n    return a\n",
    "Question: What is the capital of France?\nAnswer: The capital of France is Paris, on the Seine.",
    "In 1969 the Apollo 11 mission landed two astronauts on the Moon; they returned safely to Earth.",
    "Liste des courses : pain, fromage, pommes, lait. ¿Dónde está la biblioteca? 東京は日本の首都です。",
)
MAX_TOKENS = 128


def calibrate_input_amax(src, modules, prompts=None, *, progress: bool = True) -> dict[str, float]:
    """{Linear module: calibrated input amax} for ``modules`` (those being quantized); ``src`` is the
    impnb.quantize.source.Source being quantized (its tensors are used as they are: no second read)."""
    from ..w4a4 import record_input_amax
    model = _source_model(src)
    prompts = list(prompts or DEFAULT_PROMPTS)
    chat = _chat_prompt(model)
    bar = Progress(len(prompts) + (chat is not None), "calibrate", enabled=progress)
    with record_input_amax(model.model) as amax:
        for text in prompts:
            model.logits(model.tokenizer.encode(text)[:MAX_TOKENS])
            bar.step()
        if chat is not None:
            model.logits(chat[:MAX_TOKENS])
            bar.step("chat")
    bar.close()
    missing = sorted(set(modules) - set(amax))
    if missing:
        raise RuntimeError(f"calibration saw no input for {missing}; the model does not run them as projections")
    return {m: amax[m] for m in modules}


def _source_model(src):
    """The reference model of the source, with its tokenizer and chat template (impnb.api.LoadedModel)."""
    from ..api import LoadedModel
    from ..chat import ChatTemplate
    from ..model import Model
    from ..tokenizer import Tokenizer
    tokenizer = Tokenizer.from_checkpoint(src.checkpoint)
    chat = ChatTemplate.from_checkpoint(src.checkpoint, tokenizer)
    return LoadedModel(Model(src.model_config, src.tensors, backend="reference"), tokenizer, chat, src.path,
                       "reference")


def _chat_prompt(model):
    if getattr(getattr(model, "chat", None), "source", None) is None:  # no chat template: plain text only
        return None
    return model.chat_prompt([{"role": "user", "content": "Give me three tips for staying focused."}])
