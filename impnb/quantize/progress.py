"""A small progress bar on stderr (no dependency): ``[####......] 12/30 quantize model.layers.3.mlp``."""
from __future__ import annotations

import sys
import time


class Progress:
    def __init__(self, total: int, label: str, *, enabled: bool = True, width: int = 30, stream=None):
        self.total, self.label, self.enabled, self.width = max(int(total), 1), label, enabled, width
        self.stream = stream or sys.stderr
        self.done, self.start, self._last = 0, time.perf_counter(), 0.0

    def step(self, what: str = "") -> None:
        self.done += 1
        now = time.perf_counter()
        if self.enabled and (now - self._last > 0.1 or self.done == self.total):
            self._last = now
            fill = self.width * self.done // self.total
            bar = "#" * fill + "." * (self.width - fill)
            line = f"\r[{bar}] {self.done}/{self.total} {self.label} {what}"[:160]
            self.stream.write(line.ljust(100))
            self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self.stream.write(f"\r{self.label}: {self.done}/{self.total} done in "
                              f"{time.perf_counter() - self.start:.1f} s".ljust(100) + "\n")
            self.stream.flush()
