"""Progress that reads well both in a terminal and in a log file.

In a terminal this is a tqdm bar. When stdout is not a terminal (Metaflow task logs, CI, `tee`),
a redrawn bar arrives as one long line at the end (a 30 KB line after 1.5 min of silence was
seen under Metaflow); there it prints one plain line at the start, then at most one every
`every_s` seconds, and one at the end: count, percent, rate, time left and the last postfix.
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO


class LineProgress:
    """The tqdm calls the pipeline uses (update, set_postfix, close) as plain log lines."""

    def __init__(self, total: int, initial: int = 0, desc: str = "", unit: str = "it",
                 every_s: float = 10.0, stream: TextIO | None = None) -> None:
        self.total, self.n, self.desc, self.unit = total, initial, desc, unit
        self.every_s = every_s
        self.stream = stream or sys.stdout
        self.postfix = ""
        self._start_n, self._start = initial, time.perf_counter()
        self._last = -float("inf")
        self._closed = False
        self._emit()

    def _emit(self) -> None:
        elapsed = time.perf_counter() - self._start
        done = self.n - self._start_n
        rate = done / elapsed if elapsed > 0 and done else 0.0
        pct = f" ({100 * self.n / self.total:.0f}%)" if self.total else ""
        left = f", {(self.total - self.n) / rate:.0f} s left" if rate and self.total else ""
        speed = f", {rate:.2f} {self.unit}/s" if rate else ""
        post = f" | {self.postfix}" if self.postfix else ""
        print(f"{self.desc}: {self.n}/{self.total} {self.unit}{pct}{speed}{left}{post}",
              file=self.stream, flush=True)
        self._last = time.perf_counter()

    def update(self, n: int = 1) -> None:
        self.n += n
        if self.n >= self.total or time.perf_counter() - self._last >= self.every_s:
            self._emit()

    def set_postfix(self, **values: Any) -> None:
        self.postfix = ", ".join(f"{k}={v}" for k, v in values.items())

    def close(self) -> None:
        if not self._closed and self.n < self.total:  # stopped early: say where
            self._emit()
        self._closed = True


def progress(total: int, initial: int = 0, desc: str = "", unit: str = "it",
             enabled: bool = True, every_s: float = 10.0) -> Any:
    """A tqdm bar on a terminal, :class:`LineProgress` otherwise; a silent one if disabled."""
    from tqdm import tqdm

    if not enabled:
        return tqdm(total=total, initial=initial, disable=True)
    if sys.stdout.isatty():
        return tqdm(total=total, initial=initial, desc=desc, unit=unit, dynamic_ncols=True)
    return LineProgress(total, initial, desc, unit, every_s)
