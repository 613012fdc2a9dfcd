"""Regular expressions from checkpoint configs (compressed-tensors ``ignore`` entries "re:<regex>"), matched without
backtracking.

Python's ``re`` backtracks: ``re.match("(a|a)*b", "a" * 40)`` takes hours, so a config could stall a load. Here a
pattern is parsed with Python's own regex parser (so the syntax and meaning are ``re``'s), compiled to a Thompson
NFA and run as a Pike VM: every step advances all threads at once, so a match costs at most
len(text) x states steps whatever the pattern. ``SafeRegex(p).match(s)`` answers what ``re.match(p, s) is not
None`` answers.

Supported: literals, ``.``, classes (ranges, ``\\d \\w \\s`` and their negations), groups, alternation, greedy and
lazy repeats (counted ones expanded), ``^ $ \\A \\Z \\b \\B``, the DOTALL / MULTILINE / VERBOSE flags. Refused with
``impnb.Unsupported``: backreferences, lookarounds, possessive repeats and atomic groups, IGNORECASE / ASCII /
LOCALE. Bounds (FormatError): pattern <= MAX_PATTERN_CHARS characters, <= MAX_STATES NFA states, subject <=
MAX_SUBJECT_CHARS characters.
"""
from __future__ import annotations

import re

try:  # Python >= 3.11 names the parser module re._parser; 3.10 has sre_parse (the same parser)
    from re import _constants as C, _parser as sre_parse
except ImportError:  # pragma: no cover
    import sre_constants as C
    import sre_parse

from ..errors import FormatError, Unsupported

MAX_PATTERN_CHARS = 1024
MAX_STATES = 512
MAX_SUBJECT_CHARS = 4096
_ALLOWED_FLAGS = C.SRE_FLAG_UNICODE | C.SRE_FLAG_DOTALL | C.SRE_FLAG_MULTILINE | C.SRE_FLAG_VERBOSE
_CATEGORIES = {
    C.CATEGORY_DIGIT: str.isdecimal, C.CATEGORY_NOT_DIGIT: lambda ch: not ch.isdecimal(),
    C.CATEGORY_SPACE: str.isspace, C.CATEGORY_NOT_SPACE: lambda ch: not ch.isspace(),
    C.CATEGORY_WORD: lambda ch: ch.isalnum() or ch == "_",
    C.CATEGORY_NOT_WORD: lambda ch: not (ch.isalnum() or ch == "_"),
}

_ANCHORS = (C.AT_BEGINNING, C.AT_BEGINNING_STRING, C.AT_END, C.AT_END_STRING, C.AT_BOUNDARY, C.AT_NON_BOUNDARY)


def _is_word(ch: str) -> bool:
    return ch.isalnum() or ch == "_"


class SafeRegex:
    """One compiled pattern (see the module docstring). ``where`` names it in error messages."""

    def __init__(self, pattern: str, where: str = "regex"):
        if not isinstance(pattern, str) or len(pattern) > MAX_PATTERN_CHARS:
            raise FormatError(f"{where}: a pattern must be a string of at most {MAX_PATTERN_CHARS} characters")
        self.pattern, self.where = pattern, where
        try:
            re.compile(pattern)   # re's own syntax check and message
            parsed = sre_parse.parse(pattern)
        except (re.error, RecursionError, OverflowError) as exc:
            raise FormatError(f"{where}: {pattern[:80]!r} is not a valid regex ({exc})") from None
        flags = parsed.state.flags
        if flags & ~_ALLOWED_FLAGS:
            raise Unsupported(f"{where}: regex flags {flags & ~_ALLOWED_FLAGS:#x} (IGNORECASE / ASCII / LOCALE) are "
                              f"not supported in {pattern[:80]!r}")
        self.dotall, self.multiline = bool(flags & C.SRE_FLAG_DOTALL), bool(flags & C.SRE_FLAG_MULTILINE)
        self.program: list[tuple] = []
        self._emit_sequence(list(parsed))
        self.program.append(("match",))

    # ---- compilation: a program of ("char", predicate), ("split", a, b), ("jmp", a), ("assert", kind), ("match",)
    def _add(self, instruction) -> int:
        if len(self.program) >= MAX_STATES:
            raise FormatError(f"{self.where}: {self.pattern[:80]!r} needs more than {MAX_STATES} NFA states")
        self.program.append(instruction)
        return len(self.program) - 1

    def _emit_sequence(self, items) -> None:
        for op, av in items:
            self._emit(op, av)

    def _emit(self, op, av) -> None:
        if op in (C.LITERAL, C.NOT_LITERAL, C.ANY, C.IN):
            self._add(("char", self._predicate(op, av)))
        elif op == C.SUBPATTERN:
            _group, add_flags, del_flags, sub = av
            if add_flags or del_flags:
                raise Unsupported(f"{self.where}: scoped regex flags are not supported in {self.pattern[:80]!r}")
            self._emit_sequence(list(sub))
        elif op == C.BRANCH:
            self._emit_branch(av[1])
        elif op in (C.MAX_REPEAT, C.MIN_REPEAT):
            self._emit_repeat(*av)
        elif op == C.AT and av in _ANCHORS:
            self._add(("assert", av))
        else:
            raise Unsupported(f"{self.where}: regex construct {op} (backreferences, lookarounds, possessive or "
                              f"atomic groups) is not supported in {self.pattern[:80]!r}")

    def _emit_branch(self, alternatives) -> None:
        jumps = []
        for i, alt in enumerate(alternatives):
            if i < len(alternatives) - 1:
                split = self._add(None)
                self._emit_sequence(list(alt))
                jumps.append(self._add(None))
                self.program[split] = ("split", split + 1, len(self.program))
            else:
                self._emit_sequence(list(alt))
        for j in jumps:
            self.program[j] = ("jmp", len(self.program))

    def _emit_repeat(self, lo: int, hi, sub) -> None:
        body = list(sub)
        if lo > MAX_STATES or (hi != C.MAXREPEAT and hi > MAX_STATES):
            raise FormatError(f"{self.where}: repeat count over {MAX_STATES} in {self.pattern[:80]!r}")
        for _ in range(lo):
            self._emit_sequence(body)
        if hi == C.MAXREPEAT:   # x*: L: split(body, out); body; jmp L
            split = self._add(None)
            self._emit_sequence(body)
            self._add(("jmp", split))
            self.program[split] = ("split", split + 1, len(self.program))
            return
        splits = []
        for _ in range(hi - lo):   # x{0,k}: k nested optional copies
            splits.append(self._add(None))
            self._emit_sequence(body)
        for s in splits:
            self.program[s] = ("split", s + 1, len(self.program))

    def _predicate(self, op, av):
        if op == C.LITERAL:
            return lambda ch, c=chr(av): ch == c
        if op == C.NOT_LITERAL:
            return lambda ch, c=chr(av): ch != c
        if op == C.ANY:
            return (lambda ch: True) if self.dotall else (lambda ch: ch != "\n")
        negate, tests = False, []
        for item_op, item in av:
            if item_op == C.NEGATE:
                negate = True
            elif item_op == C.LITERAL:
                tests.append(lambda ch, c=chr(item): ch == c)
            elif item_op == C.RANGE:
                tests.append(lambda ch, lo=chr(item[0]), hi=chr(item[1]): lo <= ch <= hi)
            elif item_op == C.CATEGORY and item in _CATEGORIES:
                tests.append(_CATEGORIES[item])
            else:
                raise Unsupported(f"{self.where}: character-class item {item_op} {item} is not supported")
        return lambda ch: any(t(ch) for t in tests) != negate

    # ---- matching (Pike VM) ----------------------------------------------------------------------------------
    def match(self, text: str) -> bool:
        """``re.match(pattern, text) is not None``: a match starting at position 0 (of any length)."""
        if len(text) > MAX_SUBJECT_CHARS:
            raise FormatError(f"{self.where}: {len(text)}-character name {text[:40]!r}... is over the "
                              f"{MAX_SUBJECT_CHARS}-character limit for regex matching")
        threads = self._closure({0}, text, 0)
        for pos in range(len(text) + 1):
            if any(self.program[pc][0] == "match" for pc in threads):
                return True
            if pos == len(text) or not threads:
                return False
            ch = text[pos]
            advanced = {pc + 1 for pc in threads if self.program[pc][0] == "char" and self.program[pc][1](ch)}
            threads = self._closure(advanced, text, pos + 1)
        return False

    def _closure(self, pcs: set, text: str, pos: int) -> set:
        """Every instruction reachable from ``pcs`` without consuming a character (asserts checked at pos)."""
        out, stack = set(), list(pcs)
        while stack:
            pc = stack.pop()
            if pc in out:
                continue
            out.add(pc)
            ins = self.program[pc]
            if ins[0] == "split":
                stack.extend((ins[1], ins[2]))
            elif ins[0] == "jmp":
                stack.append(ins[1])
            elif ins[0] == "assert" and self._holds(ins[1], text, pos):
                stack.append(pc + 1)
        return {pc for pc in out if self.program[pc][0] in ("char", "match")}

    def _holds(self, at, text: str, pos: int) -> bool:
        n = len(text)
        if at == C.AT_BEGINNING_STRING or (at == C.AT_BEGINNING and not self.multiline):
            return pos == 0
        if at == C.AT_BEGINNING:
            return pos == 0 or text[pos - 1] == "\n"
        if at == C.AT_END_STRING:
            return pos == n
        if at == C.AT_END:
            return pos == n or (text[pos] == "\n" and (self.multiline or pos == n - 1))
        before = pos > 0 and _is_word(text[pos - 1])
        after = pos < n and _is_word(text[pos])
        if at == C.AT_BOUNDARY:
            return before != after
        return before == after   # AT_NON_BOUNDARY (the compiler admits no other anchor)
