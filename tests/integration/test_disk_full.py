"""A worker whose disk fills up: the sync fails fast with the worker's own error and no job runs; a job
that fills the disk itself ends `failed` with the reason, never `done [0]`; nothing is lost.

The worker here is a second sshd whose sessions see a small tmpfs as the worker's home (a private
mount namespace: support/small_disk.py), so the disk really fills up, for rsync, the agent and the job.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from conftest import remove_tmp_dir, short_tmp_dir
from helpers import run_p
from support import small_disk
from support.sshd import SshServer

WHY_NOT = small_disk.unavailable()
pytestmark = pytest.mark.skipif(WHY_NOT is not None, reason=f"no mount namespaces here: {WHY_NOT}")


@pytest.fixture
def small_worker(isolated_home: Path):
    """A worker `small` with a 3 MB home, registered in the isolated client."""
    root = short_tmp_dir()
    server = SshServer(root, disk_size="3m")
    try:
        server.start()
        ssh_dir = isolated_home / ".ssh"
        ssh_dir.mkdir(mode=0o700, exist_ok=True)
        (ssh_dir / "config").write_text(
            f"Host small\n    HostName {server.host}\n    Port {server.port}\n    User {server.user}\n"
            f"    IdentityFile {server.client_key}\n    IdentitiesOnly yes\n")
        (ssh_dir / "known_hosts").write_text(server.known_hosts_line + "\n")
        rc, out, err = run_p("worker", "register", "small")
        assert rc == 0, err
        yield server
    finally:
        server.close()
        remove_tmp_dir(root)


def ssh(server: SshServer, isolated_home: Path, command: str) -> str:
    argv = ["ssh", "-F", str(isolated_home / ".ssh/config"),
            "-o", f"UserKnownHostsFile={isolated_home / '.ssh/known_hosts'}", "-o", "BatchMode=yes",
            "small", command]
    return subprocess.run(argv, capture_output=True, text=True, check=True, timeout=30).stdout


def jobs() -> list[dict]:
    rc, out, err = run_p("ls", "-a", "--json")
    assert rc == 0, err
    return json.loads(out)


def free_kb(server: SshServer, isolated_home: Path) -> int:
    return int(ssh(server, isolated_home, "df -Pk . | awk 'NR == 2 { print $4 }'"))


def test_sync_to_a_full_disk_fails_fast_and_starts_nothing(small_worker, isolated_home, tmp_path,
                                                          monkeypatch):
    (tmp_path / "big.bin").write_bytes(b"x" * 5_000_000)  # more than the worker's 3 MB
    (tmp_path / "small.txt").write_text("fits\n")
    monkeypatch.chdir(tmp_path)
    free_before = free_kb(small_worker, isolated_home)
    rc, out, err = run_p("-d", "--yes", "small", "--", "true", timeout=60)
    assert rc == 1
    line = err.decode()
    assert line.count("\n") == 1 and "Traceback" not in line, line
    assert "No space left on device" in line and "no job started" in line, line
    assert [job["status"] for job in jobs()] == ["failed"]
    # the half-written workdir does not keep the disk full
    assert free_kb(small_worker, isolated_home) >= free_before - 64
    (tmp_path / "big.bin").unlink()
    rc, out, err = run_p("small", "--", "cat", "small.txt", timeout=60)
    assert (rc, out.replace(b"\r\n", b"\n")) == (0, b"fits\n"), err


def test_job_that_fills_the_disk_ends_failed_with_the_reason(small_worker, isolated_home, tmp_path,
                                                             monkeypatch):
    (tmp_path / "a.txt").write_text("a\n")
    monkeypatch.chdir(tmp_path)
    rc, out, err = run_p("small", "--", "sh", "-c", "cat /dev/zero > fill; exit 0", timeout=90)
    assert rc == 1
    assert "could not record the job's exit status" in err.decode() and "disk" in err.decode()
    [job] = jobs()
    assert job["status"] == "failed" and job["exit_code"] is None, job
    assert "disk is probably full" in job["reason"]
    assert free_kb(small_worker, isolated_home) < 64  # really full
    # While the disk is full, a new job cannot start: it says why, and is not left `running`.
    rc, out, err = run_p("-n", "small", "--", "echo", "hi", timeout=60)
    assert rc == 1 and "the disk is full" in err.decode(), err
    assert "running" not in [j["status"] for j in jobs()]
    # Removing the job frees the disk; the worker runs jobs again.
    rc, out, err = run_p("rm", job["id"])
    assert rc == 0, err
    assert free_kb(small_worker, isolated_home) > 2000
    rc, out, err = run_p("small", "--", "cat", "a.txt", timeout=60)
    assert (rc, out.replace(b"\r\n", b"\n")) == (0, b"a\n"), err
