"""Edges a new user hits: pipes closed early, empty commands, a default worker that is gone or is `local`."""

from __future__ import annotations

import json
import subprocess
import time

from helpers import p_executable, run_p


def test_ls_into_a_closed_pipe_is_quiet(isolated_home):
    jobs = isolated_home / ".local/share/p/jobs"
    jobs.mkdir(parents=True)
    for i in range(300):
        job_id = f"{i:08x}-0000-4000-8000-000000000000"
        record = {"schema_version": 1, "id": job_id, "worker": "local", "cwd": "/x", "argv": ["true"],
                  "status": "done", "exit_code": 0, "started_at": time.time() - 5, "ended_at": time.time()}
        (jobs / f"{job_id}.json").write_text(json.dumps(record))
    done = subprocess.run(f"{p_executable()} ls -a | head -c 10", shell=True, capture_output=True,
                          timeout=60)
    assert done.stdout == b"ID        " and done.stderr == b""


def test_empty_command_is_refused(isolated_home):
    rc, out, err = run_p("--", "")
    assert rc == 2 and "nothing to run" in err.decode()
    assert not (isolated_home / ".local/share/p/jobs").exists()


def test_default_worker_that_is_gone_names_the_config(isolated_home):
    config = isolated_home / ".config/p/config.yaml"
    config.parent.mkdir(parents=True)
    config.write_text("default_worker: nosuch\nworkers: []\n")
    rc, out, err = run_p("--", "true")
    assert rc == 1 and str(config) in err.decode() and "p worker default" in err.decode()
    assert config.read_text() == "default_worker: nosuch\nworkers: []\n"


def test_forgotten_dashdash_suggests_the_command(isolated_home):
    rc, out, err = run_p("make", "-j16")
    assert rc == 2 and "p -- make -j16" in err.decode()


def test_default_local_is_saved_and_shown(isolated_home):
    assert run_p("worker", "register", "--no-check", "me@127.0.0.1:9", "-n", "box")[0] == 0
    rc, out, err = run_p("worker", "default", "local")
    assert (rc, err) == (0, b"default worker is now 'local'\n")
    config = isolated_home / ".config/p/config.yaml"
    assert config.read_text().startswith("default_worker: local\n")
    rc, out, err = run_p("worker", "ls", "--json")
    assert [(w["name"], w["default"]) for w in json.loads(out)] == [("local", True), ("box", False)]


def test_default_local_runs_jobs_on_this_machine(isolated_home, tmp_path, monkeypatch):
    assert run_p("worker", "register", "--no-check", "me@127.0.0.1:9", "-n", "box")[0] == 0
    assert run_p("worker", "default", "local")[0] == 0
    monkeypatch.chdir(tmp_path)
    rc, out, err = run_p("--", "echo", "here")
    assert (rc, out.strip()) == (0, b"here"), err
