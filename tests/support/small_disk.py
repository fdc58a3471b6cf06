"""Run a program with a small tmpfs mounted over one directory, visible only to it and its children.

`python -m support.small_disk SIZE DIR -- PROGRAM ARGS…` (or `wrapper(SIZE, DIR)` as an argv prefix):
a new mount namespace (and, when not root, a user namespace mapping only the caller's uid and gid, so
that the program still runs as the caller), mount propagation made private so that nothing reaches the
host's mounts, a tmpfs of SIZE on DIR, then exec PROGRAM. The tests start an sshd this way to give a
worker a disk that fills up; the mount ends with the last process inside it.
"""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
from pathlib import Path

CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
MS_REC = 0x4000
MS_PRIVATE = 0x40000


def wrapper(size: str, directory: Path) -> list[str]:
    """The argv prefix that runs a program with a SIZE tmpfs on directory."""
    return [sys.executable, __file__, size, str(directory), "--"]


def unavailable() -> str | None:
    """Why small disks cannot be made here (no namespaces for this user), or None if they can."""
    probe = Path(f"/tmp/p-small-disk-probe-{os.getpid()}")
    probe.mkdir(exist_ok=True)
    try:
        done = subprocess.run([*wrapper("64k", probe), "true"], capture_output=True, text=True)
    finally:
        probe.rmdir()
    return None if done.returncode == 0 else done.stderr.strip() or f"exit {done.returncode}"


def _check(rc: int, what: str) -> None:
    if rc != 0:
        err = ctypes.get_errno()
        sys.exit(f"small_disk: {what} failed: {os.strerror(err)}")


def main(argv: list[str]) -> None:
    if len(argv) < 4 or argv[2] != "--":
        sys.exit("usage: small_disk.py SIZE DIR -- PROGRAM [ARGS…]")
    size, directory, program = argv[0], argv[1], argv[3:]
    libc = ctypes.CDLL(None, use_errno=True)
    uid, gid = os.getuid(), os.getgid()
    if uid == 0:
        # Root keeps its real identity (sshd's privilege separation needs other uids): mounts only.
        _check(libc.unshare(CLONE_NEWNS), "unshare(CLONE_NEWNS)")
    else:
        _check(libc.unshare(CLONE_NEWNS | CLONE_NEWUSER), "unshare(CLONE_NEWUSER|CLONE_NEWNS)")
        Path("/proc/self/setgroups").write_text("deny")
        Path("/proc/self/uid_map").write_text(f"{uid} {uid} 1")
        Path("/proc/self/gid_map").write_text(f"{gid} {gid} 1")
    _check(libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None), "making mounts private")
    options = f"size={size},mode=0755,uid={uid},gid={gid}".encode()
    _check(libc.mount(b"tmpfs", os.fsencode(directory), b"tmpfs", 0, options), f"mount tmpfs on {directory}")
    os.execvp(program[0], program)


if __name__ == "__main__":
    main(sys.argv[1:])
