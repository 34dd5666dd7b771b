"""Progress of a long step as log lines, never a bar: the library writes nothing to a
terminal itself. An application that sets up logging (the scripts, through Hydra: stderr
and the run's log file) shows the lines; a program that uses the Python API and has not
configured logging sees nothing."""

from __future__ import annotations

import logging
import time


class Progress:
    """One INFO line on ``log`` every ``every`` seconds once the step has run that long, with
    the count done, the total (where known) and the time; short steps say nothing."""

    every = 5.0  # seconds

    def __init__(self, what: str, *, total: int | None, unit: str, log: logging.Logger) -> None:
        self.what, self.total, self.unit, self.log = what, total, unit, log
        self.done, self.start = 0, time.monotonic()
        self.last = self.start

    def advance(self, n: int, *, done: int | None = None) -> None:
        self.done = self.done + n if done is None else done
        now = time.monotonic()
        if now - self.last < self.every:
            return
        self.last = now
        if not self.total:  # an iterator's length is not known: the count alone
            self.log.info("%s: %s %s (%.0f s)", self.what, f"{self.done:,}", self.unit, now - self.start)
        else:
            self.log.info(
                "%s: %s/%s %s (%.0f%%, %.0f s)",
                self.what,
                f"{self.done:,}",
                f"{self.total:,}",
                self.unit,
                100 * self.done / self.total,
                now - self.start,
            )
