"""Chat templates: find a checkpoint's Jinja template, render it in a sandbox, tokenize the result.

    chat = ChatTemplate.from_checkpoint(ckpt, tokenizer)        # or ChatTemplate.from_path(path, tokenizer)
    chat.render([{"role": "user", "content": "Hi"}])             # -> str, with the generation prompt
    chat.encode(messages)                                        # -> token ids (BOS not doubled)
    chat.end_of_turn_ids                                         # stop tokens: EOS, EOT, the template's turn end

Where the template comes from, first found wins (`chat.origin` says which):
  1. GGUF metadata tokenizer.chat_template;
  2. chat_template.jinja beside the weights (seed 000: Gemma-4 NVFP4 ships its 16 KB template only there, with
     tokenizer_config.json's field empty), then chat_template.json;
  3. tokenizer_config.json "chat_template" (a string, or a list of {"name", "template"}: "default" is used);
  4. impnb's fallback for Gemma (1/2/3) checkpoints, which often ship none (impnb/data/chat_template_gemma.jinja).
Without any, `render` raises `impnb.Unsupported` naming where it looked.

Templates are untrusted input: they run in jinja2's ImmutableSandboxedEnvironment (no attribute escapes, no
mutation of the messages); output is capped at MAX_RENDER_CHARS, all range() calls of a render at MAX_RANGE_ITEMS
items (loops that print nothing), string/list repetition and integer powers are bounded; template errors become
FormatError, and the template's own raise_exception a TemplateRejected (a ValueError) with its message. The environment mirrors Hugging Face's (trim_blocks, lstrip_blocks,
loop controls, tojson, raise_exception, strftime_now), so a template renders here as it does there.
"""
from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

from jinja2.exceptions import SecurityError, TemplateError, TemplateSyntaxError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from .errors import FormatError, Unsupported
from .tokenizer import Tokenizer

MAX_RENDER_CHARS = 1 << 24          # 16 Mi characters: far beyond any context window, bounds a hostile template
MAX_RANGE_ITEMS = 1 << 20           # items all range() calls of one render may produce together
MAX_EXPONENT = 1 << 10              # larger integer powers could take minutes to compute
FALLBACK_TEMPLATES = {"gemma": "chat_template_gemma.jinja", "gemma2": "chat_template_gemma.jinja",
                      "gemma3": "chat_template_gemma.jinja", "gemma3_text": "chat_template_gemma.jinja"}
_PROBE_REPLY = "impnb-probe-reply"
_DATA = Path(__file__).parent / "data"


class TemplateRejected(ValueError):
    """The template itself refused the conversation (its raise_exception), e.g. roles not alternating."""


def _raise_exception(message):
    raise TemplateRejected(str(message))


def _tojson(value, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


class _BoundedEnvironment(ImmutableSandboxedEnvironment):
    """The sandbox, plus bounds on what output size alone cannot catch: `"x" * 10**9`, `10 ** 10**8`."""

    intercepted_binops = frozenset(["*", "**"])

    def call_binop(self, context, operator, left, right):
        if operator == "**" and isinstance(right, int) and abs(right) > MAX_EXPONENT:
            raise OverflowError(f"exponent {right} is over the limit {MAX_EXPONENT}")
        if operator == "*":
            seq, count = (left, right) if isinstance(right, int) else (right, left)
            if isinstance(seq, (str, list, tuple)) and isinstance(count, int) and len(seq) * count > MAX_RENDER_CHARS:
                raise OverflowError(f"repetition of {len(seq)} items x {count} is over {MAX_RENDER_CHARS}")
        return super().call_binop(context, operator, left, right)


def _budgeted_range(budget: list[int]):
    """range() for one render: all calls together may produce at most MAX_RANGE_ITEMS items, so nested loops that
    print nothing (which the output cap cannot see) still end."""
    def bounded_range(*args):
        items = range(*args)
        budget[0] -= len(items)
        if budget[0] < 0:
            raise OverflowError(f"range() calls of one render produced over {MAX_RANGE_ITEMS} items")
        return items
    return bounded_range


def _environment() -> ImmutableSandboxedEnvironment:
    env = _BoundedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    return env


class ChatTemplate:
    """A compiled chat template bound to a tokenizer (either may be absent: see `render`)."""

    def __init__(self, source: str | None, tokenizer: Tokenizer | None, origin: str = ""):
        self.source, self.tokenizer, self.origin = source, tokenizer, origin
        self._template = None
        if source is not None:
            try:
                self._template = _environment().from_string(source)
            except TemplateSyntaxError as e:
                raise FormatError(f"chat template from {origin}: syntax error at line {e.lineno}: "
                                  f"{e.message}") from None

    def __repr__(self):
        return f"ChatTemplate(origin={self.origin!r}, {len(self.source or '')} chars)"

    # ---- rendering -----------------------------------------------------------------------------------------
    def render(self, messages: list[dict], add_generation_prompt: bool = True, **kwargs) -> str:
        """The conversation as the model's prompt text. kwargs reach the template (tools, documents, ...)."""
        if self._template is None:
            raise Unsupported(f"no chat template for this checkpoint (looked in: {self.origin})")
        tok = self.tokenizer
        context = dict(bos_token=tok.bos_token if tok else "", eos_token=tok.eos_token if tok else "",
                       unk_token=_token(tok, "unk_id"), pad_token=_token(tok, "pad_id"), tools=None, documents=None)
        context.update(kwargs, messages=messages, add_generation_prompt=add_generation_prompt,
                       range=_budgeted_range([MAX_RANGE_ITEMS]))
        return self._bounded_render(context)

    def _bounded_render(self, context: dict) -> str:
        out, size = [], 0
        try:
            for piece in self._template.generate(**context):
                size += len(piece)
                if size > MAX_RENDER_CHARS:
                    raise FormatError(f"chat template from {self.origin}: output exceeds {MAX_RENDER_CHARS} chars")
                out.append(piece)
        except SecurityError as e:
            raise FormatError(f"chat template from {self.origin}: unsafe operation refused ({e})") from None
        except RecursionError:
            raise FormatError(f"chat template from {self.origin}: recursion too deep") from None
        except (TemplateRejected, FormatError):    # both ValueErrors: keep them as they are
            raise
        except (TemplateError, TypeError, ValueError, KeyError, AttributeError, IndexError, ZeroDivisionError,
                OverflowError) as e:
            raise FormatError(f"chat template from {self.origin}: {type(e).__name__}: {e}") from None
        return "".join(out)

    def encode(self, messages: list[dict], add_generation_prompt: bool = True, **kwargs) -> list[int]:
        """Token ids of the rendered conversation; BOS is added only when the template did not write it."""
        if self.tokenizer is None:
            raise Unsupported("ChatTemplate.encode needs a tokenizer")
        text = self.render(messages, add_generation_prompt, **kwargs)
        bos = self.tokenizer.bos_token
        writes_bos = bool(bos) and text.startswith(bos)
        return self.tokenizer.encode(text, add_special_tokens=not writes_bos)

    # ---- stop tokens ---------------------------------------------------------------------------------------
    @property
    def end_of_turn_ids(self) -> frozenset[int]:
        """EOS and end-of-turn ids of the tokenizer, plus the special token the template closes a reply with."""
        tok = self.tokenizer
        ids = set(tok.stop_ids) if tok else set()
        turn_end = self.template_turn_end()
        if turn_end is not None:
            ids.add(turn_end)
        return frozenset(ids)

    def template_turn_end(self) -> int | None:
        """Render user/assistant turns and return the first special token after the assistant's text, if any."""
        if self._template is None or self.tokenizer is None:
            return None
        probe = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": _PROBE_REPLY}]
        try:
            text = self.render(probe, add_generation_prompt=False)
        except (TemplateRejected, FormatError, Unsupported):
            return None
        _, found, after = text.partition(_PROBE_REPLY)
        if not found:
            return None
        specials = self.tokenizer.special_ids
        return next((i for i in self.tokenizer.encode(after, add_special_tokens=False) if i in specials), None)

    # ---- construction --------------------------------------------------------------------------------------
    @classmethod
    def from_checkpoint(cls, ckpt, tokenizer: Tokenizer | None) -> "ChatTemplate":
        """From what impnb.load_checkpoint returns."""
        path = Path(ckpt.path)
        directory = path if path.is_dir() else path.parent
        gguf_info = (ckpt.tokenizer or {}) if ckpt.format == "gguf" else {}
        raw = ckpt.raw_config or {}
        arch = raw.get("general.architecture") or raw.get("model_type") or ""
        return cls.find(directory, tokenizer, gguf_info=gguf_info, arch=arch)

    @classmethod
    def from_path(cls, path, tokenizer: Tokenizer | None = None) -> "ChatTemplate":
        """A .gguf file or a checkpoint directory (the tokenizer is loaded from it when not given)."""
        path = Path(path)
        tokenizer = tokenizer or Tokenizer.from_path(path)
        directory = path if path.is_dir() else path.parent
        if path.is_file() and path.suffix == ".gguf":
            from .loaders.gguf import read_gguf
            gf = read_gguf(path)
            return cls.find(directory, tokenizer, gguf_info=gf.tokenizer_info, arch=gf.architecture)
        config = _read_json_object(directory / "config.json")
        return cls.find(directory, tokenizer, arch=config.get("model_type", ""))

    @classmethod
    def find(cls, directory: Path, tokenizer: Tokenizer | None, gguf_info: dict | None = None,
             arch: str = "") -> "ChatTemplate":
        """Apply the search order in the module docstring."""
        looked = []
        for origin, source in _candidates(Path(directory), gguf_info or {}, arch):
            looked.append(origin)
            if isinstance(source, str) and source.strip():
                return cls(source, tokenizer, origin)
        return cls(None, tokenizer, ", ".join(looked))


def _candidates(directory: Path, gguf_info: dict, arch: str):
    """(origin, template text or None) in search order; files are read only when reached."""
    yield "GGUF tokenizer.chat_template", gguf_info.get("chat_template")
    jinja_file = directory / "chat_template.jinja"
    yield str(jinja_file), _read_text(jinja_file)
    json_file = directory / "chat_template.json"
    yield str(json_file), _read_json_object(json_file).get("chat_template")
    config_file = directory / "tokenizer_config.json"
    yield str(config_file), _config_template(_read_json_object(config_file).get("chat_template"))
    name = FALLBACK_TEMPLATES.get(arch)
    if name:
        yield f"impnb fallback for {arch} ({name})", _read_text(_DATA / name)


def _config_template(value) -> str | None:
    if isinstance(value, list):   # [{"name": "default", "template": ...}, {"name": "tool_use", ...}]
        named = {v.get("name"): v.get("template") for v in value if isinstance(v, dict)}
        value = named.get("default")
    return value if isinstance(value, str) else None


def _read_text(path: Path) -> str | None:
    if not path.is_file():
        return None
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise FormatError(f"{path}: not UTF-8 ({e})") from None


def _read_json_object(path: Path) -> dict:
    text = _read_text(path)
    if text is None:
        return {}
    try:
        value = json.loads(text)
    except ValueError as e:
        raise FormatError(f"{path}: not valid JSON ({e})") from None
    return value if isinstance(value, dict) else {}


def _token(tok: Tokenizer | None, attr: str) -> str:
    token_id = getattr(tok, attr, None) if tok else None
    return (tok.id_to_token(token_id) or "") if token_id is not None else ""


def stop_token_ids(tokenizer: Tokenizer, chat: ChatTemplate | None = None) -> frozenset[int]:
    """Every id generation should stop at: EOS, the end-of-turn tokens, the template's turn end."""
    return chat.end_of_turn_ids if chat is not None else tokenizer.stop_ids


__all__ = ["ChatTemplate", "TemplateRejected", "stop_token_ids", "MAX_RENDER_CHARS"]
