"""The main path over a real loopback sshd: register, `p -- cmd` streaming, -d, exit codes, argv exactness."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from helpers import retry_until, run_p

from p_tasks.watch import is_watched

ARGS = ["a b", "'quoted'", '"dq"', "$HOME", "a;b", "*", "line1\nline2", "ünïcødé ✓", "", "back\\slash", "-n"]


@pytest.fixture
def worker(ssh_client_config, tmp_path, monkeypatch):
    """A registered worker 'tw' (via the ssh_config alias) and a small project as the CWD."""
    rc, out, err = run_p("worker", "register", ssh_client_config.alias, "-n", "tw")
    assert rc == 0, err
    project = tmp_path / "proj dir ü"
    project.mkdir()
    (project / "input.txt").write_text("payload\n")
    monkeypatch.chdir(project)
    return "tw"


def test_register_probes_and_becomes_default(worker, isolated_home):
    rc, out, err = run_p("worker", "ls")
    assert rc == 0 and "tw" in out.decode() and "testworker" in out.decode()
    config = (isolated_home / ".config/p/config.yaml").read_text()
    assert "default_worker: tw" in config and "connection: testworker" in config


def test_streamed_job_returns_exit_code_and_output(worker, sshd):
    rc, out, err = run_p("--", "sh", "-c", "cat input.txt; echo on-worker; exit 3")
    assert rc == 3, err
    assert out.replace(b"\r\n", b"\n") == b"payload\non-worker\n"
    assert list((sshd.worker_home / ".p/workdirs").iterdir())


def test_argv_is_passed_byte_exact(worker):
    script = "import sys, json; sys.stdout.write(json.dumps(sys.argv[1:]))"
    rc, out, err = run_p("--", "python3", "-c", script, *ARGS)
    assert rc == 0, err
    assert json.loads(out.decode()) == ARGS


def test_single_argument_is_a_shell_line(worker):
    rc, out, err = run_p("--", "echo one && echo two; exit 4")
    assert rc == 4
    assert out.replace(b"\r\n", b"\n") == b"one\ntwo\n"


def test_detach_prints_only_the_id_and_records_the_job(worker, isolated_home):
    rc, out, err = run_p("-d", "--", "sleep", "1")
    assert rc == 0, err
    job_id = out.decode().strip()
    assert len(job_id) == 36 and out.decode().count("\n") == 1
    record = json.loads((isolated_home / f".local/share/p/jobs/{job_id}.json").read_text())
    assert record["status"] == "running" and record["worker"] == "tw"
    assert record["argv"] == ["sleep", "1"] and record["schema_version"] == 1


def test_no_sync_runs_in_worker_home(worker, sshd):
    rc, out, err = run_p("-n", "--", "pwd")
    assert rc == 0, err
    assert out.decode().strip() == str(sshd.worker_home)


def test_git_dir_reaches_worker(worker, sshd):
    subprocess.run(["git", "init", "-q"], check=True)
    identity = ["-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(["git", *identity, "commit", "-q", "--allow-empty", "-m", "x"], check=True)
    head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    rc, out, err = run_p("--", "git", "rev-parse", "HEAD")
    assert rc == 0, err
    assert out.decode().strip() == head


def test_tty_inside_job(worker):
    rc, out, err = run_p("--", "sh", "-c", "test -t 1 && echo tty")
    assert (rc, out.strip()) == (0, b"tty")


def test_big_line_and_invalid_utf8_survive(worker):
    script = "import sys; sys.stdout.buffer.write(b'x' * 5_000_000 + b'\\xff\\xfe\\x80end\\n')"
    rc, out, err = run_p("--", "python3", "-c", script)
    assert rc == 0, err
    assert out.replace(b"\r\n", b"\n") == b"x" * 5_000_000 + b"\xff\xfe\x80end\n"


def test_unknown_worker_is_one_line(worker):
    rc, out, err = run_p("nosuch", "--", "true")
    assert rc == 2 and err.decode().count("\n") == 1
    assert "worker 'nosuch' is not registered" in err.decode()


def test_worker_with_broken_tmux_refused_at_run(worker, sshd):
    bin_dir = sshd.worker_home / "fakebin"
    bin_dir.mkdir()
    (sshd.worker_home / ".bashrc").write_text(f'export PATH="{bin_dir}:$PATH"\n')
    (bin_dir / "tmux").write_text("#!/bin/sh\necho 'tmux: not here' >&2; exit 127\n")
    (bin_dir / "tmux").chmod(0o755)
    rc, out, err = run_p("--", "true")
    assert rc == 1
    assert err.decode() == "p: tmux on worker 'tw' does not run (`tmux -V` failed); reinstall it there\n"
    assert not (sshd.worker_home / ".p/jobs").exists() or not list((sshd.worker_home / ".p/jobs").iterdir())


def test_worker_without_rsync_refused_but_no_sync_works(worker, sshd):
    bin_dir = sshd.worker_home / "fakebin"
    bin_dir.mkdir()
    (sshd.worker_home / ".bashrc").write_text(f'export PATH="{bin_dir}:$PATH"\n')
    (bin_dir / "rsync").write_text("#!/bin/sh\necho 'rsync: command not found' >&2; exit 127\n")
    (bin_dir / "rsync").chmod(0o755)
    rc, out, err = run_p("--", "true")
    assert rc == 1 and "rsync on worker 'tw' does not run" in err.decode()
    rc, out, err = run_p("-n", "--", "echo", "fine")
    assert (rc, out.strip()) == (0, b"fine"), err


def test_job_record_finished(worker, isolated_home):
    rc, out, err = run_p("--", "true")
    assert rc == 0
    records = [json.loads(p.read_text()) for p in (isolated_home / ".local/share/p/jobs").glob("*.json")]
    assert [r["status"] for r in records] == ["done"] and records[0]["exit_code"] == 0
    assert records[0]["ended_at"] >= records[0]["started_at"]


def test_workdir_isolated_per_job(worker, sshd):
    for _ in range(2):
        assert run_p("-d", "--", "true")[0] == 0
    workdirs = list((sshd.worker_home / ".p/workdirs").iterdir())
    assert len(workdirs) == 2
    retry_until(lambda: all((w / "input.txt").exists() for w in workdirs))
    assert Path(workdirs[0]).name != Path(workdirs[1]).name


def test_noisy_login_shell_does_not_corrupt_agent_replies(worker, sshd):
    (sshd.worker_home / ".bashrc").write_text("echo 'Welcome to buildbox'\necho oops >&2\n")
    rc, out, err = run_p("-n", "--", "sh", "-c", "exit 5")
    assert rc == 5, err
    rc, out, err = run_p("--", "true")
    assert rc == 1
    assert "the worker's shell prints output at login" in err.decode()
    assert err.decode().count("\n") == 1


def test_delta_base_is_copied_not_linked(worker, sshd):
    """Jobs from the same CWD share no inode: rewriting a file in place changes only that job's copy."""
    (Path.cwd() / "big.bin").write_bytes(b"A" * 1_000_000)
    first = run_p("-d", "--", "true")[1].decode().strip()
    rewrite = "printf B >> big.bin; printf C | dd of=input.txt conv=notrunc 2>/dev/null"
    rc, out, err = run_p("--debug", "--", "sh", "-c", rewrite)
    assert rc == 0, err
    assert f"--copy-dest=../{first}/" in err.decode()  # the delta base is the previous workdir
    workdirs = sshd.worker_home / ".p/workdirs"
    second = next(d for d in workdirs.iterdir() if d.name != first)
    assert (workdirs / first / "big.bin").read_bytes() == b"A" * 1_000_000
    assert (workdirs / first / "input.txt").read_text() == "payload\n"
    assert (second / "big.bin").read_bytes() == b"A" * 1_000_000 + b"B"
    assert (workdirs / first / "big.bin").stat().st_ino != (second / "big.bin").stat().st_ino


# -- p worker default / p worker rm ----------------------------------------------------------------

def config_bytes(home: Path) -> bytes:
    return (home / ".config/p/config.yaml").read_bytes()


def register_more(*names: str) -> None:
    """More workers on the same sshd (through the same alias), registered after 'tw'."""
    for name in names:
        rc, out, err = run_p("worker", "register", "testworker", "-n", name)
        assert rc == 0, err


def workers_json() -> list[dict]:
    rc, out, err = run_p("worker", "ls", "--json")
    assert rc == 0, err
    return json.loads(out)


def default_worker() -> str:
    return next(w["name"] for w in workers_json() if w["default"])


def test_worker_default_switches_is_saved_and_used(worker, isolated_home):
    register_more("tw2")
    assert default_worker() == "tw"  # the first registered one stays the default
    rc, out, err = run_p("worker", "default", "tw2")
    assert rc == 0 and err == b"default worker is now 'tw2'\n", err
    assert "default_worker: tw2\n" in (isolated_home / ".config/p/config.yaml").read_text()
    assert default_worker() == "tw2"
    job_id = run_p("-d", "-n", "--", "true")[1].decode().strip()
    assert json.loads((isolated_home / f".local/share/p/jobs/{job_id}.json").read_text())["worker"] == "tw2"


def test_worker_rm_refused_while_a_job_is_unfinished(worker, isolated_home, tmp_path):
    register_more("tw2")
    go = tmp_path / "go"
    waits = run_p("tw2", "-d", "-n", "--", "sh", "-c", f"while [ ! -e {go} ]; do sleep 0.1; done; exit 4")
    sleeps = run_p("tw2", "-d", "-n", "--", "sleep", "60")
    assert waits[0] == 0 and sleeps[0] == 0, (waits, sleeps)
    ending, stopping = waits[1].decode().strip(), sleeps[1].decode().strip()
    before = config_bytes(isolated_home)

    rc, out, err = run_p("worker", "rm", "tw2")
    line = err.decode()
    assert rc == 2 and line.count("\n") == 1, line
    assert "worker 'tw2' has unfinished jobs" in line and ending[:8] in line and stopping[:8] in line
    assert "p stop" in line
    assert config_bytes(isolated_home) == before

    go.touch()  # the first job ends by itself: the watcher records it
    record = isolated_home / f".local/share/p/jobs/{ending}.json"
    retry_until(lambda: json.loads(record.read_text())["status"] == "done", 15)
    rc, out, err = run_p("worker", "rm", "tw2")
    assert rc == 2 and ending[:8] not in err.decode() and stopping[:8] in err.decode(), err
    assert config_bytes(isolated_home) == before

    assert run_p("stop", stopping)[0] == 0
    rc, out, err = run_p("worker", "rm", "tw2")
    assert rc == 0 and err == b"removed worker 'tw2'\n", err
    assert [w["name"] for w in workers_json()] == ["local", "tw"]


def test_worker_rm_sees_an_end_nobody_recorded(worker, isolated_home, tmp_path):
    """A record left `running` (its watcher gone) is checked with the worker, as `p ls` would."""
    job_id = run_p("-d", "-n", "--", "true")[1].decode().strip()
    record = isolated_home / f".local/share/p/jobs/{job_id}.json"
    retry_until(lambda: json.loads(record.read_text())["status"] == "done", 15)
    retry_until(lambda: not is_watched("tw"), 15)  # its watcher has exited: nobody would notice
    data = json.loads(record.read_text())
    record.write_text(json.dumps({**data, "status": "running", "exit_code": None, "ended_at": None}))
    (record.parent / "active" / job_id).touch()  # the store's index of unfinished jobs
    rc, out, err = run_p("worker", "rm", "tw")
    assert rc == 0 and err.startswith(b"removed worker 'tw'"), err
    assert json.loads(record.read_text())["status"] == "done"


def test_worker_rm_of_the_default_makes_the_next_one_default(worker, isolated_home):
    register_more("tw2", "tw3")
    rc, out, err = run_p("worker", "rm", "tw")
    assert rc == 0 and err == b"removed worker 'tw'; the default worker is now 'tw2'\n", err
    assert default_worker() == "tw2"
    rc, out, err = run_p("worker", "rm", "tw3")  # not the default: the default stays
    assert rc == 0 and err == b"removed worker 'tw3'\n", err
    rc, out, err = run_p("worker", "rm", "tw2")
    assert rc == 0 and err == b"removed worker 'tw2'; the default worker is now 'local'\n", err
    assert "default_worker" not in (isolated_home / ".config/p/config.yaml").read_text()
    assert [(w["name"], w["default"]) for w in workers_json()] == [("local", True)]
    register_more("again")  # the first worker registered after that is the default again
    assert default_worker() == "again"


@pytest.mark.parametrize("argv, message", [
    (["worker", "rm", "nosuch"], "p: worker 'nosuch' is not registered; see `p worker ls`\n"),
    (["worker", "default", "nosuch"], "p: worker 'nosuch' is not registered; see `p worker ls`\n"),
    (["worker", "rm", "local"], "p: `local` is built in and cannot be removed; "
                                "`p worker default <name>` makes another worker the default\n"),
])
def test_worker_rm_and_default_refusals_are_one_line_and_keep_the_config(worker, isolated_home, argv,
                                                                          message):
    before = config_bytes(isolated_home)
    rc, out, err = run_p(*argv)
    assert (rc, out, err.decode()) == (2, b"", message)
    assert config_bytes(isolated_home) == before
