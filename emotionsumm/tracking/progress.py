"""Progress of training and evaluation: a tqdm bar on a terminal, plain lines anywhere else.

Under a non-interactive stderr (a SLURM log file, CI, a pipe) tqdm's carriage-return updates land as
bytes in the log on every refresh; there a line every `every_steps` updates or `every_seconds` says the same.
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

from tqdm import tqdm

EVERY_SECONDS = 30.0  # at most this long between two lines
LINES_PER_RUN = 10  # and a line every total/10 updates


class LineProgress:
    """The part of tqdm's interface the trainer uses, printed as plain lines."""

    def __init__(self, total: int, desc: str = "", initial: int = 0, every_steps: int | None = None,
                 every_seconds: float = EVERY_SECONDS, file: TextIO | None = None) -> None:
        self.total, self.desc, self.n, self.postfix = total, desc, initial, ""
        self.every_steps = every_steps or max(1, total // LINES_PER_RUN)
        self.every_seconds, self.file = every_seconds, file
        self.start = self.last_time = time.monotonic()
        self.start_n = self.last_n = initial

    def update(self, n: int = 1) -> None:
        self.n += n
        if self.n - self.last_n >= self.every_steps or time.monotonic() - self.last_time >= self.every_seconds:
            self._line()

    def set_description(self, desc: str) -> None:
        self.desc = desc

    def set_postfix(self, **values: Any) -> None:
        self.postfix = ", ".join(f"{k}={v}" for k, v in values.items())

    def close(self) -> None:
        if self.n != self.last_n:
            self._line()

    def _line(self) -> None:
        now = time.monotonic()
        rate = (self.n - self.start_n) / max(now - self.start, 1e-9)
        share = f" ({100 * self.n / self.total:.0f}%)" if self.total else ""
        extra = f", {self.postfix}" if self.postfix else ""
        print(f"{self.desc}: {self.n}/{self.total}{share}, {rate:.2f} it/s{extra}", file=self.file or sys.stderr,
              flush=True)
        self.last_n, self.last_time = self.n, now


def progress(total: int, desc: str, enabled: bool, initial: int = 0, leave: bool = True) -> tqdm | LineProgress:
    """A tqdm bar when stderr is a terminal, else a LineProgress; a silent tqdm when not `enabled`."""
    if enabled and not sys.stderr.isatty():
        return LineProgress(total, desc, initial)
    return tqdm(total=total, initial=initial, desc=desc, leave=leave, dynamic_ncols=True, disable=not enabled)
