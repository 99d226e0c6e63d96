"""Progress of a long stage: done/total, rate and ETA on stderr, a line every few seconds.

Ray Data's own progress bars are off by default (``ray.data_progress_bars``): they redraw
many times a second, garble job logs and count blocks, not objects. A stage that knows its
total (objects to cut, partitions to write) reports through :class:`Progress` instead: one
``raycat:`` line at most every :data:`EVERY_S` seconds and one at the end, which reads the
same in a terminal and in ``ray job logs``.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

EVERY_S = 5.0  # seconds between two progress lines


def _stderr(line: str) -> None:
    print(f"raycat: {line}", file=sys.stderr, flush=True)


def _duration(seconds: float) -> str:
    """``42 s``, ``3 min 05 s``, ``2 h 07 min``: what an ETA needs, no more."""
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


class Progress:
    """Counts ``done`` of ``total`` items (``what``: "objects", "partitions") since creation.

    ``clock`` and ``write`` are replaceable so tests can drive time and read the lines.
    """

    def __init__(
        self,
        total: int,
        what: str,
        stage: str = "",
        every: float = EVERY_S,
        clock: Callable[[], float] = time.monotonic,
        write: Callable[[str], None] = _stderr,
    ):
        self.total, self.what, self.every = int(total), what, every
        self.prefix = f"{stage}: " if stage else ""
        self.done = 0
        self._clock, self._write = clock, write
        self._started = self._last = clock()
        self._finished = False

    def update(self, n: int = 1) -> None:
        """Count ``n`` more; print a line if ``every`` seconds passed, or once at the end."""
        self.done += n
        now = self._clock()
        finished = self.done >= self.total
        if (finished and not self._finished) or (not finished and now - self._last >= self.every):
            self._finished, self._last = finished, now
            self._write(self.prefix + self.status(now))

    def advance(self, n: int = 1) -> str:
        """Count ``n`` more and return the status, for a caller that prints its own line."""
        self.done += n
        return self.status()

    def status(self, now: float | None = None) -> str:
        """``120/500 objects (24%), 35/s, ETA 11 s``; ``500/500 objects in 14 s, 35/s`` at
        the end."""
        elapsed = max((self._clock() if now is None else now) - self._started, 1e-9)
        rate = self.done / elapsed
        head = f"{self.done}/{self.total} {self.what}"
        if self.done >= self.total:
            return f"{head} in {_duration(elapsed)}, {_rate(rate)}"
        share = f"{100 * self.done / self.total:.0f}%" if self.total else "-"
        eta = _duration((self.total - self.done) / rate) if rate > 0 else "unknown"
        return f"{head} ({share}), {_rate(rate)}, ETA {eta}"


def _rate(per_second: float) -> str:
    """Items per second with the digits that matter (``1.2k/s``, ``35/s``, ``0.25/s``)."""
    if per_second >= 1000:
        return f"{per_second / 1000:.1f}k/s"
    return f"{per_second:.0f}/s" if per_second >= 10 else f"{per_second:.2g}/s"
