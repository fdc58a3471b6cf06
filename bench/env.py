"""The benchmark's world: a loopback sshd worker, a byte-counting relay in front of it, a blackhole,
and isolated client homes. Nothing here touches the real ~/.ssh, ~/.config, ~/.local or ~/.p, and
nothing is contacted outside 127.0.0.1.

The sshd is the test suite's (tests/support/sshd.py: real OpenSSH under nss_wrapper, so the worker's
HOME is a temp dir); it is imported, not copied.

Every client connection to the worker goes through :class:`Relay`, a TCP forwarder on 127.0.0.1 that
counts the bytes of each connection in each direction. The ssh config's ``Port`` is the relay's, so
OpenSSH (ssh, rsync's ssh, ControlMasters) and paramiko (p's agent calls) all pass through it: the
counts are the SSH transport bytes on the wire (encrypted payload of TCP, without TCP/IP headers), and
the number of new connections is the number of SSH handshakes. Data is moved with splice(2) so the
relay costs almost nothing; its round-trip overhead is measured once per run (``calibration``).
"""

from __future__ import annotations

import os
import selectors
import shutil
import socket
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TESTS = REPO / "tests"


def _import_support():
    """tests/support (sshd, process cleanup) without pytest: it is a plain package."""
    if str(TESTS) not in sys.path:
        sys.path.insert(0, str(TESTS))
    from support import processes, sshd  # noqa: PLC0415

    return sshd, processes


sshd_mod, processes = _import_support()
SshServer = sshd_mod.SshServer
SshdError = sshd_mod.SshdError
free_port = sshd_mod.free_port
clean_home = processes.clean_home
pids_with_home = processes.pids_with_home
sockets_under = processes.sockets_under
close_socket_owner = processes.close_socket_owner

KEEP = os.environ.get("P_BENCH_KEEP_TMP") == "1"


def short_tmp_dir(prefix: str = "pb") -> Path:
    """A fresh private dir directly under /tmp with a short name (unix socket paths stay < 108 bytes)."""
    return Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))


# ---------------------------------------------------------------------------------------------------
# Relay: counts the bytes of every connection to the worker


@dataclass
class Conn:
    id: int
    opened: float
    up: int = 0  # client -> server (what the client sends)
    down: int = 0  # server -> client
    closed: float | None = None
    _done: int = 0


@dataclass
class Window:
    """What went over the wire between two snapshots of the relay."""

    up: int
    down: int
    connections: int  # new TCP connections = SSH handshakes
    still_open: int  # of those, how many were still open at the end


class Relay:
    """127.0.0.1:port → 127.0.0.1:target_port, two splice pumps per connection, per-connection counts."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.conns: list[Conn] = []
        self._lock = threading.Lock()
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(128)
        self.port = self._listener.getsockname()[1]
        self._closing = False
        self._socks: list[socket.socket] = []
        threading.Thread(target=self._accept_loop, name="relay-accept", daemon=True).start()

    def _accept_loop(self) -> None:
        while not self._closing:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(("127.0.0.1", self.target_port), timeout=10)
                server.settimeout(None)
            except OSError:
                client.close()
                continue
            for s in (client, server):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                conn = Conn(len(self.conns), time.monotonic())
                self.conns.append(conn)
                self._socks += [client, server]
            for src, dst, attr in ((client, server, "up"), (server, client, "down")):
                threading.Thread(target=self._pump, args=(conn, src, dst, attr), daemon=True).start()

    def _pump(self, conn: Conn, src: socket.socket, dst: socket.socket, attr: str) -> None:
        try:
            _splice_loop(conn, src, dst, attr)
        except OSError:
            pass
        finally:
            try:
                dst.shutdown(socket.SHUT_WR)
            except OSError:
                pass
            with self._lock:
                conn._done += 1
                last = conn._done == 2
            if last:
                conn.closed = time.monotonic()
                src.close()
                dst.close()

    def snapshot(self) -> dict[int, tuple[int, int]]:
        with self._lock:
            return {c.id: (c.up, c.down) for c in self.conns}

    def window(self, before: dict[int, tuple[int, int]]) -> Window:
        up = down = new = still_open = 0
        with self._lock:
            for c in self.conns:
                b_up, b_down = before.get(c.id, (0, 0))
                up += c.up - b_up
                down += c.down - b_down
                if c.id not in before:
                    new += 1
                    still_open += c.closed is None
        return Window(up, down, new, still_open)

    def open_count(self) -> int:
        with self._lock:
            return sum(c.closed is None for c in self.conns)

    def quiet(self, timeout: float = 5.0, idle: float = 0.1) -> None:
        """Wait until no byte moved for `idle` seconds (bounded): counts are then final."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            now = self.snapshot()
            if now == last:
                return
            last = now
            time.sleep(idle)

    def close(self) -> None:
        self._closing = True
        self._listener.close()
        with self._lock:
            socks = list(self._socks)
        for s in socks:
            try:
                s.close()
            except OSError:
                pass


def _splice_loop(conn: Conn, src: socket.socket, dst: socket.socket, attr: str) -> None:
    """Move bytes src → dst until EOF, in the kernel (splice through a pipe) when possible."""
    chunk = 1 << 20
    try:
        r, w = os.pipe()
    except OSError:
        r = w = -1
    try:
        if r >= 0 and hasattr(os, "splice"):
            try:
                while True:
                    n = os.splice(src.fileno(), w, chunk)
                    if n == 0:
                        return
                    left = n
                    while left:
                        left -= os.splice(r, dst.fileno(), left)
                    setattr(conn, attr, getattr(conn, attr) + n)
            except OSError as exc:
                if exc.errno not in (22, 38):  # EINVAL/ENOSYS: no splice here, copy instead
                    raise
        buf = bytearray(chunk)
        view = memoryview(buf)
        while True:
            n = src.recv_into(buf)
            if n == 0:
                return
            dst.sendall(view[:n])
            setattr(conn, attr, getattr(conn, attr) + n)
    finally:
        if r >= 0:
            os.close(r)
            os.close(w)


# ---------------------------------------------------------------------------------------------------
# Blackhole: accepts TCP, never says a word (the hard case for connect timeouts)


class Blackhole:
    def __init__(self) -> None:
        self._sel = selectors.DefaultSelector()
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(128)
        self._listener.setblocking(False)
        self.port = self._listener.getsockname()[1]
        self._sel.register(self._listener, selectors.EVENT_READ)
        self._stop = False
        self.accepted = 0
        threading.Thread(target=self._loop, name="blackhole", daemon=True).start()

    def _loop(self) -> None:
        while not self._stop:
            for key, _ in self._sel.select(timeout=0.2):
                sock = key.fileobj
                if sock is self._listener:
                    try:
                        conn, _ = self._listener.accept()
                    except OSError:
                        continue
                    self.accepted += 1
                    conn.setblocking(False)
                    self._sel.register(conn, selectors.EVENT_READ)
                    continue
                try:
                    data = sock.recv(65536)  # the client's banner: read and ignored
                except OSError:
                    data = b""
                if not data:
                    self._sel.unregister(sock)
                    sock.close()

    def close(self) -> None:
        self._stop = True
        time.sleep(0.25)
        for key in list(self._sel.get_map().values()):
            try:
                key.fileobj.close()
            except OSError:
                pass


# ---------------------------------------------------------------------------------------------------
# Client homes


@dataclass
class ClientHome:
    """An isolated client: HOME and XDG dirs in a short /tmp dir, ~/.ssh/config naming the hosts."""

    root: Path
    env: dict[str, str]
    ssh_config: Path
    known_hosts: Path
    workers: list[str] = field(default_factory=list)

    @property
    def data_dir(self) -> Path:
        return Path(self.env["XDG_DATA_HOME"]) / "p"

    @property
    def jobs_dir(self) -> Path:
        return self.data_dir / "jobs"

    def ssh_base(self) -> list[str]:
        """`ssh` as a user types it: their config and known_hosts (spelled out, since OpenSSH finds ~
        through passwd, not $HOME), no ControlMaster."""
        return ["ssh", "-F", str(self.ssh_config), "-o", f"UserKnownHostsFile={self.known_hosts}"]

    def rsync_rsh(self) -> str:
        return " ".join(self.ssh_base())

    def control_sockets(self) -> list[Path]:
        return [s for s in sockets_under(self.root) if "tmux" not in s.name]

    def close_masters(self) -> None:
        """End every OpenSSH ControlMaster started under this HOME (p's private ControlPath)."""
        for sock in self.control_sockets():
            close_socket_owner(sock)

    def background(self) -> list[int]:
        """Processes started with this HOME that are not ControlMasters (e.g. p's watchers)."""
        found = []
        for pid in pids_with_home(self.root):
            try:
                cmd = Path("/proc", str(pid), "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if cmd and cmd[0].startswith(b"ssh:") and b"[mux]" in b" ".join(cmd):
                continue  # a ControlMaster
            found.append(pid)
        return found

    def settle(self, timeout: float = 10.0) -> list[int]:
        """Wait (bounded) until p's background processes under this HOME have exited; return the rest."""
        deadline = time.monotonic() + timeout
        while True:
            left = self.background()
            if not left or time.monotonic() >= deadline:
                return left
            time.sleep(0.05)

    def cleanup(self) -> None:
        clean_home(self.root)
        if not KEEP:
            shutil.rmtree(self.root, ignore_errors=True)


def client_env(home: Path, p_bin_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("XDG_RUNTIME_DIR", "TMUX", "TMUX_PANE", "SSH_AUTH_SOCK", "SSH_AGENT_PID",
                        "XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_STATE_HOME", "XDG_CACHE_HOME",
                        "PYTHONPATH", "VIRTUAL_ENV")}
    env.update(
        HOME=str(home),
        XDG_CONFIG_HOME=str(home / ".config"),
        XDG_DATA_HOME=str(home / ".local/share"),
        XDG_STATE_HOME=str(home / ".local/state"),
        XDG_CACHE_HOME=str(home / ".cache"),
        TMUX_TMPDIR=str(home),
        PATH=str(p_bin_dir) + os.pathsep + os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
        LC_ALL="C.UTF-8",
        NO_COLOR="1",
    )
    return env


# ---------------------------------------------------------------------------------------------------
# The whole world


class World:
    """sshd worker + relay + blackhole + a refused port; makes client homes that know them."""

    def __init__(self, p_bin_dir: Path) -> None:
        self.p_bin_dir = p_bin_dir
        self.root = short_tmp_dir("pbw")
        self.sshd = SshServer(self.root)
        self.sshd.start()
        self.relay = Relay(self.sshd.port)
        self.blackhole = Blackhole()
        self.refused_port = free_port()  # nothing listens there
        self.homes: list[ClientHome] = []

    @property
    def worker_home(self) -> Path:
        return self.sshd.worker_home

    def known_hosts_line(self) -> str:
        return f"[127.0.0.1]:{self.relay.port} {self.sshd.host_key_line}"

    def new_home(self, aliases: list[str]) -> ClientHome:
        """A fresh client HOME whose ~/.ssh/config has the worker under each alias (through the relay),
        `bench-direct` (the same worker, straight to sshd: no relay, no counts), `dead-refused` (a closed
        port) and `dead-blackhole` (TCP accepted, no SSH banner ever)."""
        home = short_tmp_dir("pbc")
        ssh_dir = home / ".ssh"
        ssh_dir.mkdir(mode=0o700)
        common = (f"    User {self.sshd.user}\n    IdentityFile {self.sshd.client_key}\n"
                  "    IdentitiesOnly yes\n")
        text = f"Host {' '.join(aliases)}\n    HostName 127.0.0.1\n    Port {self.relay.port}\n" + common
        text += f"Host bench-direct\n    HostName 127.0.0.1\n    Port {self.sshd.port}\n" + common
        text += f"Host dead-refused\n    HostName 127.0.0.1\n    Port {self.refused_port}\n" + common
        text += f"Host dead-blackhole\n    HostName 127.0.0.1\n    Port {self.blackhole.port}\n" + common
        config = ssh_dir / "config"
        config.write_text(text)
        config.chmod(0o600)
        known = ssh_dir / "known_hosts"
        known.write_text(self.known_hosts_line() + "\n"
                         + f"[127.0.0.1]:{self.sshd.port} {self.sshd.host_key_line}\n")
        known.chmod(0o600)
        client = ClientHome(home, client_env(home, self.p_bin_dir), config, known)
        self.homes.append(client)
        return client

    def close(self) -> None:
        for home in self.homes:
            try:
                home.cleanup()
            except Exception:  # noqa: BLE001 - cleanup must go on
                pass
        try:
            self.sshd.close()  # ends sshd, its sessions and every worker process (p's tmux server too)
        finally:
            self.relay.close()
            self.blackhole.close()
            if not KEEP:
                shutil.rmtree(self.root, ignore_errors=True)
