"""The sandbox chat templates render in: jinja2's ImmutableSandboxedEnvironment (no attribute escapes, no mutation
of the messages) plus a budget on every render.

    env = environment()                       # one per template; the environment mirrors Hugging Face's
    text = render(env.from_string(src), context, RenderBudget(seconds=2.0, max_chars=1 << 20, label="..."))

The budget (``RenderBudget``) bounds
  * time: a deadline checked on every Python call and line while the template runs (a trace hook), and on every
    call, attribute access and operator the sandbox intercepts;
  * memory: the process's resident size may grow by at most ``max_memory`` bytes during a render;
  * size, before the work is done: output, string / list repetition and concatenation (``*``, ``+``, ``~``,
    macro bodies), ``join``, ``replace``, widths and precisions of ``center`` / ``ljust`` / ``rjust`` / ``zfill``
    / ``indent`` / ``format`` / ``%`` / ``str.format`` / ``strftime`` (at most MAX_WIDTH), integer size (``**``,
    ``*`` at most MAX_INT_BITS bits), ``range`` (MAX_RANGE_ITEMS items per render), ``lipsum``, ``batch`` /
    ``slice`` counts, ``tojson`` indents;
and turns MemoryError into the same error. Exceeding any of them stops the render with an internal
BaseException (so no ``except Exception`` inside a filter can swallow it), which ``render`` turns into
``impnb.TemplateBudgetError`` (a FormatError) naming the template and the bound.
"""
from __future__ import annotations

import contextvars
import json
import os
import re
import string
import sys
import time
from datetime import datetime

from jinja2 import pass_environment, pass_eval_context
from jinja2 import filters as jinja_filters
from jinja2.compiler import CodeGenerator
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import generate_lorem_ipsum

from .errors import TemplateBudgetError

MAX_TEMPLATE_CHARS = 256 << 10      # released chat templates are at most about 20 KB
MAX_WIDTH = 4096                    # field widths, precisions, indents, batch / slice counts
MAX_INT_BITS = 1 << 16              # a 20,000-digit integer; str() of ints stops at 4300 digits anyway
MAX_RANGE_ITEMS = 1 << 20           # items all range() calls of one render may produce together
MAX_MEMORY = 256 << 20              # resident-size growth one render may cause
_SPEC = re.compile(r"^(?:.?[<>=^])?[-+ ]?z?#?0?(\d*)[,_]?(?:\.(\d+))?[a-zA-Z%]?$")
_PERCENT = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?[hlL]?[a-zA-Z%]")
_BUDGET: contextvars.ContextVar = contextvars.ContextVar("impnb_render_budget", default=None)
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


class _Stop(BaseException):
    """Unwinds a render that exceeded its budget; ``render`` turns it into TemplateBudgetError."""


def _resident_bytes() -> int:
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return 0   # no /proc: the time and size bounds still hold


class RenderBudget:
    """Limits of one render (see the module docstring); ``label`` names the template in messages."""

    def __init__(self, seconds: float, max_chars: int, label: str = "chat template", max_memory: int = MAX_MEMORY):
        self.seconds, self.max_chars, self.label, self.max_memory = seconds, max_chars, label, max_memory
        self.deadline = time.monotonic() + seconds
        self.memory_base = _resident_bytes()
        self.range_left = MAX_RANGE_ITEMS
        self._next_memory_check = 0.0
        self.exceeded: str | None = None

    def fail(self, what: str):
        self.exceeded = self.exceeded or what
        raise _Stop(self.message())

    def message(self) -> str:
        return f"{self.label}: exceeds its render budget ({self.exceeded})"

    def tick(self) -> None:
        """Called on every traced event: the deadline, and every 2 ms the resident size."""
        if self.exceeded:
            self.fail(self.exceeded)
        now = time.monotonic()
        if now > self.deadline:
            self.fail(f"more than {self.seconds:g} s")
        if now >= self._next_memory_check:
            self._next_memory_check = now + 0.002
            if self.memory_base and _resident_bytes() - self.memory_base > self.max_memory:
                self.fail(f"more than {self.max_memory >> 20} MiB of memory")

    def size(self, n: int, what: str) -> None:
        if n > self.max_chars:
            self.fail(f"{what} of {n} items, over {self.max_chars}")

    def width(self, value, what: str) -> None:
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_WIDTH:
            self.fail(f"{what} {value}, over {MAX_WIDTH}")


def _budget() -> RenderBudget:
    """The budget of the render in progress. Outside a render (jinja2 folds constant output while compiling) the
    bounded operations refuse to run, with an ordinary exception the compiler catches: it then leaves the
    expression to run time, under a budget."""
    budget = _BUDGET.get()
    if budget is None:
        raise TemplateBudgetError("bounded template operations run only inside a budgeted render")
    return budget


def render(template, context: dict, budget: RenderBudget) -> str:
    """Run ``template`` under ``budget`` (a trace hook checks it on every call and line) and return the text."""
    token = _BUDGET.set(budget)
    previous = sys.gettrace()

    def trace(frame, event, arg):
        budget.tick()
        return trace

    out, total = [], 0
    sys.settrace(trace)
    try:
        for piece in template.generate(**context):
            total += len(piece)
            budget.size(total, "output")
            out.append(piece)
    except _Stop:
        pass
    except MemoryError:
        budget.exceeded = budget.exceeded or "out of memory"
    finally:
        sys.settrace(previous)
        _BUDGET.reset(token)
    if budget.exceeded:
        raise TemplateBudgetError(budget.message())
    return "".join(out)


# ---------------------------------------------------------------------------------------------- size checks
def _check_format_string(fmt: str) -> None:
    """str.format fields: no nested (computed) spec, widths and precisions at most MAX_WIDTH."""
    budget = _budget()
    try:
        fields = list(string.Formatter().parse(fmt))
    except ValueError:
        return   # str.format raises the same ValueError itself
    for _, _, spec, _ in fields:
        if not spec:
            continue
        m = _SPEC.match(spec)
        if "{" in spec or m is None:
            budget.fail(f"format spec {spec[:20]!r} (computed or unknown)")
        for number in m.groups():
            if number:
                budget.width(int(number), "format width")


def _check_percent(fmt: str, args) -> None:
    budget = _budget()
    for m in _PERCENT.finditer(fmt):
        for number in m.groups():
            if number == "*":
                budget.fail("'%*' width")
            if number:
                budget.width(int(number), "'%' width")


def _int_bits(x) -> int:
    return x.bit_length() if isinstance(x, int) else 0


class _Generator(CodeGenerator):
    """``a ~ b`` goes through the environment's size-checked join (jinja2 writes a plain ``str_join``)."""

    def visit_Concat(self, node, frame) -> None:
        self.write("environment.concat_values((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")


class BoundedEnvironment(ImmutableSandboxedEnvironment):
    """The sandbox with the budget checks of the module docstring."""

    intercepted_binops = frozenset(["*", "**", "+", "%"])
    code_generator_class = _Generator

    def concat(self, pieces) -> str:   # macro bodies, {% set %} blocks, {% filter %} blocks
        pieces = list(pieces)
        _budget().size(sum(len(p) for p in pieces), "joined text")
        return "".join(pieces)

    def concat_values(self, values) -> str:
        return self.concat(str(v) for v in values)

    def call_binop(self, context, operator, left, right):
        budget = _budget()
        budget.tick()
        if operator == "**" and isinstance(right, int) and isinstance(left, int) and right > 0:
            if right > MAX_INT_BITS or max(_int_bits(left), 1) * right > MAX_INT_BITS:
                budget.fail(f"integer exponent {right}")
        elif operator == "*":
            seq, count = (left, right) if isinstance(right, int) else (right, left)
            if isinstance(seq, (str, bytes, list, tuple)) and isinstance(count, int):
                budget.size(len(seq) * max(count, 0), "repetition")
            elif isinstance(left, int) and isinstance(right, int) and _int_bits(left) + _int_bits(right) > MAX_INT_BITS:
                budget.fail("integer product")
        elif operator == "+" and isinstance(left, (str, bytes, list, tuple)) and hasattr(right, "__len__"):
            budget.size(len(left) + len(right), "concatenation")
        elif operator == "%" and isinstance(left, str):
            _check_percent(left, right)
        return super().call_binop(context, operator, left, right)

    def getattr(self, obj, attribute):
        _budget().tick()
        return super().getattr(obj, attribute)

    def getitem(self, obj, argument):
        _budget().tick()
        return super().getitem(obj, argument)

    def wrap_str_format(self, value):
        wrapped = super().wrap_str_format(value)
        if wrapped is None:
            return None
        fmt = value.__self__

        def checked(*args, **kwargs):
            _check_format_string(fmt)
            return wrapped(*args, **kwargs)
        return checked

    def call(__self, __context, __obj, *args, **kwargs):  # noqa: N805 - jinja2's calling convention
        budget = _budget()
        budget.tick()
        args = _checked_method_args(__obj, args, kwargs, budget)
        return super().call(__context, __obj, *args, **kwargs)


def _checked_method_args(fn, args: tuple, kwargs: dict, budget: RenderBudget) -> tuple:
    """Size checks for the str / bytes / int methods that can allocate without bound; returns the arguments
    (a ``join`` argument materialized, so that it is counted once)."""
    owner, name = getattr(fn, "__self__", None), getattr(fn, "__name__", "")
    if isinstance(owner, (str, bytes)):
        first = args[0] if args else kwargs.get("width", kwargs.get("tabsize"))
        if name in ("center", "ljust", "rjust", "zfill"):
            budget.width(first, f"str.{name} width")
        elif name == "expandtabs":
            budget.size(len(owner) + owner.count("\t" if isinstance(owner, str) else b"\t") * (first or 8),
                        "expandtabs")
        elif name == "join" and args:
            items = list(args[0])
            budget.size(sum(len(i) if hasattr(i, "__len__") else 0 for i in items) + len(owner) * len(items),
                        "join")
            args = (items,) + args[1:]
        elif name == "replace" and len(args) >= 2 and isinstance(args[0], type(owner)):
            hits = owner.count(args[0])
            budget.size(len(owner) + hits * max(len(args[1]) - len(args[0]), 0), "replace")
    elif isinstance(owner, int) and name == "to_bytes":
        budget.width(args[0] if args else kwargs.get("length"), "int.to_bytes length")
    return args


# ---------------------------------------------------------------------------------------------- filters, globals
def _center(value, width=80):
    _budget().width(width, "center width")
    return jinja_filters.do_center(value, width)


def _indent(s, width=4, first=False, blank=False):
    budget = _budget()
    budget.width(width if isinstance(width, int) else len(str(width)), "indent width")
    step = width if isinstance(width, int) else len(str(width))
    budget.size(len(str(s)) + (str(s).count("\n") + 1) * max(step, 0), "indented text")
    return jinja_filters.do_indent(s, width, first, blank)


def _format(value, *args, **kwargs):
    _check_percent(str(value), args or kwargs)
    return jinja_filters.do_format(value, *args, **kwargs)


@pass_eval_context
def _join(eval_ctx, value, d="", attribute=None):
    items = list(value)
    _budget().size(sum(len(str(i)) for i in items) + len(str(d)) * len(items), "join")
    return jinja_filters.do_join(eval_ctx, items, d, attribute)


@pass_eval_context
def _replace(eval_ctx, s, old, new, count=None):
    text, old_s, new_s = str(s), str(old), str(new)
    _budget().size(len(text) + text.count(old_s) * max(len(new_s) - len(old_s), 0), "replace")
    return jinja_filters.do_replace(eval_ctx, s, old, new, count)


def _batch(value, linecount, fill_with=None):
    _budget().width(linecount, "batch size")
    return jinja_filters.do_batch(value, linecount, fill_with)


def _slice(value, slices, fill_with=None):
    _budget().width(slices, "slice count")
    return jinja_filters.do_slice(value, slices, fill_with)


@pass_environment
def _sum(environment, iterable, attribute=None, start=0):
    if not isinstance(start, (int, float)):
        _budget().fail("sum of non-numbers (quadratic concatenation)")
    return jinja_filters.sync_do_sum(environment, iterable, attribute, start)


def _tojson(value, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    _budget().width(indent if isinstance(indent, int) else len(str(indent or "")), "tojson indent")
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _lipsum(n=5, html=True, min=20, max=100):  # noqa: A002 - jinja2's parameter names
    budget = _budget()
    for v, what in ((n, "lipsum paragraphs"), (min, "lipsum words"), (max, "lipsum words")):
        budget.width(v, what)
    budget.size(max_words(n, max), "lipsum")
    return generate_lorem_ipsum(n, html, min, max)


def max_words(n, words) -> int:
    return (n if isinstance(n, int) else 0) * (words if isinstance(words, int) else 0) * 16


def _strftime_now(fmt: str) -> str:
    if not isinstance(fmt, str) or len(fmt) > MAX_WIDTH or re.search(r"%[-_0^#]*\d", fmt):
        _budget().fail("strftime format (too long, or with a width)")
    return datetime.now().strftime(fmt)


def _bounded_range(*args):
    items = range(*args)
    budget = _budget()
    budget.range_left -= len(items)
    if budget.range_left < 0:
        budget.fail(f"range() calls producing over {MAX_RANGE_ITEMS} items")
    return items


def environment(raise_exception) -> BoundedEnvironment:
    """A fresh environment as Hugging Face configures its own (trim_blocks, lstrip_blocks, loop controls, tojson,
    raise_exception, strftime_now), with the bounded filters and globals. No constant folding at compile time:
    every expression runs under a render's budget."""
    env = BoundedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"],
                             optimized=False)
    env.filters.update(center=_center, indent=_indent, format=_format, join=_join, replace=_replace, batch=_batch,
                       slice=_slice, sum=_sum, tojson=_tojson)
    env.globals.update(raise_exception=raise_exception, strftime_now=_strftime_now, lipsum=_lipsum,
                       range=_bounded_range)
    return env
