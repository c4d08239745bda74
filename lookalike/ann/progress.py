"""Progress of a long build step: a logged line now and then, with the time left estimated from the steps done.

The library only logs (``lookalike.ann.progress``, INFO); the CLI shows these lines on stderr.
The estimate is the time so far over the share done, so it follows the machine's real pace
rather than a constant.
"""

from __future__ import annotations

import logging
import time

logger = logging.getLogger(__name__)


class Progress:
    """``total`` steps of one task, logged at most every ``EVERY_S`` seconds, and once at the end
    when any line was logged (a step that ends within ``EVERY_S`` stays silent)."""

    EVERY_S = 5.0

    def __init__(self, label: str, total: int, unit: str):
        self.label, self.total, self.unit = label, max(int(total), 1), unit
        self.done = 0
        self.started = self._last = time.monotonic()
        self.lines = 0

    def step(self, n: int = 1) -> None:
        self.done = min(self.done + n, self.total)
        now = time.monotonic()
        if now - self._last >= self.EVERY_S and self.done < self.total:
            self._log(now)

    def finish(self) -> None:
        if self.lines:
            self.done = self.total
            self._log(time.monotonic())

    def line(self, now: float | None = None) -> str:
        """What the next logged line says: done of total, time so far, and the time left at this pace."""
        now = time.monotonic() if now is None else now
        elapsed = now - self.started
        text = f"{self.label}: {self.done:,}/{self.total:,} {self.unit} in {elapsed:.0f} s"
        if 0 < self.done < self.total:
            text += f", about {elapsed * (self.total - self.done) / self.done:.0f} s left"
        return text

    def _log(self, now: float) -> None:
        self._last = now
        self.lines += 1
        logger.info(self.line(now))
