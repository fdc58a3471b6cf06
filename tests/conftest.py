"""Fixtures shared by all tests: an isolated HOME, a real sshd on loopback, a client ssh config, a
real terminal (tmux) and a runner for the `p` console script.

Hard rules they enforce: nothing touches the real ~/.ssh, ~/.config, ~/.local or ~/.p (checked at the
end of the session by `_real_home_untouched`), and nothing is contacted outside 127.0.0.1.
Set P_TESTS_KEEP_TMP=1 to keep the temporary homes and the sshd directory for a post-mortem.
"""

from __future__ import annotations

import os
import pwd
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

TESTS_DIR = str(Path(__file__).parent)
if TESTS_DIR not in sys.path:  # `from helpers import …` works whatever pytest's import mode
    sys.path.insert(0, TESTS_DIR)

from helpers import run_p, scripts_dir  # noqa: E402
from support.processes import clean_home  # noqa: E402
from support.sshd import SshServer  # noqa: E402
from support.terminal import Terminal, TmuxServer  # noqa: E402

KEEP_TMP = os.environ.get("P_TESTS_KEEP_TMP") == "1"


def short_tmp_dir() -> Path:
    """A fresh private dir directly under /tmp with a short name: unix socket paths (tmux, ssh
    ControlPath) must stay under 108 bytes, so pytest's long tmp_path is no good for them."""
    return Path(tempfile.mkdtemp(prefix="p", dir="/tmp"))


def remove_tmp_dir(path: Path) -> None:
    if not KEEP_TMP:
        shutil.rmtree(path, ignore_errors=True)


# -- the real home must stay untouched -------------------------------------------------------------

def _guarded_paths() -> list[Path]:
    """p's own places and ~/.ssh in the real home(s) and the caller's XDG dirs, as at session start."""
    homes = set()
    try:
        homes.add(Path(pwd.getpwuid(os.getuid()).pw_dir))
    except KeyError:  # a uid without a passwd entry
        pass
    if os.environ.get("HOME"):
        homes.add(Path(os.environ["HOME"]))
    paths = set()
    for home in homes:
        paths |= {home / ".ssh", home / ".p", home / ".config/p", home / ".local/share/p",
                  home / ".local/state/p", home / ".cache/p"}
    for var in ("XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_STATE_HOME", "XDG_CACHE_HOME"):
        if os.environ.get(var):
            paths.add(Path(os.environ[var]) / "p")
    return sorted(paths)


def _snapshot(path: Path) -> dict[str, tuple[int, int]] | None:
    """{relative path: (mtime_ns, size)} of path and everything below it, None if it does not exist."""
    if not os.path.lexists(path):
        return None
    found = {}
    for entry in [path, *path.rglob("*")] if path.is_dir() else [path]:
        try:
            st = entry.lstat()
        except OSError:
            continue
        found[str(entry.relative_to(path))] = (st.st_mtime_ns, st.st_size)
    return found


@pytest.fixture(scope="session", autouse=True)
def _real_home_untouched() -> Iterator[None]:
    """Fail the session if any test created or changed ~/.ssh, ~/.p or p's XDG dirs of the real user."""
    before = {path: _snapshot(path) for path in _guarded_paths()}
    yield
    changed = [str(path) for path, snap in before.items() if _snapshot(path) != snap]
    if changed:
        pytest.fail(f"tests touched the real home: {', '.join(changed)}", pytrace=False)


# -- client side -----------------------------------------------------------------------------------

@pytest.fixture(autouse=True)
def isolated_home(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """HOME and the XDG base dirs in a fresh short dir under /tmp; TMUX, TMUX_PANE, XDG_RUNTIME_DIR
    and the ssh agent unset; the console scripts' bin/ first on PATH. Yields HOME.

    At teardown every tmux server and ssh ControlMaster with a socket under HOME is told to exit and
    every process still running with this HOME is ended, then the dir is removed.
    """
    home = short_tmp_dir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(home / ".local/share"))
    monkeypatch.setenv("XDG_STATE_HOME", str(home / ".local/state"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(home / ".cache"))
    monkeypatch.setenv("TMUX_TMPDIR", str(home))  # a bare `tmux` must not reach the user's server
    # glibc's resolver sends no DNS query at all (support/nohosts.py): a name a test forgot to make
    # local fails to resolve instead of reaching the network
    monkeypatch.setenv("RES_OPTIONS", "attempts:0")
    for var in ("XDG_RUNTIME_DIR", "TMUX", "TMUX_PANE", "SSH_AUTH_SOCK", "SSH_AGENT_PID"):
        monkeypatch.delenv(var, raising=False)
    path = os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin")
    if not path.startswith(scripts_dir() + os.pathsep):
        monkeypatch.setenv("PATH", scripts_dir() + os.pathsep + path)
    yield home
    clean_home(home)
    remove_tmp_dir(home)


@pytest.fixture
def p_cli() -> Callable[..., tuple[int, bytes, bytes]]:
    """helpers.run_p: run the installed `p` with the isolated env → (returncode, stdout, stderr)."""
    return run_p


# -- worker side -----------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def sshd() -> Iterator[SshServer]:
    """A real OpenSSH server on 127.0.0.1:<free port>, for the current user, with its own worker
    home (see tests/support/sshd.py for how). Shared by the whole session: call reset_worker() for a
    fresh worker; stop()/start()/swap_host_key() are for fault tests."""
    root = short_tmp_dir()
    server = SshServer(root)
    try:
        server.start()
        yield server
    finally:
        server.close()
        remove_tmp_dir(root)


@dataclass
class SshClientConfig:
    """The files written by `ssh_client_config`, and the ssh argv that uses them."""

    alias: str
    config: Path
    known_hosts: Path

    def ssh_argv(self, *remote: str) -> list[str]:
        """`ssh` with this config and known_hosts, batch mode and strict host keys, to the worker."""
        return ["ssh", "-F", str(self.config), "-o", f"UserKnownHostsFile={self.known_hosts}",
                "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes", self.alias, *remote]


@pytest.fixture
def ssh_client_config(sshd: SshServer, isolated_home: Path) -> SshClientConfig:
    """$HOME/.ssh/config with `Host testworker` for the sshd fixture, and $HOME/.ssh/known_hosts with
    its current host key. (OpenSSH resolves ~ from passwd, so `p` itself passes -F and
    UserKnownHostsFile under $HOME; this fixture only writes the files.)

    Also gives the test a fresh worker: sshd running, worker_home empty, no worker processes left
    from earlier tests (sshd.reset_worker())."""
    sshd.ensure_running()
    sshd.reset_worker()
    ssh_dir = isolated_home / ".ssh"
    ssh_dir.mkdir(mode=0o700, exist_ok=True)
    config = ssh_dir / "config"
    config.write_text(
        "Host testworker\n"
        f"    HostName {sshd.host}\n"
        f"    Port {sshd.port}\n"
        f"    User {sshd.user}\n"
        f"    IdentityFile {sshd.client_key}\n"
        "    IdentitiesOnly yes\n"
    )
    config.chmod(0o600)
    known_hosts = ssh_dir / "known_hosts"
    known_hosts.write_text(sshd.known_hosts_line + "\n")
    known_hosts.chmod(0o600)
    return SshClientConfig("testworker", config, known_hosts)


# -- a real terminal -------------------------------------------------------------------------------

@pytest.fixture
def terminal(isolated_home: Path) -> Iterator[Callable[..., Terminal]]:
    """A factory: terminal(command, cols=120, rows=40, cwd=None, env=None) → Terminal, each a
    detached session of one private tmux server (socket under HOME), killed at teardown."""
    server = TmuxServer(isolated_home / "tmux-client" / "client.sock", os.environ)
    server.socket.parent.mkdir(mode=0o700)
    yield server.open
    server.kill()
