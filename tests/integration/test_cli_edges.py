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


# -- what a first try from the README ran into ------------------------------------------------------

def detached_local(*command: str) -> str:
    rc, out, err = run_p("-d", "-n", "--", *command)
    assert rc == 0, err
    return out.decode().strip()


def record_of(home, job_id: str) -> dict:
    return json.loads((home / f".local/share/p/jobs/{job_id}.json").read_text())


def wait_ended(home, job_id: str) -> dict:
    deadline = time.monotonic() + 20
    while record_of(home, job_id)["status"] in ("starting", "running", "unknown"):
        assert time.monotonic() < deadline, record_of(home, job_id)
        run_p("ls")
        time.sleep(0.2)
    return record_of(home, job_id)


def test_tail_that_is_not_a_number_is_a_usage_error(isolated_home, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    job_id = detached_local("echo", "hi")
    for value in ("abc", "-5", "1.5"):
        rc, out, err = run_p("logs", "--tail", value, job_id[:8])
        assert (rc, out, err.decode()) == (2, b"", f"p: --tail needs a number of lines >= 0, not '{value}'\n")


def test_debug_before_or_after_a_subcommand_with_an_argument(isolated_home, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    job_id = detached_local("echo", "hi")
    wait_ended(isolated_home, job_id)
    for argv in (["--debug", "logs", job_id[:8]], ["logs", job_id[:8], "--debug"],
                 ["logs", "--debug", "--tail", "1", job_id[:8]]):
        rc, out, err = run_p(*argv)
        assert (rc, out.replace(b"\r\n", b"\n")) == (0, b"hi\n"), (argv, err[-300:])  # a tmux pane
        assert b"No idea what" not in err


def test_output_to_a_full_device_is_one_line(isolated_home, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    job_id = detached_local("echo", "hi")
    wait_ended(isolated_home, job_id)
    for argv in (["logs", job_id[:8]], ["logs", "-f", job_id[:8]], ["ls", "-a"]):
        with open("/dev/full", "wb") as full:
            done = subprocess.run([p_executable(), *argv], stdout=full, stderr=subprocess.PIPE, timeout=60)
        assert (done.returncode, done.stderr) == (1, b"p: cannot write: No space left on device\n"), argv


def test_register_local_says_it_is_the_built_in_worker(isolated_home):
    rc, out, err = run_p("worker", "register", "local")
    assert (rc, err) == (2, b"p: worker name 'local' is the built-in worker (this machine); "
                            b"pick another with -n <name>\n")


def test_logs_follow_of_a_stopped_job_exits_with_its_code(isolated_home, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    job_id = detached_local("sleep", "60")
    assert run_p("stop", job_id[:8], "--timeout", "2")[0] == 0
    ended = wait_ended(isolated_home, job_id)
    assert (ended["status"], ended["exit_code"]) == ("stopped", 143), ended
    rc, out, err = run_p("logs", "-f", job_id[:8])
    assert rc == 143, err
