"""A real OpenSSH server on 127.0.0.1 for the integration tests, with an isolated worker home.

How the worker's home is kept off the real one: sshd runs under nss_wrapper (Debian's libnss-wrapper,
an LD_PRELOAD library made for exactly this kind of test), with a private copy of /etc/passwd in which
the login user's home directory is `worker_home` and its shell is `login_shell`. sshd therefore sets
HOME, starts the session in `worker_home` (chdir) and runs the login shell from there, so relative paths
(`sh .p/bin/p-agent`, rsync destinations) and start-up files (~/.profile, ~/.bashrc, ~/.zshenv,
~/.config/fish) all resolve under worker_home. The preload reaches only sshd: a session's environment is
built by sshd from scratch, so the worker's commands run without LD_PRELOAD.

`SetEnv HOME=` alone is not enough: it overrides $HOME (and so the start-up files), but sshd still
chdirs to the passwd home, so the session starts in the real home (e.g. /root). It is kept in the config
as a second line of defence only.

The login user is the current user, root in CI, so the same code works unprivileged.
"""

from __future__ import annotations

import getpass
import glob
import os
import pwd
import shutil
import socket
import subprocess
import time
from pathlib import Path

from . import small_disk
from .processes import clean_home, terminate

SSHD = "/usr/sbin/sshd"
NSS_WRAPPER_GLOBS = (
    "/usr/lib/*/libnss_wrapper.so",
    "/usr/lib64/libnss_wrapper.so",
    "/usr/lib/libnss_wrapper.so",
    "/usr/local/lib/libnss_wrapper.so",
)
ACCEPTED = "Accepted publickey for "


class SshdError(RuntimeError):
    """sshd could not be started; the message carries the end of its log."""


def find_nss_wrapper() -> str:
    """Absolute path of libnss_wrapper.so, or a SshdError that says what to install."""
    for pattern in NSS_WRAPPER_GLOBS:
        hits = sorted(glob.glob(pattern))
        if hits:
            return hits[0]
    raise SshdError("libnss_wrapper.so not found: install it with `apt-get install libnss-wrapper`")


def free_port() -> int:
    """A currently unused high TCP port on 127.0.0.1 (chosen by the kernel)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def keygen(path: Path, comment: str) -> None:
    """A fresh passphrase-less ed25519 key pair at path and path.pub."""
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        check=True, stdin=subprocess.DEVNULL, capture_output=True,
    )


class SshServer:
    """One sshd process (restartable) for the whole test session.

    Attributes: host, port, user, client_key (private key Path), worker_home (Path), log_path (Path),
    login_shell. Properties: host_key_line ("ssh-ed25519 AAAA…"), known_hosts_line.
    """

    host = "127.0.0.1"

    def __init__(self, root: Path, login_shell: str = "/bin/bash", disk_size: str | None = None) -> None:
        """disk_size (e.g. "2m"): the worker's home is a tmpfs of that size, private to sshd and its
        sessions (support/small_disk.py), so that a test can fill the worker's disk."""
        self.root = root
        self.disk_size = disk_size
        self.user = _login_name()
        self.worker_home = root / "worker-home"
        self.log_path = root / "sshd.log"
        self.login_shell = login_shell
        self.port: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._nss_wrapper = find_nss_wrapper()
        self._make_keys()
        self.worker_home.mkdir(mode=0o755)
        self._host_key_index = 0

    # -- keys --------------------------------------------------------------------------------------
    def _make_keys(self) -> None:
        keys = self.root / "keys"
        keys.mkdir(mode=0o700)
        self._host_keys = [keys / "host_ed25519", keys / "host2_ed25519"]
        for i, key in enumerate(self._host_keys):
            keygen(key, f"p-test-host-{i}")
        self.client_key = keys / "client_ed25519"
        keygen(self.client_key, "p-test-client")
        shutil.copy(self.client_key.with_suffix(".pub"), self.root / "authorized_keys")

    @property
    def host_key_line(self) -> str:
        """The current host public key as `type base64`, without comment."""
        pub = self._host_keys[self._host_key_index].with_suffix(".pub").read_text().split()
        return f"{pub[0]} {pub[1]}"

    @property
    def known_hosts_line(self) -> str:
        """A known_hosts line for the current host key: `[127.0.0.1]:PORT type base64`."""
        return f"[{self.host}]:{self.port} {self.host_key_line}"

    # -- lifecycle ---------------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> None:
        """Start sshd (same port as before, if it ran before) and wait until it answers with a banner."""
        if self.running:
            return
        if os.geteuid() == 0:
            Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # privilege separation directory
        self._write_nss_files()
        first = self.port is None
        for _attempt in range(5 if first else 1):
            if first:
                self.port = free_port()
            try:
                return self._spawn_and_wait()
            except SshdError:
                if not first or "Bind to port" not in self.log_tail():
                    raise
        raise SshdError(f"sshd could not bind a free port:\n{self.log_tail()}")

    def stop(self, drop_sessions: bool = False) -> None:
        """Stop the listening sshd. Open sessions survive (as with a real sshd restart) unless
        drop_sessions, which also kills the per-connection sshd processes: a dropped network."""
        if self._proc is None:
            return
        sessions = _descendants(self._proc.pid) if drop_sessions else []
        self._proc.terminate()
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        self._proc = None
        terminate([pid for pid in sessions if _comm(pid) == "sshd"])

    def restart(self) -> None:
        self.stop()
        self.start()

    def ensure_running(self) -> None:
        """Start sshd again if an earlier test stopped it and did not start it."""
        self.start()

    def swap_host_key(self) -> str:
        """Restart with the other of two generated host keys; returns the new host_key_line.
        Calling it again swaps back. known_hosts files written afterwards use the new key."""
        self._host_key_index = 1 - self._host_key_index
        self.restart()
        return self.host_key_line

    def set_login_shell(self, shell: str) -> None:
        """Make `shell` the login user's shell for new connections (bash, dash, zsh, fish …)."""
        self.login_shell = shell
        self._write_nss_files()

    def close(self) -> None:
        """End sshd, its sessions and every process started on the worker."""
        self.stop(drop_sessions=True)
        clean_home(self.worker_home)

    def reset_worker(self) -> None:
        """A fresh worker: end the worker's processes (p's tmux server included), empty worker_home."""
        clean_home(self.worker_home)
        shutil.rmtree(self.worker_home, ignore_errors=True)
        self.worker_home.mkdir(mode=0o755)

    # -- log ---------------------------------------------------------------------------------------
    def auth_count(self) -> int:
        """How many public-key logins sshd has accepted since the session began (all restarts)."""
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return 0
        return text.count(f"{ACCEPTED}{self.user} ")

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"

    # -- internals ---------------------------------------------------------------------------------
    def _config_text(self) -> str:
        return "\n".join([
            f"Port {self.port}",
            f"ListenAddress {self.host}",
            "AddressFamily inet",
            f"HostKey {self._host_keys[self._host_key_index]}",
            f"PidFile {self.root / 'sshd.pid'}",
            f"AuthorizedKeysFile {self.root / 'authorized_keys'}",
            f"AllowUsers {self.user}",
            "StrictModes no",
            "UsePAM no",
            "LogLevel VERBOSE",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "PubkeyAuthentication yes",
            "PermitRootLogin yes",
            "PrintMotd no",
            "PrintLastLog no",
            "UseDNS no",
            "X11Forwarding no",
            "Subsystem sftp internal-sftp",
            f"SetEnv HOME={self.worker_home}",
            "",
        ])

    def _write_nss_files(self) -> None:
        """passwd/group copies for nss_wrapper, with the login user's home and shell replaced."""
        uid, gid = os.getuid(), os.getgid()
        entry = f"{self.user}:x:{uid}:{gid}:p test worker:{self.worker_home}:{self.login_shell}"
        lines = [
            line for line in Path("/etc/passwd").read_text().splitlines()
            if line.split(":")[0] != self.user
        ]
        _atomic_write(self.root / "passwd", "\n".join([*lines, entry, ""]))
        groups = Path("/etc/group").read_text().splitlines()
        if not any(g.split(":")[2:3] == [str(gid)] for g in groups):
            groups.append(f"{self.user}:x:{gid}:")
        _atomic_write(self.root / "group", "\n".join([*groups, ""]))

    def _env(self) -> dict[str, str]:
        return {
            "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
            "LD_PRELOAD": self._nss_wrapper,
            "NSS_WRAPPER_PASSWD": str(self.root / "passwd"),
            "NSS_WRAPPER_GROUP": str(self.root / "group"),
        }

    def _check_nss_wrapper(self) -> None:
        out = subprocess.run(
            ["getent", "passwd", self.user], env=self._env(), capture_output=True, text=True,
        ).stdout
        if f":{self.worker_home}:" not in out:
            raise SshdError(f"nss_wrapper does not take effect (getent passwd gave {out!r})")

    def _spawn_and_wait(self) -> None:
        config = self.root / "sshd_config"
        config.write_text(self._config_text())
        self._check_nss_wrapper()
        wrap = small_disk.wrapper(self.disk_size, self.worker_home) if self.disk_size else []
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen(
                [*wrap, SSHD, "-D", "-e", "-f", str(config), "-E", str(self.log_path)],
                env=self._env(), stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                start_new_session=True,
            )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                self._proc = None
                raise SshdError(f"sshd exited at start:\n{self.log_tail()}")
            if self._answers_banner():
                return
            time.sleep(0.05)
        self.stop()
        raise SshdError(f"sshd did not answer on port {self.port}:\n{self.log_tail()}")

    def _answers_banner(self) -> bool:
        try:
            with socket.create_connection((self.host, self.port), timeout=1) as s:
                return s.recv(8).startswith(b"SSH-")
        except OSError:
            return False


def _login_name() -> str:
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:  # uid without a passwd entry (some containers)
        return getpass.getuser()


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def _comm(pid: int) -> str:
    try:
        return Path("/proc", str(pid), "comm").read_text().strip()
    except OSError:
        return ""


def _descendants(root: int) -> list[int]:
    """All processes below root in the process tree, from /proc."""
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            ppid = int(Path("/proc", name, "stat").read_text().rpartition(")")[2].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(name))
    found, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found
