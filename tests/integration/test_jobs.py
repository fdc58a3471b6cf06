"""Job management against real workers (loopback sshd and the built-in `local`): ls, logs, stop, pull,
rm, prune, completion notices and reconciliation."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from helpers import ls_json, retry_until, run_p, start_detached, status_of


@pytest.fixture(params=["ssh", "local"])
def worker(request, tmp_path, monkeypatch):
    """Yields (worker name, worker-side ~/.p); the CWD is a small project."""
    if request.param == "ssh":
        config = request.getfixturevalue("ssh_client_config")
        sshd = request.getfixturevalue("sshd")
        assert run_p("worker", "register", config.alias, "-n", "tw")[0] == 0
        name, p_home = "tw", sshd.worker_home / ".p"
    else:
        name, p_home = "local", Path.home() / ".p"
    project = tmp_path / "project"
    (project / "out").mkdir(parents=True)
    (project / "out" / "artifact.bin").write_bytes(b"\x00\x01artifact")
    monkeypatch.chdir(project)
    return name, p_home


def test_ls_shows_running_then_done_via_notice(worker):
    name, _ = worker
    job_id = start_detached(name, "sh", "-c", "sleep 2; exit 4")
    rc, out, err = run_p("ls")
    assert rc == 0 and job_id[:8] in out.decode() and "running" in out.decode()
    assert "ID" in out.decode().splitlines()[0] and "DURATION" in out.decode().splitlines()[0]
    # Nobody polls: the watcher notices the end and writes the record.
    record = Path(os.environ["XDG_DATA_HOME"]) / "p" / "jobs" / f"{job_id}.json"
    retry_until(lambda: json.loads(record.read_text())["status"] == "done", timeout=30)
    job = status_of(job_id)
    assert job["exit_code"] == 4 and job["duration_s"] >= 2
    assert job["started_at"].endswith("Z") and job["command"] == ["sh", "-c", "sleep 2; exit 4"]
    rc, out, _ = run_p("ls", "-a")
    assert "done [4]" in out.decode()
    rc, out, _ = run_p("ls", "-q", "-a")
    assert job_id in out.decode().split()


def test_logs_follow_returns_exit_code_and_loses_nothing(worker):
    name, _ = worker
    job_id = start_detached(name, "sh", "-c", "for i in 1 2 3 4 5; do echo line$i; sleep 0.3; done; exit 7")
    rc, out, err = run_p("logs", "-f", job_id[:6])
    assert rc == 7, err
    assert out.replace(b"\r\n", b"\n") == b"".join(b"line%d\n" % i for i in range(1, 6))
    rc, out, _ = run_p("logs", job_id, "--tail", "2")
    assert rc == 0 and out.replace(b"\r\n", b"\n") == b"line4\nline5\n"


def test_ambiguous_and_unknown_prefixes(worker):
    rc, out, err = run_p("logs", "ffffffff")
    assert rc == 2 and "no job matches" in err.decode()
    rc, out, err = run_p("logs", "zz")
    assert rc == 2 and "not a job id" in err.decode()


def test_stop_kills_the_whole_tree(worker):
    name, _ = worker
    job_id = start_detached(name, "bash", "-c", 'sleep 1000 & nohup sleep 1001 >/dev/null 2>&1 & '
                   '(trap "" HUP; sleep 1002) & wait')
    retry_until(lambda: b"1002" in _pgrep_job(job_id), timeout=10)
    rc, out, err = run_p("stop", job_id[:8])
    assert rc == 0, err
    assert _pgrep_job(job_id) == b""
    assert status_of(job_id)["status"] == "stopped"
    rc, out, err = run_p("stop", job_id[:8])
    assert rc == 0 and "already" in out.decode()


def test_stop_sigterm_ignored_uses_sigkill_after_grace(worker):
    name, p_home = worker
    job_id = start_detached(name, "sh", "-c",
                            "trap 'echo cleanup' TERM; trap '' HUP; while :; do sleep 0.1; done")
    time.sleep(0.5)
    started = time.monotonic()
    rc, out, err = run_p("stop", job_id, "--timeout", "2")
    assert rc == 0, err
    assert time.monotonic() - started < 8
    assert b"cleanup" in (p_home / "jobs" / job_id / "output.log").read_bytes()


def test_pull_file_and_dir_and_refusals(worker, tmp_path):
    name, _ = worker
    job_id = start_detached(name, "sh", "-c",
                            "mkdir -p res && echo result > res/r.txt && ln -s /etc res/escape")
    retry_until(lambda: status_of(job_id)["status"] == "done", timeout=20)
    dest = tmp_path / "got"
    rc, out, err = run_p("pull", job_id, "res", str(dest))
    assert rc == 0, err
    assert (dest / "r.txt").read_text() == "result\n"
    assert not (dest / "escape").exists() or (dest / "escape").is_symlink()
    rc, out, err = run_p("pull", job_id, "out/artifact.bin", str(tmp_path / "a.bin"))
    assert rc == 0 and (tmp_path / "a.bin").read_bytes() == b"\x00\x01artifact"
    for bad in ("../x", "/etc/passwd", "res/escape/passwd"):
        rc, out, err = run_p("pull", job_id, bad, str(tmp_path / "bad"))
        assert rc == 2 and "outside" in err.decode(), (bad, err)
        assert not (tmp_path / "bad").exists()


def test_rm_and_prune_remove_remote_dirs(worker):
    name, p_home = worker
    running = start_detached(name, "sleep", "30")
    finished = [start_detached(name, "true") for _ in range(2)]
    for job_id in finished:
        retry_until(lambda j=job_id: status_of(j)["status"] == "done", timeout=20)
    rc, out, err = run_p("rm", running)
    assert rc == 2 and "--force" in err.decode()
    rc, out, err = run_p("prune", "--dry-run")
    assert rc == 0 and all(j[:8] in out.decode() for j in finished) and running[:8] not in out.decode()
    assert all((p_home / "workdirs" / j).exists() for j in finished)
    rc, out, err = run_p("prune")
    assert rc == 0 and "freed" in out.decode()
    assert not any((p_home / d / j).exists() for j in finished for d in ("jobs", "workdirs"))
    assert (p_home / "workdirs" / running).exists()
    rc, out, err = run_p("rm", "--force", running)
    assert rc == 0, err
    assert not (p_home / "jobs" / running).exists() and not (p_home / "workdirs" / running).exists()
    assert ls_json("-a") == []


def test_missed_notice_becomes_unknown_then_reconciled(ssh_client_config, sshd, tmp_path, monkeypatch):
    assert run_p("worker", "register", "testworker", "-n", "tw")[0] == 0
    monkeypatch.chdir(tmp_path)
    job_id = start_detached("tw", "sh", "-c", "sleep 3; exit 2")
    sshd.stop(drop_sessions=True)  # the watcher's connection dies with it
    try:
        time.sleep(4)
        rc, out, err = run_p("ls")
        assert "unknown" in out.decode() and "did not answer" in err.decode()
        assert status_of(job_id)["status"] == "unknown"
    finally:
        sshd.start()
    rc, out, err = run_p("ls", "-a")
    assert rc == 0 and "done [2]" in out.decode(), (out, err)
    assert status_of(job_id)["exit_code"] == 2


def test_down_worker_does_not_slow_ls_beyond_timeout(ssh_client_config, isolated_home, tmp_path):
    import socket

    hole = socket.socket()
    hole.bind(("127.0.0.1", 0))
    hole.listen(16)
    port = hole.getsockname()[1]
    with open(ssh_client_config.config, "a") as cfg:
        cfg.write(f"\nHost hole\n    HostName 127.0.0.1\n    Port {port}\n")
    assert run_p("worker", "register", "hole", "--no-check")[0] == 0
    record = {"schema_version": 1, "id": "0badc0de-0000-4000-8000-000000000000", "worker": "hole",
              "cwd": "/x", "argv": ["sleep", "9"], "status": "running", "started_at": time.time()}
    jobs = isolated_home / ".local/share/p/jobs"
    (jobs / "active").mkdir(parents=True, exist_ok=True)
    (jobs / f"{record['id']}.json").write_text(json.dumps(record))
    (jobs / "active" / record["id"]).touch()
    started = time.monotonic()
    rc, out, err = run_p("ls")
    elapsed = time.monotonic() - started
    assert rc == 0 and "unknown" in out.decode() and "hole" in err.decode()
    assert elapsed < 3 + 1.5, elapsed  # the 3 s connect timeout + 1 s, + interpreter start
    hole.close()


def _pgrep_job(job_id: str) -> bytes:
    """Command lines of processes whose environment carries P_JOB_ID=job_id (worker = this host)."""
    found = []
    for env in Path("/proc").glob("[0-9]*/environ"):
        try:
            if f"P_JOB_ID={job_id}".encode() in env.read_bytes().split(b"\0"):
                found.append((env.parent / "cmdline").read_bytes().replace(b"\0", b" "))
        except OSError:
            continue
    return b"\n".join(found)
