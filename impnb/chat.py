"""Chat templates: find a checkpoint's Jinja template, render it in a sandbox, tokenize the result.

    chat = ChatTemplate.from_checkpoint(ckpt, tokenizer)        # or ChatTemplate.from_path(path, tokenizer)
    chat.render([{"role": "user", "content": "Hi"}])             # -> str, with the generation prompt
    chat.encode(messages)                                        # -> token ids (BOS not doubled)
    chat.end_of_turn_ids                                         # stop tokens: EOS, EOT, the template's turn end

Where the template comes from, first found wins (`chat.origin` says which):
  1. GGUF metadata tokenizer.chat_template;
  2. chat_template.jinja beside the weights (Gemma-4 NVFP4 ships its 16 KB template only there, with
     tokenizer_config.json's field empty), then chat_template.json;
  3. tokenizer_config.json "chat_template" (a string, or a list of {"name", "template"}: "default" is used);
  4. impnb's fallback for Gemma (1/2/3) checkpoints, which often ship none (impnb/data/chat_template_gemma.jinja).
Without any, `render` raises `impnb.Unsupported` naming where it looked.

Templates are untrusted input. They run in impnb/chat_sandbox.py: jinja2's ImmutableSandboxedEnvironment (no
attribute escapes, no mutation of the messages), configured as Hugging Face configures its own (trim_blocks,
lstrip_blocks, loop controls, tojson, raise_exception, strftime_now), with a budget on every render: time
(RENDER_SECONDS), memory, output (MAX_RENDER_CHARS plus twice the characters of the messages) and the size of every
operation that can allocate without bound. A render over budget raises ``impnb.TemplateBudgetError``; other template
errors are FormatError, and the template's own raise_exception a TemplateRejected with its message.

Loading a model renders one probe conversation to find the token that closes a turn (``template_turn_end``), under
a small budget (PROBE_SECONDS); a template that exceeds it is disabled (``chat.disabled`` says why, in one line)
and the model stays usable with plain prompts and token ids.
"""
from __future__ import annotations

from pathlib import Path

from jinja2.exceptions import SecurityError, TemplateSyntaxError

from . import chat_sandbox
from .chat_sandbox import MAX_TEMPLATE_CHARS, RenderBudget
from .errors import FormatError, ImpnbError, TemplateBudgetError, Unsupported
from .loaders.jsonfile import read_json_file
from .tokenizer import Tokenizer

MAX_RENDER_CHARS = 1 << 20          # output budget of a render, plus twice the characters of its messages
RENDER_SECONDS = 2.0                # a real template renders in milliseconds
PROBE_SECONDS = 0.25                # the probe render at load time
FALLBACK_TEMPLATES = {"gemma": "chat_template_gemma.jinja", "gemma2": "chat_template_gemma.jinja",
                      "gemma3": "chat_template_gemma.jinja", "gemma3_text": "chat_template_gemma.jinja"}
_PROBE_REPLY = "impnb-probe-reply"
_DATA = Path(__file__).parent / "data"


class TemplateRejected(FormatError):
    """The template itself refused the conversation (its raise_exception), e.g. roles not alternating."""


def _raise_exception(message):
    raise TemplateRejected(str(message)[:500])


class ChatTemplate:
    """A compiled chat template bound to a tokenizer (either may be absent: see `render`)."""

    def __init__(self, source: str | None, tokenizer: Tokenizer | None, origin: str = ""):
        self.source, self.tokenizer, self.origin = source, tokenizer, origin
        self._template = None
        self.disabled: str | None = None   # why chat is off (a probe render exceeded its budget), in one line
        if source is not None:
            if len(source) > MAX_TEMPLATE_CHARS:
                raise FormatError(f"chat template from {origin}: {len(source)} characters is over the "
                                  f"{MAX_TEMPLATE_CHARS}-character limit")
            try:
                self._template = chat_sandbox.environment(_raise_exception).from_string(source)
            except TemplateSyntaxError as e:
                raise FormatError(f"chat template from {origin}: syntax error at line {e.lineno}: "
                                  f"{str(e.message)[:200]}") from None
            except Exception as e:   # noqa: BLE001 - RecursionError, MemoryError, ... while compiling
                raise FormatError(f"chat template from {origin}: cannot be compiled ({type(e).__name__}: "
                                  f"{str(e)[:200]})") from None

    def __repr__(self):
        return f"ChatTemplate(origin={self.origin!r}, {len(self.source or '')} chars)"

    # ---- rendering -----------------------------------------------------------------------------------------
    def render(self, messages: list[dict], add_generation_prompt: bool = True, *, seconds: float = RENDER_SECONDS,
               **kwargs) -> str:
        """The conversation as the model's prompt text. kwargs reach the template (tools, documents, ...)."""
        if self._template is None:
            raise Unsupported(f"no chat template for this checkpoint (looked in: {self.origin})")
        if self.disabled:
            raise TemplateBudgetError(self.disabled)
        tok = self.tokenizer
        context = dict(bos_token=tok.bos_token if tok else "", eos_token=tok.eos_token if tok else "",
                       unk_token=_token(tok, "unk_id"), pad_token=_token(tok, "pad_id"), tools=None, documents=None)
        context.update(kwargs, messages=messages, add_generation_prompt=add_generation_prompt)
        budget = RenderBudget(seconds, MAX_RENDER_CHARS + 2 * _text_size(messages, kwargs),
                              f"chat template from {self.origin}")
        try:
            return chat_sandbox.render(self._template, context, budget)
        except SecurityError as e:
            raise FormatError(f"chat template from {self.origin}: unsafe operation refused ({str(e)[:200]})") from None
        except RecursionError:
            raise FormatError(f"chat template from {self.origin}: recursion too deep") from None
        except ImpnbError:   # TemplateRejected, TemplateBudgetError: already say what happened
            raise
        except Exception as e:   # noqa: BLE001 - whatever the template made Python raise is the template's error
            raise FormatError(f"chat template from {self.origin}: {type(e).__name__}: {str(e)[:200]}") from None

    def encode(self, messages: list[dict], add_generation_prompt: bool = True, **kwargs) -> list[int]:
        """Token ids of the rendered conversation; BOS is added only when the template did not write it."""
        if self.tokenizer is None:
            raise Unsupported("this checkpoint has no tokenizer (no tokenizer.json, no GGUF vocabulary): chat needs "
                              "one; pass token ids instead")
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
        """Render user/assistant turns (under the small PROBE_SECONDS budget) and return the first special token
        after the assistant's text, if any. A probe over budget disables the template (``self.disabled``)."""
        if self._template is None or self.tokenizer is None or self.disabled:
            return None
        probe = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": _PROBE_REPLY}]
        try:
            text = self.render(probe, add_generation_prompt=False, seconds=PROBE_SECONDS)
        except TemplateBudgetError as exc:
            self.disabled = f"{exc}; chat is disabled for this model (plain prompts and token ids still work)"
            return None
        except (FormatError, Unsupported):
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
        named = {v.get("name"): v.get("template") for v in value
                 if isinstance(v, dict) and isinstance(v.get("name"), str)}
        value = named.get("default")
    return value if isinstance(value, str) else None


def _read_text(path: Path) -> str | None:
    if not path.is_file():
        return None
    if path.stat().st_size > 4 * MAX_TEMPLATE_CHARS:
        raise FormatError(f"{path}: {path.stat().st_size} bytes is over the limit for a chat template")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise FormatError(f"{path}: not UTF-8 ({e})") from None


def _read_json_object(path: Path) -> dict:
    return read_json_file(path) or {}


def _text_size(messages, kwargs) -> int:
    """Characters of the conversation (message contents and string kwargs) that a template may echo."""
    size = sum(len(str(m.get("content", ""))) for m in messages if isinstance(m, dict)) if isinstance(
        messages, list) else 0
    return size + sum(len(v) for v in kwargs.values() if isinstance(v, str))


def _token(tok: Tokenizer | None, attr: str) -> str:
    token_id = getattr(tok, attr, None) if tok else None
    return (tok.id_to_token(token_id) or "") if token_id is not None else ""


def stop_token_ids(tokenizer: Tokenizer, chat: ChatTemplate | None = None) -> frozenset[int]:
    """Every id generation should stop at: EOS, the end-of-turn tokens, the template's turn end."""
    return chat.end_of_turn_ids if chat is not None else tokenizer.stop_ids


__all__ = ["ChatTemplate", "TemplateRejected", "stop_token_ids", "MAX_RENDER_CHARS", "RENDER_SECONDS", "PROBE_SECONDS"]
