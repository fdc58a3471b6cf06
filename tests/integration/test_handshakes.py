"""No new SSH handshake at all for a `p` invocation once a worker is warm (its OpenSSH master up, i.e.
within 60 s of another p command; the issue asks at most one), however many agent calls, rsyncs and
streams the command makes, background watcher included.
Counted with the test sshd's own log of accepted logins."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from helpers import retry_until, run_p

from p_tasks import watch


@pytest.fixture
def warm_worker(ssh_client_config, sshd, tmp_path, monkeypatch):
    assert run_p("worker", "register", ssh_client_config.alias, "-n", "tw")[0] == 0
    project = tmp_path / "project"
    (project / "out").mkdir(parents=True)
    (project / "out" / "a.txt").write_text("artifact")
    monkeypatch.chdir(project)
    first = submit("-d", "tw", "--", "true")  # the master is up from here on (ControlPersist)
    settle()
    return first


def submit(*argv: str) -> str:
    rc, out, err = run_p(*argv)
    assert rc == 0, err
    return out.decode().strip()


def settle() -> None:
    """Wait until the background watcher `p -d` started has exited: its calls count too."""
    retry_until(lambda: not watch.is_watched("tw"), timeout=30)


def logins(sshd, action, wait_for_watcher: bool = True) -> int:
    """New logins sshd accepted while ``action`` (and the watcher it started) ran. Without
    ``wait_for_watcher`` (a job still runs, so its watcher stays): the logins until a second after."""
    before = sshd.auth_count()
    action()
    if wait_for_watcher:
        settle()
    else:
        time.sleep(1)
    return sshd.auth_count() - before


def record(job_id: str) -> dict:
    path = Path(os.environ["XDG_DATA_HOME"]) / "p" / "jobs" / f"{job_id}.json"
    return json.loads(path.read_text())


def test_warm_submit_costs_no_handshake(warm_worker, sshd):
    ids = []
    assert logins(sshd, lambda: ids.append(submit("-d", "tw", "--", "sh", "-c", "echo hi"))) == 0
    retry_until(lambda: record(ids[0])["status"] == "done", timeout=30)


def test_a_streamed_job_and_its_notice_cost_none(warm_worker, sshd):
    assert logins(sshd, lambda: submit("tw", "--", "sh", "-c", "echo streamed; sleep 1")) == 0


def test_job_commands_on_a_warm_worker_cost_none(warm_worker, sshd, tmp_path):
    before = sshd.auth_count()
    job = submit("-d", "tw", "--", "sh", "-c", "echo out; sleep 60")
    settle_running = lambda: record(job)["status"] == "running"  # noqa: E731
    retry_until(settle_running, timeout=10)
    for argv in (["logs", job], ["logs", job, "--tail", "1"],
                 ["pull", job, "out/a.txt", str(tmp_path / "a.txt")], ["stop", job, "--timeout", "1"],
                 ["logs", "-f", job], ["rm", job]):
        def action(argv=argv):
            rc, out, err = run_p(*argv)
            assert rc == 0 or argv[:2] == ["logs", "-f"], err
        # the job runs until `stop`: its watcher stays up, so count without waiting for it to leave
        assert logins(sshd, action, wait_for_watcher=False) == 0, argv
    settle()
    assert sshd.auth_count() == before  # the job's watcher, start to end, made none either


def test_reconcile_of_a_warm_worker_costs_none(warm_worker, sshd):
    job = warm_worker
    path = Path(os.environ["XDG_DATA_HOME"]) / "p" / "jobs" / f"{job}.json"
    data = record(job)
    data["status"] = "unknown"
    path.write_text(json.dumps(data))
    assert logins(sshd, lambda: submit("ls", "-a")) == 0
    assert record(job)["status"] == "done"
