"""Progress that suits where it is shown: a tqdm bar on a terminal, a plain
log line now and then anywhere else (a file, a pipe, a CI log), so logs hold
no redraws or escape codes.

`progress(...)` takes tqdm's arguments and returns a tqdm bar when stderr is
a terminal; otherwise a `LogProgress` with the part of tqdm's interface the
project uses (iteration, `update`, `set_postfix`, `n`, `total`, `close`,
`with`). It logs (logger `torchcaffe.progress`, level info) a line each time
another tenth of the total is done, at least every `every_s` seconds while
it runs, and once at the end:

    synthetic scenes: 26/52 img (50%), 12.3 img/s, 2.1 s
"""
from __future__ import annotations

import logging
import sys
import time
from typing import Iterable, Iterator

from tqdm import tqdm

log = logging.getLogger(__name__)

EVERY_S = 30.0


def on_terminal(stream=None) -> bool:
    stream = sys.stderr if stream is None else stream
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def progress(iterable: Iterable | None = None, *, every_s: float = EVERY_S, **options):
    """A tqdm bar on a terminal, else a `LogProgress` (same arguments)."""
    if on_terminal(options.get("file")):
        return tqdm(iterable, **options)
    return LogProgress(iterable, every_s=every_s, **options)


class LogProgress:
    """tqdm's interface, reporting as occasional log lines."""

    def __init__(self, iterable: Iterable | None = None, *, desc: str | None = None,
                 total: float | None = None, initial: float = 0, unit: str = "it",
                 unit_scale: bool = False, unit_divisor: int = 1000, disable: bool = False,
                 every_s: float = EVERY_S, **ignored):
        # ignored: tqdm's drawing options (leave, dynamic_ncols, file, ...)
        self.iterable = iterable
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)
        self.total = total
        self.n = initial
        self.desc = desc or ""
        self.unit = unit
        self.unit_scale = unit_scale
        self.unit_divisor = unit_divisor
        self.disable = disable
        self.every_s = every_s
        self._postfix = ""
        self._start = self._last_time = time.monotonic()
        self._start_n = self._last_n = initial
        self._next_tenth = self._tenth_after(initial)
        self._closed = False

    def _tenth_after(self, n: float) -> int:
        if not self.total:
            return 11
        return int(10 * n / self.total) + 1

    def __iter__(self) -> Iterator:
        if self.iterable is None:
            raise TypeError("LogProgress: nothing to iterate (give an iterable)")
        try:
            for item in self.iterable:
                yield item
                self.update(1)
        finally:
            self.close()

    def __enter__(self) -> "LogProgress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __len__(self) -> int:
        return int(self.total or 0)

    def update(self, n: float = 1) -> None:
        self.n += n
        if self.disable:
            return
        now = time.monotonic()
        tenth_done = self.total and self.n * 10 >= self._next_tenth * self.total
        if tenth_done or now - self._last_time >= self.every_s:
            self._report(now)

    def set_postfix(self, ordered_dict=None, refresh: bool = True, **values) -> None:
        values = {**(ordered_dict or {}), **values}
        self._postfix = ", ".join(f"{key}={value}" for key, value in values.items())

    def set_description(self, desc: str | None = None, refresh: bool = True) -> None:
        self.desc = desc or ""

    def refresh(self) -> None:
        pass

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if not self.disable and self.n != self._last_n:
            self._report(time.monotonic())

    def _amount(self, n: float, digits: int = 12) -> str:
        if self.unit_scale:
            return tqdm.format_sizeof(n, divisor=self.unit_divisor)
        return f"{n:.{digits}g}"

    def _report(self, now: float) -> None:
        elapsed = now - self._start
        done = self._amount(self.n)
        if self.total:
            done += f"/{self._amount(self.total)} {self.unit} ({100 * self.n / self.total:.0f}%)"
        else:
            done += f" {self.unit}"
        rate = (self.n - self._start_n) / elapsed if elapsed > 0 else 0.0
        parts = [done, f"{self._amount(rate, 3)} {self.unit}/s", f"{elapsed:.1f} s"]
        if self._postfix:
            parts.append(self._postfix)
        log.info("%s%s", f"{self.desc}: " if self.desc else "", ", ".join(parts))
        self._last_time, self._last_n = now, self.n
        self._next_tenth = self._tenth_after(self.n)
