"""A cheap progress line on stderr: count, items/s and ETA. Silent with quiet=True."""

from __future__ import annotations

import sys
import time


class Progress:
    def __init__(self, total: int, desc: str, unit: str = "photos", quiet: bool = False, every: float | None = None):
        self.tty = sys.stderr.isatty()
        # on a terminal the line redraws in place; in a log file, one line every 30 s
        every = every if every is not None else (0.5 if self.tty else 30.0)
        self.total, self.desc, self.unit, self.quiet, self.every = total, desc, unit, quiet, every
        self.done = 0
        self.start = time.perf_counter()
        self._last = 0.0

    def update(self, n: int = 1) -> None:
        self.done += n
        now = time.perf_counter()
        if not self.quiet and (now - self._last >= self.every or self.done >= self.total):
            self._last = now
            self._print(now)

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    @property
    def rate(self) -> float:
        return self.done / self.elapsed if self.elapsed > 0 else 0.0

    def _print(self, now: float) -> None:
        rate = self.rate
        eta = (self.total - self.done) / rate if rate > 0 else float("nan")
        pct = 100.0 * self.done / self.total if self.total else 100.0
        sys.stderr.write(
            ("\r" if self.tty else "") + f"{self.desc}: {self.done:,}/{self.total:,} {self.unit} ({pct:5.1f}%) "
            f"{rate:,.0f} {self.unit}/s, ETA {_fmt(eta)}" + ("   " if self.tty else "\n")
        )
        sys.stderr.flush()

    def close(self) -> None:
        if not self.quiet:
            if self.done < self.total or self._last == 0.0:  # the final count is not on screen yet
                self._print(time.perf_counter())
            if self.tty:
                sys.stderr.write("\n")
            sys.stderr.flush()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _fmt(seconds: float) -> str:
    if seconds != seconds:  # NaN
        return "--:--"
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"
