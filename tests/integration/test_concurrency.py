"""Many p processes at once against one worker: nothing lost, nothing mixed up."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

from helpers import p_executable, retry_until, run_p
from support.processes import pids_with_home


def comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return ""


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


def _tree(root, dirs: int, files: int) -> None:
    for d in range(dirs):
        sub = root / f"d{d:03}"
        sub.mkdir(parents=True)
        for f in range(files):
            (sub / f"f{f:03}").write_bytes(os.urandom(1024))


def _same_tree(a, b) -> bool:
    listing = lambda root: sorted(p.relative_to(root) for p in root.rglob("*"))  # noqa: E731
    if listing(a) != listing(b):
        return False
    return all((a / rel).read_bytes() == (b / rel).read_bytes()
               for rel in listing(a) if (a / rel).is_file())


def test_prune_while_a_job_is_being_started(ssh_client_config, sshd, isolated_home, tmp_path,
                                            monkeypatch):
    """The new job syncs as a delta from an earlier job's workdir; `p prune` removes that earlier job
    in the middle of the sync. The new job is untouched: it starts, with a complete workdir."""
    assert run_p("worker", "register", "testworker", "-n", "tw")[0] == 0
    tree = tmp_path / "tree"
    _tree(tree, dirs=80, files=150)  # 12,000 files: a sync that takes a moment even as a delta
    (tree / ".pignore").write_text("")
    monkeypatch.chdir(tree)
    rc, first, err = run_p("-d", "--yes", "--", "true", timeout=240)
    assert rc == 0, err
    first = first.decode().strip()
    workdirs = sshd.worker_home / ".p/workdirs"
    retry_until(lambda: json.loads(run_p("ls", "-a", "--json")[1])[0]["status"] == "done", timeout=30)

    caught = False
    for _attempt in range(3):  # until `p prune` lands while the sync is under way
        proc = subprocess.Popen([p_executable(), "-d", "--yes", "--", "true"], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 120
        new, paused = None, []
        while time.monotonic() < deadline and proc.poll() is None:
            new = next((p for p in workdirs.iterdir() if p.name != first and (p / "d005/f000").exists()),
                       None) if workdirs.exists() else None
            if new:
                # The worker's rsync (receiver and generator) pause: they copy from the base by
                # themselves, so pausing the client would not stop them.
                paused = [pid for pid in pids_with_home(sshd.worker_home) if comm(pid) == "rsync"]
                for pid in paused:
                    os.kill(pid, signal.SIGSTOP)
                break
            time.sleep(0.005)
        caught = new is not None and not (new / "d079/f149").exists()
        try:
            if caught:
                rc, out, err = run_p("prune", timeout=60)
                assert rc == 0, err
                assert b"removed 1 job" in out
                assert not (workdirs / first).exists()  # the delta base is gone, mid-sync
        finally:
            for pid in paused:
                os.kill(pid, signal.SIGCONT)
        rc = proc.wait(timeout=240)
        out, err = proc.stdout.read().decode(), proc.stderr.read().decode()
        assert rc == 0, err
        if caught:
            break
        first = out.strip()  # missed the moment: this job is the next one's base; try again
    assert caught, "the sync finished before p prune could run beside it (three times)"
    job = out.strip()
    assert _same_tree(tree, workdirs / job)
    [record] = [j for j in json.loads(run_p("ls", "-a", "--json")[1]) if j["id"] == job]
    assert record["status"] in ("running", "done"), record
