"""A one-line progress display for rsync: bytes, rate and ETA on a terminal, cleared when done.

rsync is run with ``--info=progress2`` (rsync >= 3.1) and its stdout is written into a
:class:`Progress`, which is a file-like sink: rsync's ``\\r``-separated records are parsed for the bytes
sent so far, and p draws its own line (rate averaged over the whole transfer, ETA from the total p
computed itself, or rsync's own percentage and ETA when the total is unknown, as for a pull). Nothing
is drawn during the first ``delay`` seconds, so quick syncs stay silent; whoever creates a Progress
decides whether the stream is a terminal.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from typing import TextIO

# "     10,715,136  26%    9.76MB/s    0:00:02  (xfr#1, to-chk=1/3)"
_RECORD = re.compile(r"^\s*([\d,.]+)\s+(\d+)%\s+\S+/s\s+(\d+:\d\d:\d\d)")


class Progress:
    """Sink for rsync's progress2 output that draws ``label  done / total  N%  rate  ETA`` on ``stream``."""

    def __init__(
        self,
        total: int | None,
        stream: TextIO | None = None,
        *,
        label: str = "sync",
        delay: float = 1.0,
        interval: float = 0.2,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.total = total or None
        self.stream = stream or sys.stderr
        self.label = label
        self.delay, self.interval, self.clock = delay, interval, clock
        self.started = clock()
        self.drawn_at: float | None = None
        self._pending = ""

    # -- the file-like side (what rsync prints) --------------------------------------------------

    def write(self, text: str) -> int:
        records = re.split(r"[\r\n]", self._pending + text)
        fed, self._pending = self._pending, records.pop()
        if records and records[0] == fed:
            records.pop(0)  # already fed while it was the last record
        for record in records + [self._pending]:  # rsync writes whole records: try the last one too
            self.feed(record)
        return len(text)

    def flush(self) -> None:
        pass

    def feed(self, record: str) -> None:
        """One rsync progress2 record; anything else is ignored."""
        match = _RECORD.match(record)
        if match:
            done = int(match.group(1).replace(",", "").replace(".", ""))
            self.update(done, int(match.group(2)), match.group(3))

    # -- the drawing side ------------------------------------------------------------------------

    def update(self, done: int, percent: int | None = None, rsync_eta: str | None = None) -> None:
        now = self.clock()
        if now - self.started < self.delay:
            return
        if self.drawn_at is not None and now - self.drawn_at < self.interval:
            return
        self.drawn_at = now
        self._draw(self.line(done, now - self.started, percent, rsync_eta))

    def line(
        self, done: int, elapsed: float, percent: int | None = None, rsync_eta: str | None = None
    ) -> str:
        rate = done / elapsed if elapsed > 0 else 0.0
        if self.total:
            done = min(done, self.total)
            percent = int(100 * done / self.total)
            eta = clock_text((self.total - done) / rate) if rate > 0 else "-:--"
            amount = f"{human(done)} / {human(self.total)}"
        else:
            eta = rsync_eta or "-:--"
            amount = human(done)
        share = f"  {percent}%" if percent is not None else ""
        return f"p: {self.label}  {amount}{share}  {human(rate)}/s  ETA {eta}"

    def _draw(self, text: str) -> None:
        width = shutil.get_terminal_size((80, 24)).columns
        self.stream.write("\r\033[K" + text[: max(width - 1, 10)])
        self.stream.flush()

    def clear(self) -> None:
        """Remove the line (if one was drawn): the terminal looks as if nothing had been there."""
        if self.drawn_at is not None:
            self.stream.write("\r\033[K")
            self.stream.flush()
            self.drawn_at = None

    def restart(self) -> None:
        """Before a retry: clear the line and count time from now."""
        self.clear()
        self.started = self.clock()


def human(nbytes: float) -> str:
    """Decimal units, 3 significant digits: 999 B, 1.5 kB, 12.3 MB, 456 MB, 1.20 GB."""
    value, unit = float(nbytes), "B"
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if value < 999.5 or unit == "TB":
            break
        value /= 1000
    return f"{int(value)} B" if unit == "B" else f"{value:.3g} {unit}"


def clock_text(seconds: float) -> str:
    """M:SS, or H:MM:SS from an hour on."""
    seconds = int(seconds + 0.5)
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


_PROGRESS2: bool | None = None


def rsync_has_progress2() -> bool:
    """Whether the local rsync knows ``--info=progress2`` (3.1.0, 2013); asked once per process."""
    global _PROGRESS2
    if _PROGRESS2 is None:
        try:
            out = subprocess.run(["rsync", "--version"], capture_output=True, text=True, check=False).stdout
        except OSError:
            out = ""
        match = re.search(r"version v?(\d+)\.(\d+)", out)
        _PROGRESS2 = bool(match) and (int(match.group(1)), int(match.group(2))) >= (3, 1)
    return _PROGRESS2
