"""How a worker is reached: the one place that knows about SSH, OpenSSH options and the local worker.

A worker offers two planes (docs/design.md):

* ``run_script(script)``: run a POSIX sh script on the worker (``sh -s`` with the script on stdin) and
  return its result. SSH workers use one Fabric ``Connection`` per p invocation with strict host keys;
  the built-in ``local`` worker uses an ``invoke.Context``.
* ``script_argv()`` / ``attach_argv(words)`` / ``rsync_dest(path)``: argv for local processes (OpenSSH
  sharing a private ControlMaster socket) that carry bytes and terminals: log streams, attach, rsync.

Later placement (several workers, Slurm login nodes) plugs in here and in ``launch`` on the agent side.
"""

from __future__ import annotations

import hashlib
import logging
import os
import pwd
import random
import shlex
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import paths
from .config import LOCAL, WorkerEntry
from .exceptions import WorkerUnreachable
from .target import Target, parse

CONNECT_TIMEOUT = 10
CONTROL_PERSIST = "60s"
QUICK_TIMEOUT = 3
RETRY_DELAYS = (0.3, 0.8, 1.5, 3.0)  # for connections dropped before any work (sshd MaxStartups, …)


@dataclass
class ScriptResult:
    exited: int
    stdout: str
    stderr: str


@dataclass
class SshParams:
    """What OpenSSH (`ssh -G`) resolved for a target; shared by ssh, rsync and paramiko."""

    alias: str
    hostname: str
    user: str
    port: int
    identity_files: list[str] = field(default_factory=list)
    known_hosts_files: list[str] = field(default_factory=list)
    proxy_jump: str | None = None
    connect_timeout: int = CONNECT_TIMEOUT


def home_differs() -> bool:
    """True when $HOME is not the passwd home, which OpenSSH would otherwise use for ~/.ssh."""
    try:
        return os.path.realpath(pwd.getpwuid(os.getuid()).pw_dir) != os.path.realpath(Path.home())
    except KeyError:
        return True


def config_args() -> list[str]:
    """`-F` and known_hosts options making OpenSSH honour $HOME like the rest of p."""
    if not home_differs():
        return []
    ssh_dir = Path.home() / ".ssh"
    config = ssh_dir / "config"
    known = f"{ssh_dir / 'known_hosts'} {ssh_dir / 'known_hosts2'}"
    return ["-F", str(config) if config.exists() else "/dev/null", "-o", f"UserKnownHostsFile={known}"]


def hop_argv() -> list[str]:
    """OpenSSH to a ProxyJump hop, as strict about host keys as p itself."""
    return ["ssh", *config_args(), "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes"]


def resolve(target: Target) -> SshParams:
    """Ask OpenSSH itself how it would connect (honours Include, Match, HostName, ProxyJump…)."""
    argv = ["ssh", "-G", *config_args()]
    argv += ["-p", str(target.port)] if target.port else []
    argv += ["-l", target.user] if target.user else []
    argv += ["--", target.host]
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except FileNotFoundError:
        missing = "OpenSSH `ssh` is not installed; install openssh-client"
        raise WorkerUnreachable(str(target), missing) from None
    if out.returncode != 0:
        detail = (out.stderr.strip().splitlines() or ["ssh -G failed"])[-1]
        raise WorkerUnreachable(str(target), f"ssh cannot read its configuration: {detail}")
    return _params_from_g(target.host, out.stdout)


def _params_from_g(alias: str, text: str) -> SshParams:
    values: dict[str, list[str]] = {}
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        values.setdefault(key.lower(), []).append(value.strip())
    first = {k: v[0] for k, v in values.items()}
    jump = first.get("proxyjump")
    timeout = first.get("connecttimeout", "none")
    return SshParams(
        alias=alias,
        hostname=first.get("hostname", alias),
        user=first.get("user", pwd.getpwuid(os.getuid()).pw_name),
        port=int(first.get("port", "22")),
        identity_files=[_home_path(p) for p in values.get("identityfile", [])],
        known_hosts_files=[_home_path(p) for v in values.get("userknownhostsfile", []) for p in v.split()],
        proxy_jump=None if jump in (None, "none") else jump,
        connect_timeout=int(timeout) if timeout.isdigit() else CONNECT_TIMEOUT,
    )


def _home_path(path: str) -> str:
    """Expand ~ with $HOME, and map the passwd home onto $HOME when they differ."""
    if path.startswith("~"):
        return str(Path.home()) + path[1:]
    pw_home = pwd.getpwuid(os.getuid()).pw_dir.rstrip("/")
    if home_differs() and (path == pw_home or path.startswith(pw_home + "/")):
        return str(Path.home()) + path[len(pw_home) :]
    return path


class Worker:
    """Common face of the local worker and SSH workers."""

    name: str
    connection: str
    def run_script(
        self, script: str, quick: bool = False, secret_env: dict[str, str] | None = None,
        through_master: float | None = None,
    ) -> ScriptResult:
        """Run a sh script; ``quick`` means a short connect timeout and no Fabric import (for p ls);
        ``secret_env`` reaches the script's environment without appearing on any command line;
        ``through_master``: over the OpenSSH master (no new handshake once warm, no Fabric import),
        the reply due within that many seconds (the background watcher's long waits)."""
        raise NotImplementedError

    def script_argv(self) -> list[str]:
        """A local process running the sh script on its stdin on the worker, stdout a byte stream."""
        raise NotImplementedError

    def unreachable_reason(self, stderr: str) -> str:
        """Why a ``script_argv`` process that exited 255 did not reach the worker, in one line."""
        lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
        return lines[-1] if lines else "exit status 255"

    def attach_argv(self, words: list[str]) -> list[str]:
        """A local process running the agent with ``words`` on the worker, in this terminal."""
        raise NotImplementedError

    def rsync_dest(self, path: str) -> tuple[str, list[str] | None]:
        raise NotImplementedError

    def warm(self) -> None:
        """Prepare the data plane (an OpenSSH master) ahead of use; nothing to do for `local`."""

    def close(self) -> None:
        """Release connections (the OpenSSH master persists briefly on its own)."""


class LocalWorker(Worker):
    """The built-in `local` worker: this machine, no SSH, same agent, same tmux, same layout."""

    def __init__(self) -> None:
        self.name = LOCAL
        self.connection = LOCAL

    def run_script(
        self, script: str, quick: bool = False, secret_env: dict[str, str] | None = None,
        through_master: float | None = None,
    ) -> ScriptResult:
        from invoke import Context

        # As an argument rather than on stdin: invoke's stdin pump stalls on inputs of a few kB.
        # Secrets go into the child's environment: the script itself is visible in `ps`.
        result = Context().run("sh -c " + shlex.quote(script), hide=True, warn=True, in_stream=False,
                               env=dict(secret_env or {}))
        return ScriptResult(result.exited, result.stdout, result.stderr)

    def script_argv(self) -> list[str]:
        return ["sh", "-s"]

    def attach_argv(self, words: list[str]) -> list[str]:
        return ["sh", str(Path.home() / ".p/bin/p-agent"), *words]

    def rsync_dest(self, path: str) -> tuple[str, list[str] | None]:
        return os.path.join(str(Path.home()), path), None  # keeps the trailing "/" rsync needs


class SshWorker(Worker):
    """A worker reached over SSH."""

    def __init__(self, name: str, connection: str, strict: str = "yes") -> None:
        self.name = name
        self.connection = connection
        self.target = parse(connection)
        self.strict = strict
        self._params: SshParams | None = None
        self._conn = None
        self._master_alive: bool | None = None
        self._resolving = threading.Lock()

    @property
    def params(self) -> SshParams:
        with self._resolving:  # the warming thread and the first agent call ask at the same moment
            if self._params is None:
                self._params = resolve(self.target)
        return self._params

    def ssh_options(
        self, batch: bool = True, connect_timeout: int | None = None, master: str = "auto"
    ) -> list[str]:
        """OpenSSH options shared by attach, log streams and rsync's `-e` (OpenSSH keeps the first
        value given for an option, so overrides must come through here, not after)."""
        control = paths.private_dir(paths.control_dir())
        # One master per registered worker (its name in the hash): two workers that share host, port
        # and user but log in differently (another key) must not ride each other's master, or a
        # probe of the one would report the other's login.
        suffix = hashlib.sha1(f"{Path.home()}\0{self.name}".encode()).hexdigest()[:8]
        opts = config_args()
        opts += ["-o", f"ControlPath={control}/{suffix}-%C", "-o", f"ControlMaster={master}"]
        opts += ["-o", f"ControlPersist={CONTROL_PERSIST}"]
        opts += ["-o", f"StrictHostKeyChecking={self.strict}", "-o", f"BatchMode={'yes' if batch else 'no'}"]
        timeout = connect_timeout or self.params.connect_timeout
        opts += ["-o", f"ConnectTimeout={timeout}", "-o", "ServerAliveInterval=15"]
        if self.params.proxy_jump and home_differs():
            # OpenSSH hands a ProxyJump hop only -F, not our UserKnownHostsFile: spell the hop out
            hop = shlex.join(hop_argv())
            opts += ["-o", f"ProxyCommand={hop} -W [%h]:%p -- {shlex.quote(self.params.proxy_jump)}"]
        opts += ["-p", str(self.target.port)] if self.target.port else []
        opts += ["-l", self.target.user] if self.target.user else []
        return opts

    def warm(self) -> None:
        """Have the OpenSSH master ready (for rsync and attach) without racing other p processes:
        under a lock, start one unless `ssh -O check` finds it. `ssh -f … true` returns once logged
        in and leaves the master behind (ControlPersist); a plain connection would just end."""
        import fcntl

        lock = paths.private_dir(paths.control_dir()) / f".{self.name}.lock"
        with paths.open_lock(lock) as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            self._master_alive = None  # asked again under the lock: another p may have started one
            if self.master_alive():
                return
            start = ["ssh", "-f", *self.ssh_options(master="yes"), "--", self.target.host, "true"]
            done = subprocess.run(start, stdin=subprocess.DEVNULL, capture_output=True, check=False,
                                  timeout=self.params.connect_timeout + 10)
            self._master_alive = done.returncode == 0

    def script_argv(self, connect_timeout: int | None = None) -> list[str]:
        # `sh -s` reads the same in every login shell (bash, dash, zsh, fish); the script is data.
        return ["ssh", "-T", *self.ssh_options(connect_timeout=connect_timeout), "--", self.target.host,
                "sh -s"]

    def unreachable_reason(self, stderr: str) -> str:
        return describe_openssh_error(stderr, self.params)

    def attach_argv(self, words: list[str]) -> list[str]:
        # Only safe words reach the login shell: verbs, UUIDs, numbers. ssh starts in $HOME.
        remote = shlex.join(["sh", ".p/bin/p-agent", *words])
        quiet = ["-o", "LogLevel=ERROR"]  # no "Shared connection … closed." on screen
        return ["ssh", "-t", *self.ssh_options(), *quiet, "--", self.target.host, remote]

    def rsync_dest(self, path: str) -> tuple[str, list[str] | None]:
        host = f"[{self.target.host}]" if ":" in self.target.host else self.target.host
        return f"{host}:{path}", ["ssh", *self.ssh_options()]

    def run_script(
        self, script: str, quick: bool = False, secret_env: dict[str, str] | None = None,
        through_master: float | None = None,
    ) -> ScriptResult:
        # The script travels on stdin, so exported assignments at its top are on no command line.
        exports = "".join(f"{k}={shlex.quote(v)}; export {k}\n" for k, v in (secret_env or {}).items())
        script = exports + script
        if quick:
            return self._run_openssh(script, QUICK_TIMEOUT, QUICK_TIMEOUT + 1)
        if through_master is not None:
            return self._run_openssh(script, self.params.connect_timeout, through_master)
        if self._conn is None and self.master_alive():
            # A warm worker (a p command within CONTROL_PERSIST of another): no new handshake, and
            # neither Fabric nor paramiko is imported. Cold, the Fabric connection logs in alongside
            # the master (submit.start) and carries this invocation's calls.
            return self._run_openssh(script, self.params.connect_timeout, None)
        return exec_with_stdin(self.connect_open(), "sh -s", script.encode(), self._lost)

    def master_alive(self) -> bool:
        """Whether this user's OpenSSH master for the worker is up (`ssh -O check`, local only). Asked
        once per invocation: a master that ends later is replaced by `ControlMaster=auto`."""
        if self._master_alive is None:
            check = ["ssh", *self.ssh_options(), "-O", "check", "--", self.target.host]
            done = subprocess.run(check, stdin=subprocess.DEVNULL, capture_output=True, check=False)
            self._master_alive = done.returncode == 0
        return self._master_alive

    def connect_open(self):
        """The Fabric connection, logged in. A connection dropped during the handshake (sshd's
        MaxStartups under load, a restarting sshd) is retried; anything else fails at once in one line.
        Only the handshake itself is timed, never the imports before it: a busy client must not make
        a live server look silent."""
        for delay in (*RETRY_DELAYS, None):
            conn = self.connect()
            began = time.monotonic()
            try:
                conn.open()
                return conn
            except Exception as exc:  # noqa: BLE001 - translated into one line below
                hop = conn.connect_kwargs.get("sock")
                exc = getattr(hop, "failure", None) or exc  # the hop's own reason, if it failed
                self.close()
                silent = time.monotonic() - began >= self.params.connect_timeout * 0.9
                if delay is None or not is_transient(exc, silent):
                    raise WorkerUnreachable(self.name, describe_ssh_error(exc, self.params, silent)) from None
            time.sleep(delay * (0.5 + random.random()))
        raise AssertionError("unreachable")

    def _lost(self, exc: BaseException) -> WorkerUnreachable:
        """The connection broke after login, while a script ran."""
        self.close()
        return WorkerUnreachable(self.name, describe_ssh_error(exc, self.params, silent=False))

    def _run_openssh(self, script: str, connect_timeout: int, reply_timeout: float | None) -> ScriptResult:
        """The same call through OpenSSH, sharing the ControlMaster (a warm worker costs no new
        handshake); the reply must come within ``reply_timeout`` seconds (None: no limit)."""
        try:
            done = subprocess.run(self.script_argv(connect_timeout), input=script.encode(),
                                  capture_output=True, timeout=reply_timeout, check=False)
        except subprocess.TimeoutExpired:
            raise WorkerUnreachable(self.name, f"no answer within {reply_timeout:g}s") from None
        stderr = done.stderr.decode("utf-8", "replace")
        if done.returncode == 255:
            raise WorkerUnreachable(self.name, describe_openssh_error(stderr, self.params, connect_timeout))
        return ScriptResult(done.returncode, done.stdout.decode("utf-8", "replace"), stderr)

    def connect(self):
        """One Fabric Connection per invocation: known_hosts + RejectPolicy, never AutoAddPolicy."""
        if self._conn is None:
            self._conn = build_connection(self.params, self.name)
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def exec_with_stdin(conn, command: str, data: bytes, lost) -> ScriptResult:
    """Run ``command`` on the Fabric connection's transport, feed ``data`` to its stdin, collect output.
    ``lost(exc)`` builds the error raised when the connection breaks meanwhile.

    A plain paramiko session rather than ``Connection.run``: invoke's stdin pump polls, and fails with
    "Socket is closed" when the remote side exits before reading all of its input.
    """
    try:
        channel = conn.client.get_transport().open_session(timeout=conn.connect_timeout)
    except Exception as exc:  # noqa: BLE001 - translated into one line
        raise lost(exc) from None
    try:
        channel.exec_command(command)
        try:
            channel.sendall(data)
            channel.shutdown_write()
        except OSError:
            pass  # the remote ended early (e.g. "agent outdated"); its answer is still readable
        stdout = channel.makefile("rb").read()
        stderr = channel.makefile_stderr("rb").read()
        return ScriptResult(channel.recv_exit_status(), stdout.decode("utf-8", "replace"),
                            stderr.decode("utf-8", "replace"))
    except Exception as exc:  # noqa: BLE001 - translated into one line
        raise lost(exc) from None
    finally:
        channel.close()


def build_connection(params: SshParams, name: str):
    from fabric import Connection
    from paramiko import RejectPolicy

    if not logging.getLogger().isEnabledFor(logging.DEBUG):
        logging.getLogger("paramiko").setLevel(logging.CRITICAL)  # p reports failures in one line

    kwargs = {
        "key_filename": [f for f in params.identity_files if os.path.exists(f)],
        "look_for_keys": False,
        "allow_agent": True,
        "banner_timeout": params.connect_timeout,
        "auth_timeout": params.connect_timeout,
    }
    if params.proxy_jump:
        from .hop import HopProxy

        # host and port spelled out (Fabric's own gateway expands %p from a dummy ssh_config, to 22)
        host = f"[{params.hostname}]" if ":" in params.hostname else params.hostname
        kwargs["sock"] = HopProxy(shlex.join([*hop_argv(), "-W", f"{host}:{params.port}", "--",
                                              params.proxy_jump]))
    conn = Connection(
        host=params.hostname,
        user=params.user,
        port=params.port,
        connect_timeout=params.connect_timeout,
        connect_kwargs=kwargs,
        inline_ssh_env=True,
    )
    conn.client.set_missing_host_key_policy(RejectPolicy())
    for known in params.known_hosts_files:
        if os.path.exists(known):
            conn.client.get_host_keys().load(known)
    return conn


def is_transient(exc: BaseException, silent: bool) -> bool:
    """Dropped during the handshake (sshd's MaxStartups, a restarting sshd): worth a retry.

    ``silent``: the attempt used up the connect timeout. A host that says nothing is not transient:
    retrying only multiplies the wait. paramiko words both cases alike ("Error reading SSH protocol
    banner", "No existing session"), so the time the attempt took tells them apart.
    """
    import paramiko

    if silent:
        return False
    if isinstance(exc, (ConnectionResetError, EOFError)):
        return True
    text = str(exc)
    dropped = ("reset", "connection closed", "banner", "no existing session")
    return isinstance(exc, paramiko.SSHException) and any(word in text.lower() for word in dropped)


def failure_line(kind: str, params: SshParams, timeout: int | None = None, detail: str = "") -> str:
    """The one line for each way an SSH connection fails, whichever client saw it (paramiko or
    OpenSSH), with the next step."""
    where = f"{params.hostname}:{params.port}"
    seconds = timeout or params.connect_timeout
    lines = {
        "dns": f"cannot resolve host name '{params.hostname}' (DNS); check the name or ~/.ssh/config",
        "refused": f"connection refused by {where}; is sshd running there?",
        "silent": f"{where} accepted the connection but sent no SSH greeting within {seconds}s",
        "dropped": f"{where} closed the connection during the SSH handshake (sshd busy or restarting, "
                   "or MaxStartups); try again",
        "timeout": f"connection to {where} timed out after {seconds}s",
        "changed": f"the host key of {where} has CHANGED since it was recorded in known_hosts: this can be "
                   "a man-in-the-middle attack or a reinstalled server; verify it, then remove the old key "
                   f"with `ssh-keygen -R '[{params.hostname}]:{params.port}'`",
        "unknown": f"the host key of {where} is not in known_hosts; register the worker on a terminal to "
                   "confirm it, or pass --accept-new-host-key to `p worker register`",
        "passphrase": "the SSH key needs a passphrase and no ssh-agent holds it; run `ssh-add` first",
        "auth": f"authentication as '{params.user}' failed; check the key (ssh-add, IdentityFile)",
    }
    return lines.get(kind) or f"SSH connection to {where} failed: {detail}"


def describe_ssh_error(exc: BaseException, params: SshParams, silent: bool = True) -> str:
    """One line saying why a paramiko connection failed (see :func:`failure_line`)."""
    import socket

    import paramiko

    from .hop import HopFailed

    if isinstance(exc, HopFailed):
        hint = "run `ssh " + params.proxy_jump + "` once to see why"
        if "host key" in exc.reason.lower():
            hint = (f"its host key is unknown or has changed; check it with `ssh {params.proxy_jump}`, "
                    "which records it in known_hosts")
        return f"the ProxyJump hop '{params.proxy_jump}' failed: {exc.reason}; {hint}"
    unanswered = "banner" in str(exc) or "No existing session" in str(exc)
    if isinstance(exc, socket.gaierror):
        kind = "dns"
    elif isinstance(exc, (paramiko.ssh_exception.NoValidConnectionsError, ConnectionRefusedError)):
        kind = "refused"
    elif isinstance(exc, paramiko.SSHException) and unanswered and "reset" not in str(exc).lower():
        kind = "silent" if silent else "dropped"
    elif isinstance(exc, (socket.timeout, TimeoutError)):
        kind = "timeout"
    elif isinstance(exc, paramiko.BadHostKeyException):
        kind = "changed"
    elif isinstance(exc, paramiko.PasswordRequiredException):
        kind = "passphrase"
    elif isinstance(exc, paramiko.AuthenticationException):
        kind = "auth"
    elif isinstance(exc, paramiko.SSHException) and "known_hosts" in str(exc):
        kind = "unknown"
    elif isinstance(exc, (paramiko.SSHException, OSError, EOFError)):
        kind = "other"
    else:
        raise exc
    return failure_line(kind, params, detail=str(exc) or exc.__class__.__name__)


# What the OpenSSH client prints for each kind of failure (first match wins).
OPENSSH_FAILURES = (
    ("Could not resolve hostname", "dns"),
    ("Connection refused", "refused"),
    ("banner exchange", "silent"),
    ("timed out", "timeout"),
    ("IDENTIFICATION HAS CHANGED", "changed"),
    ("has changed", "changed"),
    ("Host key verification failed", "unknown"),
    ("Permission denied (", "auth"),
    ("kex_exchange_identification", "dropped"),
    ("Connection closed by", "dropped"),
)


def describe_openssh_error(stderr: str, params: SshParams, timeout: int | None = None) -> str:
    """The same one line as :func:`describe_ssh_error`, from what the OpenSSH client printed when it
    exited 255 (agent calls and log streams through the ControlMaster)."""
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    text = "\n".join(lines)
    kind = next((kind for words, kind in OPENSSH_FAILURES if words in text), "other")
    return failure_line(kind, params, timeout, detail=lines[-1] if lines else "ssh exited 255")


def open_worker(entry: WorkerEntry) -> Worker:
    if entry.name == LOCAL and entry.connection == LOCAL:
        return LocalWorker()
    return SshWorker(entry.name, entry.connection)
