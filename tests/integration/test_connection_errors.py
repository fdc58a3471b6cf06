"""Reaching workers: host keys strictly checked, and each kind of unreachable worker gets its own line."""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest
from helpers import p_executable, run_command, run_p
from support.nohosts import unresolvable_host

from p_tasks.workers import CONNECT_TIMEOUT

# Each unreachable kind must answer within the connect timeout; the margin is for p's own start-up on
# a loaded machine, never a tight limit.
WITHIN = CONNECT_TIMEOUT + 5


def one_line(err: bytes) -> str:
    text = err.decode()
    assert text.count("\n") == 1 and "Traceback" not in text, text
    return text


def test_unknown_host_key_refused_without_a_decision(ssh_client_config, isolated_home):
    ssh_client_config.known_hosts.write_text("")
    rc, out, err = run_p("worker", "register", "testworker", "-n", "tw")
    assert rc == 1
    assert "not in known_hosts" in one_line(err) and "--accept-new-host-key" in err.decode()
    assert not (isolated_home / ".config/p/config.yaml").exists()


def test_accept_new_host_key_records_it_then_strict_afterwards(ssh_client_config, sshd):
    ssh_client_config.known_hosts.write_text("")
    rc, out, err = run_p("worker", "register", "testworker", "-n", "tw", "--accept-new-host-key")
    assert rc == 0, err
    assert f"[127.0.0.1]:{sshd.port}" in ssh_client_config.known_hosts.read_text()
    assert run_p("-n", "--", "true")[0] == 0


def test_changed_host_key_always_refused(ssh_client_config, sshd):
    assert run_p("worker", "register", "testworker", "-n", "tw")[0] == 0
    sshd.swap_host_key()
    try:
        for args in (["-n", "--", "true"], ["worker", "register", "testworker", "-n", "tw2",
                                            "--accept-new-host-key"]):
            rc, out, err = run_p(*args)
            assert rc == 1
            line = one_line(err)
            assert "CHANGED" in line and "man-in-the-middle" in line, line
            assert f"ssh-keygen -R '[127.0.0.1]:{sshd.port}'" in line, line
    finally:
        sshd.swap_host_key()


def test_refused_port(isolated_home):
    port = _free_port()
    assert run_p("worker", "register", f"me@127.0.0.1:{port}", "-n", "down", "--no-check")[0] == 0
    started = time.monotonic()
    rc, out, err = run_p("down", "--", "true", timeout=60)
    assert rc == 1 and f"connection refused by 127.0.0.1:{port}" in one_line(err)
    assert time.monotonic() - started < WITHIN


def test_unresolvable_host(isolated_home, monkeypatch):
    host = unresolvable_host(monkeypatch)
    assert run_p("worker", "register", f"me@{host}", "-n", "nx", "--no-check")[0] == 0
    started = time.monotonic()
    rc, out, err = run_p("nx", "--", "true", timeout=60)
    assert rc == 1 and f"cannot resolve host name '{host}' (DNS)" in one_line(err)
    assert time.monotonic() - started < WITHIN


def test_dns_failure_never_leaves_the_machine(isolated_home, monkeypatch, tmp_path):
    """The mechanism of support/nohosts.py, proven: under strace, `p` (and the ssh it may start) open
    no socket to port 53 nor to any address outside loopback, and still say the name does not resolve."""
    if not shutil.which("strace") or subprocess.run(
        ["strace", "-f", "-o", "/dev/null", "true"], capture_output=True, check=False
    ).returncode:
        pytest.skip("strace is missing or may not trace here")
    host = unresolvable_host(monkeypatch)
    assert run_p("worker", "register", f"me@{host}", "-n", "nx", "--no-check")[0] == 0
    trace = tmp_path / "trace"
    syscalls = "trace=socket,connect,sendto,sendmsg,sendmmsg"
    rc, out, err = run_command(["strace", "-f", "-qq", "-e", syscalls, "-o", trace, p_executable(),
                                "nx", "--", "true"], timeout=60)
    assert rc == 1 and f"cannot resolve host name '{host}' (DNS)" in one_line(err)
    assert trace.read_text().strip(), "strace recorded nothing"
    outside = _non_loopback_contacts(trace)
    assert outside == [], outside


def _non_loopback_contacts(trace: Path) -> list[str]:
    """Lines of an strace log that address port 53 or an IPv4/IPv6 address off loopback."""
    found = []
    for line in trace.read_text().splitlines():
        port53 = "htons(53)" in line
        v4 = re.findall(r'inet_addr\("([^"]+)"\)', line)
        v6 = re.findall(r'inet_pton\(AF_INET6, "([^"]+)"', line)
        off = [a for a in v4 if not a.startswith("127.")] + [a for a in v6 if a not in ("::1", "::")]
        if port53 or off:
            found.append(line)
    return found


def test_blackhole_times_out_within_connect_timeout(ssh_client_config, isolated_home):
    """A server that accepts TCP but never speaks SSH: bounded by ConnectTimeout from ssh_config."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    port = listener.getsockname()[1]
    held = []

    def accept_and_hold():
        try:
            while True:
                held.append(listener.accept())
        except OSError:
            pass  # closed at the end of the test

    threading.Thread(target=accept_and_hold, daemon=True).start()
    with open(ssh_client_config.config, "a") as cfg:
        cfg.write(f"\nHost hole\n    HostName 127.0.0.1\n    Port {port}\n    ConnectTimeout 2\n")
    assert run_p("worker", "register", "hole", "--no-check")[0] == 0
    started = time.monotonic()
    rc, out, err = run_p("hole", "--", "true", timeout=30)
    assert rc == 1 and "hole" in one_line(err)
    assert time.monotonic() - started < 12
    listener.close()


class DroppingFront:
    """A TCP front for the test sshd that closes the first ``drops`` connections at once (as sshd's
    MaxStartups does under load) and forwards every later one to the real sshd."""

    def __init__(self, sshd_port: int, drops: int) -> None:
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.port = self.listener.getsockname()[1]
        self.sshd_port, self.drops, self.accepted = sshd_port, drops, 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        try:
            while True:
                client, _ = self.listener.accept()
                self.accepted += 1
                if self.accepted <= self.drops:
                    client.close()
                    continue
                upstream = socket.create_connection(("127.0.0.1", self.sshd_port))
                for a, b in ((client, upstream), (upstream, client)):
                    threading.Thread(target=self._pump, args=(a, b), daemon=True).start()
        except OSError:
            pass  # closed at the end of the test

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self.listener.close()


def _front_worker(ssh_client_config, sshd, front: DroppingFront) -> None:
    with open(ssh_client_config.config, "a") as cfg:
        cfg.write(f"\nHost front\n    HostName 127.0.0.1\n    Port {front.port}\n    User {sshd.user}\n"
                  f"    IdentityFile {sshd.client_key}\n    IdentitiesOnly yes\n")
    with open(ssh_client_config.known_hosts, "a") as known:
        known.write(f"[127.0.0.1]:{front.port} {sshd.host_key_line}\n")
    assert run_p("worker", "register", "front", "--no-check")[0] == 0


def test_connection_dropped_before_the_greeting_is_retried(ssh_client_config, sshd):
    front = DroppingFront(sshd.port, drops=2)
    try:
        _front_worker(ssh_client_config, sshd, front)
        rc, out, err = run_p("-n", "front", "--", "echo", "through")
        assert rc == 0, err
        assert b"through" in out
        assert front.accepted >= 3  # two dropped, then the one that worked
    finally:
        front.close()


def test_connection_always_dropped_says_so(ssh_client_config, sshd):
    front = DroppingFront(sshd.port, drops=10**6)
    try:
        _front_worker(ssh_client_config, sshd, front)
        rc, out, err = run_p("-n", "front", "--", "true", timeout=60)
        assert rc == 1
        assert "closed the connection during the SSH handshake" in one_line(err)
        # the agent call's first try and four retries, no more; and the OpenSSH master started beside it
        assert front.accepted == 5 + 1
    finally:
        front.close()


def test_auth_failure(ssh_client_config, sshd, tmp_path):
    other = tmp_path / "otherkey"
    import subprocess

    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    text = ssh_client_config.config.read_text().replace(str(sshd.client_key), str(other))
    ssh_client_config.config.write_text(text)
    started = time.monotonic()
    rc, out, err = run_p("worker", "register", "testworker", "-n", "tw", timeout=60)
    assert rc == 1 and f"authentication as '{sshd.user}' failed" in one_line(err)
    assert time.monotonic() - started < WITHIN


def test_passphrase_key_without_agent_fails_fast_with_hint(ssh_client_config, sshd, tmp_path):
    import subprocess

    locked = tmp_path / "locked"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "secret", "-f", str(locked)], check=True)
    text = ssh_client_config.config.read_text().replace(str(sshd.client_key), str(locked))
    ssh_client_config.config.write_text(text)
    started = time.monotonic()
    rc, out, err = run_p("worker", "register", "testworker", "-n", "tw", timeout=30)
    assert rc == 1
    line = one_line(err)
    assert "passphrase" in line and "ssh-add" in line, line
    assert time.monotonic() - started < WITHIN


def config_files(home: Path) -> dict[str, bytes]:
    """Every file in p's config dir (the lock included), by name: config.yaml's bytes, and no temp file."""
    folder = home / ".config/p"
    return {f.name: f.read_bytes() for f in folder.iterdir()} if folder.is_dir() else {}


@pytest.mark.parametrize("conn", ["user@", ":22", "host:port:x", "::1", "a b"])
def test_malformed_connection_strings(conn, isolated_home):
    assert run_p("worker", "register", "me@127.0.0.1:2222", "-n", "first", "--no-check")[0] == 0
    before = config_files(isolated_home)
    assert b"first" in before["config.yaml"]
    rc, out, err = run_p("worker", "register", conn, "-n", "w", "--no-check")
    assert rc == 2 and "bad connection string" in one_line(err)
    assert config_files(isolated_home) == before


def test_duplicate_and_reserved_names(ssh_client_config, isolated_home):
    assert run_p("worker", "register", "testworker", "-n", "tw")[0] == 0
    before = config_files(isolated_home)
    assert b"tw" in before["config.yaml"]
    rc, out, err = run_p("worker", "register", "testworker", "-n", "tw")
    assert rc == 2 and "already registered" in one_line(err)
    assert config_files(isolated_home) == before
    for name in ("ls", "local", "worker"):
        rc, out, err = run_p("worker", "register", "testworker", "-n", name, "--no-check")
        assert rc == 2 and name in one_line(err)
        assert config_files(isolated_home) == before


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
