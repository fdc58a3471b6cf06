"""Workers unlike the test box: a login shell of choice, a PATH of choice, stand-in programs, noisy
start-up files, a home directory with spaces.

`WorkerServer` is an `SshServer` (tests/support/sshd.py) with two additions:

* ``PermitUserEnvironment yes``: sshd reads ``~/.ssh/environment`` of the worker user, so a test sets
  the PATH every session starts with, whatever the login shell (dash reads no start-up file at all for
  ``dash -c``). `set_path()` writes it; `reset_worker()` removes it with the rest of the home.
* the worker's home directory may be any path (``home=``), spaces included.

`shell_path()` finds a login shell; one that is not installed skips the test, or fails it when the
environment has P_TESTS_REQUIRE_SHELLS=1 (CI, where all of SHELLS are installed: a silent skip there
would hide a whole column of the matrix).

`tool_dir()` builds a directory of symlinks to everything in /usr/bin and /usr/sbin except some names:
as the worker's whole PATH it makes those programs (python3, tmux, rsync) really absent, as on a
minimal server, without root and without touching the system.
"""

from __future__ import annotations

import fnmatch
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from .sshd import SshServer

SYSTEM_BIN_DIRS = ("/usr/local/bin", "/usr/bin", "/bin", "/usr/sbin", "/sbin")
STANDARD_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
SHELLS = ("bash", "dash", "zsh", "fish")

# The start-up file each shell reads for every command sshd hands it (`SHELL -c 'sh -s'`), noisy or not;
# dash reads none (its ~/.profile is read by login shells only, i.e. by the job).
RC_FILES = {"bash": ".bashrc", "dash": ".profile", "zsh": ".zshenv", "fish": ".config/fish/config.fish"}
# The file each shell reads as a login shell (the job's `SHELL -l`), and how it prepends to PATH there.
PROFILE_FILES = {
    "bash": (".profile", 'PATH="$HOME/{dir}:$PATH"; export PATH\n'),
    "dash": (".profile", 'PATH="$HOME/{dir}:$PATH"; export PATH\n'),
    "zsh": (".zprofile", 'export PATH="$HOME/{dir}:$PATH"\n'),
    "fish": (".config/fish/config.fish", "if status is-login\n    set -gx PATH $HOME/{dir} $PATH\nend\n"),
}


REQUIRE_SHELLS = "P_TESTS_REQUIRE_SHELLS"  # =1 (CI): a login shell that is not installed fails the test


def shell_path(name: str) -> str | None:
    """Absolute path of an installed shell, None if it is not installed (the caller skips the test),
    or, with P_TESTS_REQUIRE_SHELLS=1, a test failure that says what to install."""
    for directory in ("/usr/bin", "/bin"):
        candidate = Path(directory, name)
        if candidate.exists():
            return str(candidate)
    if os.environ.get(REQUIRE_SHELLS) == "1":
        pytest.fail(f"login shell {name} is not installed, and {REQUIRE_SHELLS}=1 requires every one of "
                    f"{', '.join(SHELLS)} (apt-get install {name})", pytrace=False)
    return None


class WorkerServer(SshServer):
    """An SshServer whose user's PATH and home directory the test chooses."""

    def __init__(self, root: Path, home: str = "worker-home", login_shell: str = "/bin/bash") -> None:
        super().__init__(root, login_shell=login_shell)
        if home != "worker-home":
            (root / "worker-home").rmdir()
            self.worker_home = root / home
            self.worker_home.mkdir(mode=0o755, parents=True)

    def _config_text(self) -> str:
        lines = [ln for ln in super()._config_text().splitlines() if not ln.startswith("SetEnv HOME=")]
        lines += ["PermitUserEnvironment yes", f'SetEnv "HOME={self.worker_home}"', ""]
        return "\n".join(lines)

    def set_path(self, *entries: str | os.PathLike[str]) -> None:
        """Every new session of the worker user starts with PATH=entries (sshd's ~/.ssh/environment)."""
        ssh_dir = self.worker_home / ".ssh"
        ssh_dir.mkdir(mode=0o700, exist_ok=True)
        (ssh_dir / "environment").write_text("PATH=" + ":".join(map(os.fspath, entries)) + "\n")

    def write(self, relative: str, text: str, mode: int = 0o644) -> Path:
        """A file under the worker's home (parents created)."""
        path = self.worker_home / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        path.chmod(mode)
        return path

    def stand_in(self, name: str, body: str, directory: str = "fakebin") -> Path:
        """An executable sh script ~/<directory>/<name> (put the directory on PATH with set_path)."""
        return self.write(f"{directory}/{name}", "#!/bin/sh\n" + body, mode=0o755)


def tool_dir(root: Path, without: tuple[str, ...]) -> Path:
    """A directory of symlinks to the system's programs, minus those matching the `without` patterns.
    Built once per root and set of patterns."""
    target = root / ("tools-without-" + "-".join(sorted(p.replace("*", "") for p in without)))
    if target.exists():
        return target
    staging = target.with_name(target.name + f".{os.getpid()}")
    staging.mkdir(parents=True)
    for directory in SYSTEM_BIN_DIRS:
        if not os.path.isdir(directory):
            continue
        for name in sorted(os.listdir(directory)):
            if any(fnmatch.fnmatch(name, pattern) for pattern in without):
                continue
            link = staging / name
            source = os.path.join(directory, name)
            if not link.exists() and os.access(source, os.X_OK) and not os.path.isdir(source):
                link.symlink_to(source)
    staging.rename(target)
    return target


@contextmanager
def running_server(cls: type[SshServer] = WorkerServer, **kwargs) -> Iterator:
    """A started sshd of ``cls`` in a fresh short dir under /tmp (socket paths must stay short),
    closed and removed afterwards (kept with P_TESTS_KEEP_TMP=1). Yields the server."""
    root = Path(tempfile.mkdtemp(prefix="p", dir="/tmp"))
    srv = cls(root, **kwargs)
    try:
        srv.start()
        yield srv
    finally:
        srv.close()
        if os.environ.get("P_TESTS_KEEP_TMP") != "1":
            shutil.rmtree(root, ignore_errors=True)
