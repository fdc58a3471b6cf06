"""Job environment variables: values reach the job exactly and are never recorded or shown."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import uuid
from pathlib import Path

import pytest
from helpers import retry_until, run_p

SECRET = "s3cr3t value with 'quotes' \"dq\" $HOME ; * ü\nsecond line"


@pytest.fixture(params=["ssh", "local"])
def target(request, tmp_path, monkeypatch):
    if request.param == "ssh":
        request.getfixturevalue("ssh_client_config")
        sshd = request.getfixturevalue("sshd")
        assert run_p("worker", "register", "testworker", "-n", "tw")[0] == 0
        name, p_home = ["tw"], sshd.worker_home / ".p"
    else:
        name, p_home = [], Path.home() / ".p"
    (tmp_path / "f").write_text("x")
    monkeypatch.chdir(tmp_path)
    return name, p_home


def test_values_reach_the_job_and_stay_secret(target, tmp_path, isolated_home, monkeypatch):
    words, p_home = target
    env_file = tmp_path.parent / "job.env"
    env_file.write_text("# comment\nFROM_FILE=file value\nOVERRIDDEN=from file\n")
    monkeypatch.setenv("FROM_HERE", "local value")
    script = "import os, json; print(json.dumps({k: os.environ.get(k) for k in "
    script += "['SECRET', 'FROM_FILE', 'OVERRIDDEN', 'FROM_HERE', 'P_START_ENV']}))"
    rc, out, err = run_p("-e", f"SECRET={SECRET}", "--env-file", str(env_file), "-e", "OVERRIDDEN=cli",
                         "-e", "FROM_HERE", *words, "--", "python3", "-c", script)
    assert rc == 0, err
    seen = json.loads(out.decode().replace("\r\n", "\n"))
    assert seen == {"SECRET": SECRET, "FROM_FILE": "file value", "OVERRIDDEN": "cli",
                    "FROM_HERE": "local value", "P_START_ENV": None}
    job_id = next((isolated_home / ".local/share/p/jobs").glob("*.json")).stem
    record = (isolated_home / f".local/share/p/jobs/{job_id}.json").read_text()
    assert "s3cr3t" not in record and json.loads(record)["env_names"] == [
        "FROM_FILE", "FROM_HERE", "OVERRIDDEN", "SECRET"]
    listed = run_p("ls", "-a", "--json")[1].decode() + run_p("ls", "-a")[1].decode()
    assert "s3cr3t" not in listed and "SECRET" in listed
    job_dir = p_home / "jobs" / job_id
    for path in job_dir.iterdir():
        if path.name not in ("env", "output.log"):  # the log holds what the job itself printed
            assert b"s3cr3t" not in path.read_bytes(), path
    env_path = job_dir / "env"
    assert stat.S_IMODE(env_path.stat().st_mode) == 0o600
    tmux_env = subprocess.run(["tmux", "-S", str(p_home / "tmux.sock"), "show-environment", "-g"],
                              capture_output=True, text=True).stdout
    assert "P_START_ENV" not in tmux_env and "s3cr3t" not in tmux_env
    rc, out, err = run_p(*words, "--", "sh", "-c", 'echo "[${SECRET:-unset}]"')
    assert out.strip() == b"[unset]"  # the next job does not inherit it
    assert run_p("rm", job_id)[0] == 0
    assert not env_path.exists()


def test_bad_env_options(target):
    words, _ = target
    for args, fragment in ((["-e", "1BAD=x"], "bad environment variable name"),
                           (["-e", "NOT_SET_ANYWHERE_P"], "is not set here"),
                           (["-e", "P_JOB_ID=x"], "p's own"),
                           (["--env-file", "/nonexistent/env"], "cannot read env file"),
                           (["-e"], "needs a value")):
        rc, out, err = run_p(*words, *args, "--", "true")
        assert rc == 2 and fragment in err.decode(), (args, err)


def test_values_are_not_on_any_command_line(target, isolated_home):
    """The local worker gets the script as `sh -c <script>`, an SSH worker its agent calls and rsync
    over ssh (the sshd is on this machine, so the worker's side shows in /proc too): the value must be
    on none of those command lines while the job starts."""
    words, _ = target
    value = f"zz-{uuid.uuid4().hex}-zz"  # other tests may run at the same time
    typed = f"\0-e\0TOKEN={value}\0".encode()
    proc = subprocess.Popen(["p", "-d", "-e", f"TOKEN={value}", *words, "--", "sleep", "2"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    seen, agents = [], set()

    def scan():
        for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
            try:
                text = cmdline.read_bytes()
            except OSError:
                continue
            # p's own argv was typed by the user (-e NAME keeps a value off it); a child p has just
            # forked shows that same argv until it execs, so only other command lines count
            if value.encode() in text and typed not in text:
                seen.append((cmdline, text))
            if b"p-agent\0" in text or b"p-agent run-job" in text:
                agents.add(text)
        return proc.poll() is not None

    retry_until(scan, timeout=30, interval=0.01)
    assert proc.returncode == 0, proc.stderr.read()
    assert not seen
    job_id = proc.stdout.read().decode().strip().encode()
    assert any(job_id in text for text in agents), agents  # the scan did see the worker's side
    assert os.environ.get("TOKEN") is None


def agent_statusline(p_home: Path, job_id: str) -> str:
    """What the job's tmux status bar shows: the agent's `statusline` verb, run as the worker would
    (the sshd's worker is this machine's user with another HOME)."""
    done = subprocess.run(["sh", str(p_home / "bin/p-agent"), "statusline", f"p-{job_id[:8]}"],
                          env={**os.environ, "HOME": str(p_home.parent)}, capture_output=True, timeout=30)
    assert done.returncode == 0, done.stderr
    return done.stdout.decode()


def test_status_bar_shows_names_never_values(target, isolated_home):
    words, p_home = target
    rc, out, err = run_p("-d", "-e", "TOKEN=zz-bar-secret-zz", "--env-file", "/dev/null", *words, "--",
                         "sh", "-c", 'echo "$TOKEN" > seen; sleep 30')
    assert rc == 0, err
    job_id = out.decode().strip()
    retry_until(lambda: (p_home / "workdirs" / job_id / "seen").exists(), timeout=20)
    assert (p_home / "workdirs" / job_id / "seen").read_text() == "zz-bar-secret-zz\n"
    line = agent_statusline(p_home, job_id)
    assert "[running]" in line and 'echo "$TOKEN"' in line and "zz-bar-secret-zz" not in line, line
    status_left = subprocess.run(["tmux", "-S", str(p_home / "tmux.sock"), "show-options", "-t",
                                  f"=p-{job_id[:8]}:", "status-left"], capture_output=True, text=True)
    assert "statusline" in status_left.stdout and "zz-bar" not in status_left.stdout, status_left
    assert run_p("stop", job_id, "--timeout", "2")[0] == 0
    line = retry_until(lambda: "[exit " in (s := agent_statusline(p_home, job_id)) and s, timeout=20)
    assert "zz-bar-secret-zz" not in line, line


def test_prune_removes_the_worker_side_copy(target, isolated_home):
    words, p_home = target
    rc, out, err = run_p("-e", "TOKEN=zz-prune-secret-zz", *words, "--", "true")
    assert rc == 0, err
    [record] = (isolated_home / ".local/share/p/jobs").glob("*.json")
    env_path = p_home / "jobs" / record.stem / "env"
    assert b"zz-prune-secret-zz" in env_path.read_bytes()
    rc, out, err = run_p("prune")
    assert rc == 0, err
    assert not env_path.exists() and not env_path.parent.exists()
    assert not record.exists()
