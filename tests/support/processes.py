"""Find and end the processes a test left behind, by the HOME they were started with.

Every process the client starts in a test (p, ssh ControlMasters, tmux servers) inherits the isolated
HOME, and every process of a worker session gets the worker's HOME, so `HOME=<unique tmp dir>` in
/proc/PID/environ names exactly the processes that belong to one fixture, and nothing of the developer's.
"""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import time
from pathlib import Path


def pids_with_home(home: Path) -> list[int]:
    """Live processes (not ours) whose environment at exec had HOME=home exactly."""
    needle = b"HOME=" + os.fsencode(str(home))
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == os.getpid():
            continue
        try:
            environ = Path("/proc", name, "environ").read_bytes()
        except OSError:  # gone, or another user's process
            continue
        if needle in environ.split(b"\0") and _alive(int(name)):
            found.append(int(name))
    return found


def _alive(pid: int) -> bool:
    """True while pid exists and is not a zombie."""
    try:
        stat_line = Path("/proc", str(pid), "stat").read_text()
    except OSError:
        return False
    return stat_line.rpartition(")")[2].split()[0] != "Z"


def terminate(pids: list[int], grace: float = 2.0) -> None:
    """SIGTERM, then SIGKILL whatever is still alive after `grace` seconds."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and any(_alive(p) for p in pids):
            time.sleep(0.02)
        pids = [p for p in pids if _alive(p)]
        if not pids:
            return


def sockets_under(root: Path) -> list[Path]:
    """Unix sockets anywhere below root (tmux servers, ssh ControlMaster sockets)."""
    found = []
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            path = Path(dirpath, name)
            try:
                if stat.S_ISSOCK(path.lstat().st_mode):
                    found.append(path)
            except OSError:
                continue
    return found


def close_socket_owner(sock: Path) -> None:
    """Ask the server behind sock to exit: tmux kill-server, or ssh -O exit for a ControlMaster."""
    if "tmux" in sock.name or sock.parent.name.startswith("tmux-"):
        argv = ["tmux", "-S", str(sock), "kill-server"]
    else:  # -F /dev/null: read no config and never create the real ~/.ssh
        argv = ["ssh", "-F", "/dev/null", "-S", str(sock), "-O", "exit", "127.0.0.1"]
    try:
        subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        pass


def clean_home(home: Path) -> None:
    """End every server with a socket under home, then every process still started with HOME=home."""
    for sock in sockets_under(home):
        close_socket_owner(sock)
    terminate(pids_with_home(home))
