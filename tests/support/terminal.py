"""A real terminal for tests: a private tmux server whose panes play the user's terminal emulator.

Each Terminal is one detached tmux session running one command line through a small sh wrapper that
unsets TMUX/TMUX_PANE (the command must not think it runs inside tmux), writes the command's exit
status to a file when it ends, then keeps the pane open so its last screen can still be read.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from helpers import read_text_when_present, retry_until

# $1: the command line, run by /bin/sh -c; $2: the status file. SIGINT is trapped (not ignored), so
# the wrapper survives a ^C sent to the command while the command itself gets the default action.
WRAPPER = r"""
unset TMUX TMUX_PANE
trap : INT QUIT
/bin/sh -c "$1"
printf '%s\n' "$?" > "$2.tmp" && mv "$2.tmp" "$2"
exec sleep 2147483647
"""


def tmux_version() -> tuple[int, int]:
    """(major, minor) of the tmux on PATH: 'tmux 3.3a' → (3, 3), 'tmux next-3.4' → (3, 4)."""
    out = subprocess.run(["tmux", "-V"], capture_output=True, text=True, check=True).stdout
    match = re.search(r"(\d+)\.(\d+)", out)
    if not match:
        raise RuntimeError(f"cannot read the tmux version from {out!r}")
    return int(match.group(1)), int(match.group(2))


class TmuxServer:
    """A tmux server on its own socket, started with no configuration file (-f /dev/null)."""

    def __init__(self, socket: Path, env: Mapping[str, str]) -> None:
        self.socket = socket
        self.env = dict(env)
        self._count = 0

    def cmd(self, *args: str, check: bool = True) -> str:
        """Run one tmux command against this server and return its stdout."""
        proc = subprocess.run(
            ["tmux", "-S", str(self.socket), "-f", "/dev/null", *args],
            env=self.env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=20,
        )
        if check and proc.returncode != 0:
            raise RuntimeError(f"tmux {shlex.join(args)} failed: {proc.stderr.strip()}")
        return proc.stdout

    def open(
        self,
        command: str | Sequence[str],
        cols: int = 120,
        rows: int = 40,
        cwd: str | os.PathLike[str] | None = None,
        env: Mapping[str, str] | None = None,
    ) -> Terminal:
        """Start `command` (a sh command line, or an argv list) in a new cols×rows terminal."""
        line = command if isinstance(command, str) else shlex.join(command)
        name = f"t{self._count}"
        self._count += 1
        status = self.socket.parent / f"{name}.status"
        assignments = [f"{key}={value}" for key, value in (env or {}).items()]
        argv = ["env", *assignments, "/bin/sh", "-c", WRAPPER, "wrapper", line, str(status)]
        first = [] if self._count > 1 else ["start-server", ";", "set", "-g", "status", "off", ";",
                                            "set", "-g", "history-limit", "50000", ";"]
        pane = self.cmd(
            *first, "new-session", "-d", "-P", "-F", "#{pane_id}", "-s", name,
            "-x", str(cols), "-y", str(rows), "-c", os.fspath(cwd or os.getcwd()), *argv,
        ).strip()
        return Terminal(self, pane, status)

    def kill(self) -> None:
        self.cmd("kill-server", check=False)


class Terminal:
    """One pane: type into it, read its screen, wait for text, resize it, read the exit status."""

    def __init__(self, server: TmuxServer, pane: str, status_file: Path) -> None:
        self.server = server
        self.pane = pane
        self.status_file = status_file

    def send_keys(self, *keys: str, literal: bool = False) -> None:
        """tmux send-keys: key names ("Enter", "C-c", "q") or, with literal=True, text as typed."""
        self.server.cmd("send-keys", "-t", self.pane, *(["-l"] if literal else []), *keys)

    def capture(self, history: bool = False) -> str:
        """The screen as text (capture-pane -p -J: wrapped lines joined), trailing blank lines
        removed; with history=True the scrollback too."""
        args = ["capture-pane", "-p", "-J", "-t", self.pane, *(["-S", "-"] if history else [])]
        return self.server.cmd(*args).rstrip("\n")

    def wait_for(self, pattern: str | re.Pattern[str], timeout: float = 10, history: bool = False):
        """Wait until the screen contains the text (or matches the regex); returns the screen text,
        or the re.Match for a regex. Fails with the last screen."""

        def seen():
            screen = self.capture(history)
            if isinstance(pattern, re.Pattern):
                return pattern.search(screen)
            return screen if pattern in screen else None

        return retry_until(seen, timeout, message=lambda: f"waited for {pattern!r}; screen:\n"
                           + self.capture(history))

    def exit_status(self, timeout: float = 10) -> int:
        """The command's exit status, once it has ended (waits up to timeout)."""
        text = retry_until(
            lambda: (read_text_when_present(self.status_file) or "").strip(), timeout,
            message=lambda: f"command still running; screen:\n{self.capture()}",
        )
        return int(text)

    def size(self) -> tuple[int, int]:
        out = self.server.cmd("display-message", "-p", "-t", self.pane, "#{pane_width} #{pane_height}")
        cols, rows = out.split()
        return int(cols), int(rows)

    def resize(self, cols: int, rows: int) -> None:
        """Resize the terminal (the program gets SIGWINCH) and wait until tmux reports the size."""
        if tmux_version() >= (2, 9):
            self.server.cmd("resize-window", "-t", self.pane, "-x", str(cols), "-y", str(rows))
        else:
            self.server.cmd("refresh-client", "-C", f"{cols},{rows}")
        retry_until(lambda: self.size() == (cols, rows), 5)
