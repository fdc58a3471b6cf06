"""Faults: the job survives, and p tells the truth (network drops, killed clients, vanished jobs)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

from helpers import p_executable, retry_until, run_p


def records(home: Path) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in (home / ".local/share/p/jobs").glob("*.json")}


def age(home: Path, job_id: str, seconds: float) -> None:
    """Pretend the record was written `seconds` ago (the `starting` grace period has passed)."""
    path = home / f".local/share/p/jobs/{job_id}.json"
    stamp = time.time() - seconds
    os.utime(path, (stamp, stamp))


def register(sshd_alias: str = "testworker") -> None:
    rc, _, err = run_p("worker", "register", sshd_alias, "-n", "tw")
    assert rc == 0, err


def test_network_drop_while_attached(ssh_client_config, sshd, terminal, tmp_path, isolated_home):
    register()
    t = terminal("p tw -- sh -c 'echo working; sleep 20; exit 0'", cwd=tmp_path)
    t.wait_for("working")
    sshd.stop(drop_sessions=True)
    try:
        t.wait_for("lost", timeout=30)
        status = t.exit_status(timeout=10)
        assert status != 0
        screen = t.capture()
        job = next(iter(records(isolated_home).values()))
        assert f"connection to tw lost; job {job['id'][:8]} keeps running; reattach with `p attach" in \
            screen.replace("\n", "")
    finally:
        sshd.start()
    rc, out, err = run_p("ls")
    assert rc == 0 and "running" in out.decode(), (out, err)


def test_client_killed_during_sync_leaves_no_running_record(ssh_client_config, sshd, tmp_path,
                                                             isolated_home, monkeypatch):
    register()
    big = tmp_path / "big"
    big.mkdir()
    for i in range(40):
        (big / f"f{i}").write_bytes(os.urandom(1 << 20))
    monkeypatch.chdir(big)
    env = dict(os.environ)
    proc = subprocess.Popen([p_executable(), "-d", "--", "true"], env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # kill p (and its rsync) once the sync has begun on the worker
    retry_until(lambda: any((sshd.worker_home / ".p/workdirs").glob("*"))
                if (sshd.worker_home / ".p/workdirs").exists() else False, timeout=20, interval=0.01)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    (job_id, record), = records(isolated_home).items()
    assert record["status"] == "starting"
    age(isolated_home, job_id, 600)
    rc, out, err = run_p("ls", "-a", "--json")
    assert rc == 0
    assert [j["status"] for j in json.loads(out)] == ["failed"]
    rc, out, err = run_p("prune")
    assert rc == 0, err
    assert not (sshd.worker_home / ".p/workdirs" / job_id).exists()


def killing_wrapper(bin_dir: Path, tool: str, when: str, after: bool) -> dict[str, str]:
    """An env whose PATH puts a `tool` first that, when its arguments contain `when` (a word, or ""
    for any call but --version), SIGKILLs its whole process group: p and everything it started, as a
    closed laptop lid or `kill -9` would. `after`: once the real tool has finished; else instead."""
    bin_dir.mkdir(exist_ok=True)
    real = subprocess.run(["sh", "-c", f"command -v {tool}"], capture_output=True, text=True).stdout.strip()
    script = bin_dir / tool
    kill = f'case " $* " in *" --version "*) ;; *"{when}"*) kill -KILL 0 ;; esac\n'
    script.write_text(
        "#!/bin/sh\n"
        + ("" if after else kill)
        + f"'{real}' \"$@\"\n"
        + "rc=$?\n"
        + (kill if after else "")
        + 'exit "$rc"\n'
    )
    script.chmod(0o755)
    return {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}


def test_client_killed_between_sync_and_start(ssh_client_config, sshd, tmp_path, isolated_home,
                                              monkeypatch):
    """SIGKILL right after rsync finished, before the agent's start: no job runs on the worker, the
    record never says running, and the complete but unused workdir is pruned, not leaked."""
    register()
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "f.txt").write_text("synced\n")
    env = killing_wrapper(tmp_path / "bin", "rsync", "", after=True)
    proc = subprocess.run([p_executable(), "-d", "--", "sleep", "30"], cwd=tree, env=env,
                          start_new_session=True, capture_output=True, timeout=60)
    assert proc.returncode == -signal.SIGKILL, proc
    (job_id, record), = records(isolated_home).items()
    assert record["status"] == "starting"
    assert (sshd.worker_home / ".p/workdirs" / job_id / "f.txt").read_text() == "synced\n"
    assert not (sshd.worker_home / ".p/jobs" / job_id).exists()  # never started
    age(isolated_home, job_id, 600)
    rc, out, err = run_p("ls", "-a", "--json")
    assert [j["status"] for j in json.loads(out)] == ["failed"], err
    rc, out, err = run_p("prune")
    assert rc == 0, err
    assert not (sshd.worker_home / ".p/workdirs" / job_id).exists()
    assert records(isolated_home) == {}


def test_client_killed_after_start_while_streaming(ssh_client_config, sshd, tmp_path, isolated_home):
    """SIGKILL once the job runs and p streams its output: the job runs on, and p knows it."""
    register()
    env = killing_wrapper(tmp_path / "bin", "ssh", " sh -s ", after=False)
    proc = subprocess.run([p_executable(), "--", "sh", "-c", "sleep 3; echo finished"], cwd=tmp_path,
                          env=env, start_new_session=True, capture_output=True, timeout=60)
    assert proc.returncode == -signal.SIGKILL, proc
    (job_id, record), = records(isolated_home).items()
    assert record["status"] in ("starting", "running")
    rc, out, err = run_p("ls", "--json")
    assert [j["id"] for j in json.loads(out)] == [job_id], err
    rc, out, err = run_p("logs", "-f", job_id, timeout=30)
    assert rc == 0 and b"finished" in out, err
    assert json.loads(run_p("ls", "-a", "--json")[1])[0]["status"] == "done"


def test_client_killed_after_start_job_known_and_running(ssh_client_config, sshd, tmp_path,
                                                         isolated_home, monkeypatch):
    """Killed between the worker's start and the record update: the job is reconciled, not lost."""
    register()
    monkeypatch.chdir(tmp_path)
    rc, out, err = run_p("-d", "--", "sleep", "30")
    job_id = out.decode().strip()
    path = isolated_home / f".local/share/p/jobs/{job_id}.json"
    record = json.loads(path.read_text())
    record["status"], record["started_at"] = "starting", None  # as if p died right after `start`
    path.write_text(json.dumps(record))
    age(isolated_home, job_id, 600)
    rc, out, err = run_p("ls", "--json")
    assert [j["status"] for j in json.loads(out)] == ["running"], err


def test_tmux_server_killed_job_becomes_failed(ssh_client_config, sshd, tmp_path, isolated_home,
                                              monkeypatch):
    register()
    monkeypatch.chdir(tmp_path)
    rc, out, err = run_p("-d", "--", "sleep", "60")
    job_id = out.decode().strip()
    sock = sshd.worker_home / ".p" / "tmux.sock"
    retry_until(sock.exists, timeout=10)
    subprocess.run(["tmux", "-S", str(sock), "kill-server"], check=True)

    def settled():
        jobs = json.loads(run_p("ls", "-a", "--json")[1])
        return jobs and jobs[0]["id"] == job_id and jobs[0]["status"] == "failed"

    retry_until(settled, timeout=30, interval=1)
    rc, out, _ = run_p("ls", "-a")
    assert "failed" in out.decode()


def test_corrupt_record_is_named_and_others_listed(ssh_client_config, tmp_path, isolated_home,
                                                   monkeypatch):
    register()
    monkeypatch.chdir(tmp_path)
    good = run_p("-d", "--", "true")[1].decode().strip()
    bad = isolated_home / ".local/share/p/jobs/0badc0de-0000-4000-8000-000000000000.json"
    bad.write_text('{"id": "0badc0de-0000-4000-8000-000000000000", "wor')
    rc, out, err = run_p("ls", "-a")
    assert rc == 0 and good[:8] in out.decode()
    assert str(bad) in err.decode() and bad.exists()
