"""More of job management: logs -f across a dropped connection, the on_finish hook, prune with a
worker that is down."""

from __future__ import annotations

import json
import subprocess
import time

from helpers import p_executable, retry_until, run_p


def register() -> None:
    rc, _, err = run_p("worker", "register", "testworker", "-n", "tw")
    assert rc == 0, err


def test_logs_follow_resumes_after_a_dropped_connection(ssh_client_config, sshd, tmp_path, monkeypatch):
    register()
    monkeypatch.chdir(tmp_path)
    loop = "i=0; while [ $i -lt 40 ]; do echo line$i; i=$((i+1)); sleep 0.2; done; exit 6"
    job = run_p("-d", "--", "sh", "-c", loop)[1].decode().strip()
    follower = subprocess.Popen([p_executable(), "logs", "-f", job], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
    time.sleep(2)
    sshd.stop(drop_sessions=True)  # the stream dies mid-way; the job keeps running
    time.sleep(1.5)
    sshd.start()
    out, err = follower.communicate(timeout=90)
    assert follower.returncode == 6, err
    assert out.replace(b"\r\n", b"\n") == b"".join(b"line%d\n" % i for i in range(40))


def test_on_finish_hook_runs_with_the_jobs_facts(ssh_client_config, isolated_home, tmp_path, monkeypatch):
    register()
    marker = tmp_path / "finished.json"
    config = isolated_home / ".config/p/config.yaml"
    hook = ("python3 -c 'import json, os; json.dump({k: v for k, v in os.environ.items() "
            f"if k.startswith(\"P_JOB_\")}}, open(\"{marker}\", \"w\"))'")
    config.write_text(config.read_text() + f"on_finish: {json.dumps(hook)}\n")
    monkeypatch.chdir(tmp_path)
    job = run_p("-d", "--", "sh", "-c", "sleep 1; exit 9")[1].decode().strip()
    # the hook creates the file before json.dump fills it: wait for a whole JSON document
    facts = retry_until(lambda: json.loads(marker.read_text()), timeout=30,
                        ignore=(FileNotFoundError, json.JSONDecodeError))
    assert facts["P_JOB_ID"] == job and facts["P_JOB_WORKER"] == "tw"
    assert facts["P_JOB_STATUS"] == "done" and facts["P_JOB_EXIT_CODE"] == "9"
    assert float(facts["P_JOB_DURATION"]) >= 1


def test_prune_keeps_the_jobs_of_a_worker_that_is_down(ssh_client_config, sshd, isolated_home, tmp_path,
                                                      monkeypatch):
    register()
    monkeypatch.chdir(tmp_path)
    job = run_p("--", "true")[1]  # streamed; finished
    records = list((isolated_home / ".local/share/p/jobs").glob("*.json"))
    assert len(records) == 1 and json.loads(records[0].read_text())["status"] == "done", job
    sshd.stop(drop_sessions=True)
    try:
        rc, out, err = run_p("prune")
        assert rc == 1 and "tw" in err.decode() and "kept" in err.decode()
        assert records[0].exists()
    finally:
        sshd.start()
    assert (sshd.worker_home / ".p/jobs" / records[0].stem).exists()
    rc, out, err = run_p("prune")
    assert rc == 0 and not records[0].exists()
    assert not (sshd.worker_home / ".p/jobs" / records[0].stem).exists()
    assert not list((isolated_home / ".local/share/p/jobs").glob("*.json"))
