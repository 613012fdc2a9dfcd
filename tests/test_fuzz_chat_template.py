"""Fuzzing of chat-template rendering (hypothesis): templates composed from loops, conditionals, assignments,
recursive macros, operators, filters and string methods with hostile sizes (10**9 widths, 10**12 ranges, huge
powers). Each render must return text or raise FormatError (a TemplateBudgetError for a budget, a
TemplateRejected, any other template error), within its time budget plus a small margin, and never escape the
sandbox. ``IMPNB_FUZZ_EXAMPLES=N`` runs N examples (a few seconds by default)."""
from __future__ import annotations

import os
import time

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from impnb import FormatError, TemplateBudgetError
from impnb.chat import ChatTemplate

EXAMPLES = int(os.environ.get("IMPNB_FUZZ_EXAMPLES", 80))
SECONDS = 0.25
CASES = {"rendered": 0, "budget": 0, "error": 0}
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])

NUMBERS = st.sampled_from(["0", "1", "3", "-1", "64", "4097", "10**6", "10**9", "10**12", "2**64", "1e308", "0.5"])
LEAVES = st.one_of(NUMBERS, st.sampled_from(["'ab'", "'%d'", "'{:>9}'", "'a\\tb'", "[1, 2]", "messages",
                                             "messages[0].content", "ns.s", "x", "loop.index", "none"]))
OPS = st.sampled_from(["*", "+", "~", "**", "%", "//", "-", "and", "in"])
FILTERS = st.sampled_from(["center", "indent", "format", "join", "replace('a', 'bb')", "batch", "slice", "sum",
                           "tojson", "list", "string", "length", "int", "wordwrap", "truncate", "unique", "reverse"])
METHODS = st.sampled_from(["ljust", "rjust", "center", "zfill", "expandtabs", "join", "replace", "format", "split",
                           "to_bytes"])


def _expr(children):
    return st.one_of(
        st.tuples(children, OPS, children).map(lambda t: f"({t[0]} {t[1]} {t[2]})"),
        st.tuples(children, FILTERS, NUMBERS).map(
            lambda t: f"({t[0]}|{t[1]})" if "(" in t[1] else f"({t[0]}|{t[1]}({t[2]}))"),
        st.tuples(children, METHODS, NUMBERS).map(lambda t: f"({t[0]}).{t[1]}({t[2]})"),
        NUMBERS.map(lambda n: f"range({n})"), NUMBERS.map(lambda n: f"lipsum({n})"),
    )


EXPR = st.recursive(LEAVES, _expr, max_leaves=5)


def _block(children):
    return st.one_of(
        st.tuples(NUMBERS, children).map(lambda t: "{%% for x in range(%s) %%}%s{%% endfor %%}" % t),
        st.tuples(EXPR, children).map(lambda t: "{%% for x in %s %%}%s{%% endfor %%}" % t),
        st.tuples(EXPR, children).map(lambda t: "{%% if %s %%}%s{%% endif %%}" % t),
        st.tuples(EXPR, children).map(lambda t: "{%% set ns.s = %s %%}%s" % t),
        st.lists(children, min_size=1, max_size=3).map("".join),
    )


BODY = st.recursive(EXPR.map(lambda e: "{{ %s }}" % e), _block, max_leaves=4)
MACROS = st.sampled_from([
    "", "{% macro f(n) %}{% if n > 0 %}{{ f(n - 1) }}{{ f(n - 1) }}{% else %}x{% endif %}{% endmacro %}{{ f(40) }}",
    "{% macro g(n) %}{% if n > 0 %}{% set s = g(n - 1) %}{{ s }}{{ s }}{% else %}y{% endif %}{% endmacro %}{{ g(60) }}",
    "{% macro h() %}{{ h() }}{% endmacro %}{{ h() }}", "{{ raise_exception('refused') }}",
])


@SETTINGS
@given(body=BODY, macro=MACROS)
def test_fuzz_template_render(body, macro):
    source = "{% set ns = namespace(s='a') %}" + body + macro
    try:
        chat = ChatTemplate(source, None, "fuzz")
    except FormatError:
        CASES["error"] += 1
        return
    start = time.perf_counter()
    try:
        out = chat.render([{"role": "user", "content": "hello"}], seconds=SECONDS)
        assert isinstance(out, str)
        CASES["rendered"] += 1
    except TemplateBudgetError:
        CASES["budget"] += 1
    except FormatError:
        CASES["error"] += 1
    assert time.perf_counter() - start < SECONDS + 1.5, source


def test_zz_report():
    print(f"\nchat template fuzz: {CASES}")
    assert sum(CASES.values()) and CASES["budget"]
