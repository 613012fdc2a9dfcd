"""Typed field rules of the metadata validation layer (impnb/config_validate.py): each checks one value's type and
range and raises ``impnb.ConfigError`` naming the file, the field, the value and the rule."""
from __future__ import annotations

import math

import numpy as np

from .errors import ConfigError


class Rule:
    """A field's type and range; ``check`` returns the value normalized (int for an integral float) or raises."""
    text = ""

    def check(self, value, source: str, name: str):
        raise NotImplementedError

    def fail(self, value, source, name):
        return ConfigError(source, name, value, f"must be {self.text}")


class Int(Rule):
    def __init__(self, lo: int, hi: int):
        self.lo, self.hi, self.text = lo, hi, f"an integer in [{lo}, {hi}]"

    def check(self, value, source, name):
        if isinstance(value, float) and math.isfinite(value) and value.is_integer():
            value = int(value)   # 2048.0 in a config.json means 2048
        if not isinstance(value, (int, np.integer)) or isinstance(value, (bool, np.bool_)):
            raise self.fail(value, source, name)
        if not self.lo <= value <= self.hi:
            raise self.fail(value, source, name)
        return int(value)


class Num(Rule):
    """A finite real number in (lo, hi] / [lo, hi] (``open_lo``)."""

    def __init__(self, lo: float, hi: float = math.inf, open_lo: bool = True):
        self.lo, self.hi, self.open_lo = lo, hi, open_lo
        self.text = f"a finite number {'>' if open_lo else '>='} {lo}" + (f" and <= {hi}" if hi < math.inf else "")

    def check(self, value, source, name):
        if not isinstance(value, (int, float, np.integer, np.floating)) or isinstance(value, (bool, np.bool_)):
            raise self.fail(value, source, name)
        value = float(value)
        above = value > self.lo if self.open_lo else value >= self.lo
        if not (math.isfinite(value) and above and value <= self.hi):
            raise self.fail(value, source, name)
        return value


class Bool(Rule):
    text = "true or false"

    def check(self, value, source, name):
        if isinstance(value, (bool, np.bool_)) or (isinstance(value, int) and value in (0, 1)):
            return bool(value)
        raise self.fail(value, source, name)


class Str(Rule):
    def __init__(self, max_len: int = 256):
        self.max_len, self.text = max_len, f"a string of at most {max_len} characters"

    def check(self, value, source, name):
        if not isinstance(value, str) or len(value) > self.max_len:
            raise self.fail(value, source, name)
        return value


class Nullable(Rule):
    def __init__(self, rule: Rule):
        self.rule, self.text = rule, f"null or {rule.text}"

    def check(self, value, source, name):
        return None if value is None else self.rule.check(value, source, name)


class ListOf(Rule):
    def __init__(self, item: Rule, max_len: int):
        self.item, self.max_len = item, max_len
        self.text = f"a list of at most {max_len} items, each {item.text}"

    def check(self, value, source, name):
        if not isinstance(value, (list, tuple)) or len(value) > self.max_len:
            raise self.fail(value, source, name)
        return [self.item.check(v, source, f"{name}[{i}]") for i, v in enumerate(value)]


class IntOrList(Rule):
    """A scalar, or a per-layer list (GGUF head counts, HF eos_token_id)."""

    def __init__(self, item: Rule, max_len: int):
        self.item, self.list = item, ListOf(item, max_len)
        self.text = f"{item.text}, or a list of those"

    def check(self, value, source, name):
        if isinstance(value, (list, tuple)):
            return self.list.check(value, source, name)
        return self.item.check(value, source, name)
