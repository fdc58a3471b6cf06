"""Many p processes at once against one worker: nothing lost, nothing mixed up."""

from __future__ import annotations

import json
import os
import subprocess

from helpers import p_executable, retry_until, run_p


def spawn(*args: str) -> subprocess.Popen:
    return subprocess.Popen([p_executable(), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL)


def test_twenty_detached_jobs_at_once(ssh_client_config, sshd, isolated_home, tmp_path, monkeypatch):
    assert run_p("worker", "register", "testworker", "-n", "tw")[0] == 0
    config_before = (isolated_home / ".config/p/config.yaml").read_bytes()
    (tmp_path / "f.txt").write_text("x")
    monkeypatch.chdir(tmp_path)
    procs = [spawn("-d", "--", "sh", "-c", f"echo job{i}") for i in range(20)]
    results = [(p.wait(timeout=120), p.stdout.read().decode().strip(), p.stderr.read().decode())
               for p in procs]
    assert all(rc == 0 for rc, _, _ in results), [err for rc, _, err in results if rc]
    ids = {out for _, out, _ in results}
    assert len(ids) == 20
    records = {p.stem for p in (isolated_home / ".local/share/p/jobs").glob("*.json")}
    assert records == ids
    workdirs = {p.name for p in (sshd.worker_home / ".p/workdirs").iterdir()}
    assert workdirs == ids
    assert (isolated_home / ".config/p/config.yaml").read_bytes() == config_before
    for job_id in ids:
        log = sshd.worker_home / ".p/jobs" / job_id / "exitcode"
        retry_until(log.exists, timeout=60)


def test_two_registers_at_once_both_present(ssh_client_config, isolated_home):
    procs = [spawn("worker", "register", "testworker", "-n", f"w{i}") for i in range(2)]
    assert [p.wait(timeout=60) for p in procs] == [0, 0]
    rc, out, err = run_p("worker", "ls")
    assert "w0" in out.decode() and "w1" in out.decode()


def test_local_files_are_private(ssh_client_config, isolated_home, tmp_path, monkeypatch):
    assert run_p("worker", "register", "testworker", "-n", "tw")[0] == 0
    monkeypatch.chdir(tmp_path)
    rc, out, err = run_p("-d", "--", "true")
    assert rc == 0, err
    job_id = out.decode().strip()
    record = isolated_home / f".local/share/p/jobs/{job_id}.json"
    for path in (isolated_home / ".config/p/config.yaml", record):
        assert os.stat(path).st_mode & 0o077 == 0, path
    assert json.loads((isolated_home / f".local/share/p/jobs/{job_id}.json").read_text())["id"] == job_id
