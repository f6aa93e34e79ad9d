"""A tiny progress bar for the CLI (the client must not need tqdm).

On a terminal it redraws one line in place; in a log (not a TTY) it prints a plain line now and
then, so that CI output stays readable.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

_WIDTH = 24
_TTY_INTERVAL = 0.1  # seconds between redraws on a terminal
_LOG_INTERVAL = 2.0  # seconds between lines in a log


class ProgressBar:
    """`update(done, total, text)` draws ``label |####....| text ETA 0:07`` on `stream`.

    Example::

        bar = ProgressBar("download")
        for done in range(0, 101, 10):
            bar.update(done, 100, f"{done}/100 MB")
        bar.close()
    """

    def __init__(self, label: str, stream: TextIO | None = None, enabled: bool = True) -> None:
        self._label = label
        self._stream = stream or sys.stderr
        self._enabled = enabled
        self._tty = self._stream.isatty()
        self._start: tuple[float, int] | None = None  # (time, done) of the first update
        self._last_draw = -float("inf")
        self._drawn = False

    def update(self, done: int, total: int, text: str) -> None:
        """Show `done` of `total` (drawn at most every so often, always when complete)."""
        now = time.monotonic()
        if self._start is None or done < self._start[1]:  # first update, or started over
            self._start = (now, done)
        interval = _TTY_INTERVAL if self._tty else _LOG_INTERVAL
        if now - self._last_draw < interval and done < total:
            return
        self._last_draw = now
        filled = round(_WIDTH * done / total) if total else 0
        bar = "#" * filled + "." * (_WIDTH - filled)
        self._draw(f"{self._label} |{bar}| {text}{self._eta(now, done, total)}")

    def message(self, text: str) -> None:
        """Show a status line such as "queued at position 2"."""
        self._draw(f"{self._label}: {text}")

    def close(self) -> None:
        """End the line on a terminal."""
        if self._tty and self._drawn:
            self._stream.write("\n")
            self._stream.flush()
        self._drawn = False

    def _eta(self, now: float, done: int, total: int) -> str:
        assert self._start is not None
        start_time, start_done = self._start
        if done >= total or done <= start_done or now <= start_time:
            return ""
        seconds = round((total - done) * (now - start_time) / (done - start_done))
        return f"  ETA {seconds // 60}:{seconds % 60:02d}"

    def _draw(self, line: str) -> None:
        if not self._enabled:
            return
        if self._tty:
            self._stream.write(f"\r{line}\033[K")
        else:
            self._stream.write(line + "\n")
        self._stream.flush()
        self._drawn = True
