"""Running one command and measuring it: wall time, peak RSS, exit status, wire bytes; statistics."""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .env import Relay


class BenchError(RuntimeError):
    """A command the benchmark needs failed: the message says which and shows its stderr."""


@dataclass
class Run:
    argv: list[str]
    seconds: float
    returncode: int
    maxrss_kb: int  # peak RSS of the command (its largest process), from GNU time's %M
    stdout: bytes
    stderr: bytes
    up: int | None = None  # wire bytes client -> worker (relay)
    down: int | None = None
    connections: int | None = None  # new SSH connections (handshakes)

    def check(self, what: str) -> Run:
        if self.returncode != 0:
            tail = self.stderr.decode("utf-8", "replace").strip().splitlines()[-5:]
            raise BenchError(f"{what} failed (exit {self.returncode}): {' | '.join(tail) or 'no stderr'}"
                             f"\n  command: {' '.join(self.argv)}")
        return self


GNU_TIME = "/usr/bin/time"


def run(
    argv: Sequence[str | os.PathLike],
    env: dict[str, str],
    cwd: str | os.PathLike | None = None,
    stdout_devnull: bool = False,
    timeout: float = 300,
    shell: bool = False,
) -> Run:
    """Run argv (stdin /dev/null), timed from fork to reap.

    Peak RSS comes from GNU time (`/usr/bin/time -f %M`), which forks the command from its own small
    process: the ru_maxrss that wait4 gives the bench for a direct child would include the bench's own
    RSS (Linux carries the pre-exec mm's high-water mark across exec). GNU time costs ~1 ms per run,
    on both sides alike. Without it, wait4's figure is kept (an upper bound)."""
    argv = [os.fspath(a) for a in argv]
    command = ["sh", "-c", argv[0]] if shell else argv
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, \
            tempfile.NamedTemporaryFile(prefix="pb-rss-") as rss, open(os.devnull, "wb") as null:
        wrapped = [GNU_TIME, "-f", "%M", "-o", rss.name, *command] if HAVE_TIME else command
        start = time.perf_counter()
        proc = subprocess.Popen(
            wrapped, env=env, cwd=cwd, stdin=subprocess.DEVNULL,
            stdout=null if stdout_devnull else out, stderr=err, start_new_session=True,
        )
        timed_out = threading.Event()

        def kill() -> None:
            timed_out.set()
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

        timer = threading.Timer(timeout, kill)
        timer.start()
        try:
            _pid, status, usage = os.wait4(proc.pid, 0)  # blocking: the bench itself uses no CPU
        finally:
            timer.cancel()
        seconds = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        if timed_out.is_set():
            err.seek(0)
            raise BenchError(f"timed out after {timeout}s: {' '.join(argv)}\n"
                             f"  stderr: {err.read()[-2000:].decode('utf-8', 'replace')}")
        maxrss = usage.ru_maxrss
        if HAVE_TIME:
            lines = Path(rss.name).read_text(errors="replace").strip().splitlines()
            if lines and lines[-1].strip().isdigit():
                maxrss = int(lines[-1])
        out.seek(0)
        err.seek(0)
        return Run(argv, seconds, proc.returncode, maxrss, out.read(), err.read())


HAVE_TIME = os.access(GNU_TIME, os.X_OK)


def metered(relay: Relay, fn: Callable[[], Run], settle: Callable[[], object] | None = None) -> Run:
    """Run fn(), then settle (wait for background processes / close masters), and attach the wire bytes
    and new connections the relay saw from the start of fn until everything went quiet."""
    before = relay.snapshot()
    result = fn()
    if settle:
        settle()
    relay.quiet()
    window = relay.window(before)
    result.up, result.down, result.connections = window.up, window.down, window.connections
    return result


@dataclass
class Series:
    """The samples of one side (p or baseline) of one case."""

    argv: str
    seconds: list[float] = field(default_factory=list)
    maxrss_kb: list[int] = field(default_factory=list)
    up: list[int] = field(default_factory=list)
    down: list[int] = field(default_factory=list)
    connections: list[int] = field(default_factory=list)
    extra: dict[str, list] = field(default_factory=dict)

    def add(self, r: Run) -> None:
        self.seconds.append(r.seconds)
        self.maxrss_kb.append(r.maxrss_kb)
        if r.up is not None:
            self.up.append(r.up)
            self.down.append(r.down)
            self.connections.append(r.connections)

    def to_json(self) -> dict:
        data: dict = {"command": self.argv, "samples_s": [round(s, 4) for s in self.seconds]}
        data.update(stats(self.seconds, "s"))
        data["maxrss_kb"] = self.maxrss_kb
        if self.up:
            data["wire_up_bytes"] = self.up
            data["wire_down_bytes"] = self.down
            data["ssh_connections"] = self.connections
            data["median_wire_up_bytes"] = statistics.median(self.up)
        data.update(self.extra)
        return data


def stats(values: list[float], unit: str) -> dict:
    if not values:
        return {}
    return {f"median_{unit}": round(statistics.median(values), 4), f"min_{unit}": round(min(values), 4),
            f"max_{unit}": round(max(values), 4)}


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def write_path(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
