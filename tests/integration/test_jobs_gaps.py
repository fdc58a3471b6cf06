"""Job management, the points the first tests left open: the `p ls` table on a terminal and off it,
ambiguous prefixes through the CLI, byte-exact logs of a 5 MB line and invalid UTF-8, the default stop
grace, pull's default destination and symlinks, rm's freed space and an unreachable worker, prune and
`unknown` jobs, one watcher per worker, the job's command in the on_finish hook."""

from __future__ import annotations

import fcntl
import json
import os
import re
import select
import shlex
import struct
import subprocess
import sys
import termios
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest
from helpers import ls_json, p_executable, retry_until, run_p, start_detached, status_of

from p_tasks.job import DONE, RUNNING, STOPPED, UNKNOWN, Job
from p_tasks.jobctl import human_kb
from p_tasks.store import Store

ANSI = re.compile(rb"\x1b\[[0-9;]*m")
ISO_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


@pytest.fixture(params=["ssh", "local"])
def worker(request, isolated_home, monkeypatch):
    """Yields (worker name, worker-side ~/.p); the CWD is a small project under the client's HOME."""
    if request.param == "ssh":
        config = request.getfixturevalue("ssh_client_config")
        sshd = request.getfixturevalue("sshd")
        assert run_p("worker", "register", config.alias, "-n", "tw")[0] == 0
        name, p_home = "tw", sshd.worker_home / ".p"
    else:
        name, p_home = "local", isolated_home / ".p"
    project = isolated_home / "proj"
    (project / "out").mkdir(parents=True)
    (project / "out" / "artifact.bin").write_bytes(b"\x00\x01artifact")
    monkeypatch.chdir(project)
    return name, p_home


@pytest.fixture
def ssh_worker(ssh_client_config, sshd, isolated_home, monkeypatch):
    """The loopback sshd registered as `tw`; yields the sshd. The CWD is an empty project."""
    rc, _, err = run_p("worker", "register", ssh_client_config.alias, "-n", "tw")
    assert rc == 0, err
    project = isolated_home / "proj"
    project.mkdir()
    monkeypatch.chdir(project)
    return sshd


def wait_finished(job_id: str, timeout: float = 30) -> dict:
    return retry_until(lambda: (j := status_of(job_id))["status"] != "running" and j, timeout=timeout)


def run_p_tty(*args: str, env: dict[str, str] | None = None, cols: int = 200,
              timeout: float = 30) -> tuple[int, bytes, bytes]:
    """Run `p` with its stdout on a fresh pty of ``cols`` columns: (returncode, stdout with the
    pty's \\r\\n turned back into \\n, stderr)."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, cols, 0, 0))
    full_env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES", "NO_COLOR")}
    full_env.update(env or {})
    proc = subprocess.Popen([p_executable(full_env), *args], env=full_env, stdin=subprocess.DEVNULL,
                            stdout=slave, stderr=subprocess.PIPE, start_new_session=True)
    os.close(slave)
    chunks, deadline = [], time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if not select.select([master], [], [], 0.2)[0]:
                if proc.poll() is not None:
                    break
                continue
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the slave side is closed and drained
                break
            if not data:
                break
            chunks.append(data)
        err = proc.communicate(timeout=max(1, deadline - time.monotonic()))[1]
    finally:
        os.close(master)
    return proc.returncode, b"".join(chunks).replace(b"\r\n", b"\n"), err


def _procs_with(needle: bytes) -> list[tuple[int, bytes]]:
    """(pid, cmdline) of live processes whose environment holds the NUL-separated entry ``needle``."""
    found = []
    for env in Path("/proc").glob("[0-9]*/environ"):
        try:
            if needle in env.read_bytes().split(b"\0"):
                cmdline = (env.parent / "cmdline").read_bytes()
                if cmdline:  # zombies have none
                    found.append((int(env.parent.name), cmdline))
        except OSError:
            continue
    return found


def job_processes(job_id: str) -> list[bytes]:
    return [cmd for _, cmd in _procs_with(f"P_JOB_ID={job_id}".encode())]


# -- 1. p ls ----------------------------------------------------------------------------------------

NOW = time.time()
OLD = "cccccccc-0000-4000-8000-000000000001"  # ids sort the other way round from start times
MID = "bbbbbbbb-0000-4000-8000-000000000002"
NEW = "aaaaaaaa-0000-4000-8000-000000000003"
LONG = ["python3", "train.py", "--epochs", "100", "--data", "/datasets/imagenet/full/train", "--lr",
        "0.001", "--output", "/checkpoints/a-rather-long-run-name-that-does-not-fit"]


def store_listing_records(home: Path) -> None:
    """Three finished jobs (no network for `p ls -a`): under HOME, next to HOME, elsewhere."""
    store = Store()
    store.save(Job(OLD, "beefy", str(home / "projects/foo"), ["make"], status=DONE, exit_code=0,
                   started_at=NOW - 7200, ended_at=NOW - 7200 + 3723))
    store.save(Job(MID, "cloud", f"{home}x/bar", LONG, status=DONE, exit_code=3,
                   started_at=NOW - 3600, ended_at=NOW - 3600 + 59))
    store.save(Job(NEW, "beefy", "/opt/scripts", ["./bench.sh"], status=STOPPED, exit_code=143,
                   started_at=NOW - 60, ended_at=NOW - 50))


def test_ls_table_tilde_newest_first_and_h_mm_ss(isolated_home):
    store_listing_records(isolated_home)
    rc, out, err = run_p("ls", "-a")
    assert rc == 0, err
    lines = out.decode().splitlines()
    assert [line[:8] for line in lines[2:]] == [NEW[:8], MID[:8], OLD[:8]]
    new, mid, old = lines[2:]
    assert re.search(r"  ~/projects/foo  ", old) and old.endswith("done [0]  1:02:03"), old
    assert f"  {isolated_home}x/bar  " in mid and "~" not in mid  # shares HOME's prefix only
    assert mid.endswith("done [3]  0:00:59") and " ".join(LONG) in mid  # not a terminal: not cut
    assert "  /opt/scripts  " in new and new.endswith("stopped   0:00:10")
    assert b"\x1b" not in out  # not a terminal: no colour


@pytest.mark.parametrize(("env", "cols"), [({"COLUMNS": "70"}, 200), ({}, 76)])
def test_ls_on_a_terminal_cuts_the_command_to_its_width_and_colours_failures(isolated_home, env, cols):
    store_listing_records(isolated_home)
    width = int(env.get("COLUMNS", cols))
    rc, out, err = run_p_tty("ls", "-a", env=env, cols=cols)
    assert rc == 0, err
    plain = ANSI.sub(b"", out).decode().splitlines()
    assert max(len(line) for line in plain) == width, (width, plain)  # fits, and uses the width
    mid = next(line for line in plain if line.startswith(MID[:8]))
    assert "python3 tr" in mid and "…" in mid and mid.endswith("done [3]  0:00:59"), mid
    lines = out.splitlines()
    coloured = {line[5:13].decode() for line in lines if line.startswith(b"\x1b[31m")}
    assert coloured == {MID[:8], NEW[:8]}, out  # exit 3 and stopped (143); not the done [0]
    old = next(line for line in lines if OLD[:8].encode() in line)
    assert b"\x1b" not in old


def test_ls_on_a_terminal_with_no_color_has_no_escapes_but_still_fits(isolated_home):
    store_listing_records(isolated_home)
    rc, out, err = run_p_tty("ls", "-a", env={"NO_COLOR": "1", "COLUMNS": "70"})
    assert rc == 0, err
    assert b"\x1b" not in out and MID[:8].encode() in out
    assert all(len(line) <= 70 for line in out.decode().splitlines())


def test_ls_of_real_jobs_newest_first_with_tilde_and_iso_utc_stamps(worker):
    name, _ = worker
    first = start_detached(name, "sh", "-c", "sleep 1")
    wait_finished(first)
    second = start_detached(name, "true")
    wait_finished(second)
    rc, out, err = run_p("ls", "-a")
    assert rc == 0, err
    rows = out.decode().splitlines()[2:]
    assert [r[:8] for r in rows] == [second[:8], first[:8]], out
    assert all(re.search(r"  ~/proj  .*  done \[0\]  \d+:\d\d:\d\d$", r) for r in rows), rows
    assert re.search(r"  0:00:0[1-9]$", rows[1]), rows[1]  # sleep 1 on the worker's clock
    for job in ls_json("-a"):
        assert ISO_Z.match(job["started_at"]) and ISO_Z.match(job["ended_at"]), job
        began = datetime.strptime(job["started_at"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
        ended = datetime.strptime(job["ended_at"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
        assert abs(ended.timestamp() - time.time()) < 600  # UTC, not local time read as UTC
        assert abs((ended - began).total_seconds() - job["duration_s"]) <= 1
        assert job["cwd"] == str(Path.cwd())


# -- 2. ambiguous prefixes --------------------------------------------------------------------------

def test_ambiguous_prefix_names_both_jobs_in_one_line(isolated_home):
    store = Store()
    one, two = "abc11111-0000-4000-8000-000000000001", "abc22222-0000-4000-8000-000000000002"
    store.save(Job(one, "tw", "/x", ["make", "all"], status=DONE, exit_code=0, started_at=NOW))
    store.save(Job(two, "gpu", "/y", ["cargo", "test"], status=RUNNING, started_at=NOW))
    before = {p.name: p.read_bytes() for p in store.root.glob("*.json")}
    for argv in (["logs", "abc"], ["logs", "-f", "ABC"], ["attach", "abc"], ["stop", "abc"],
                 ["rm", "--force", "abc"], ["pull", "abc", "x"]):
        rc, out, err = run_p(*argv)
        text = err.decode()
        assert rc == 2 and out == b"", (argv, rc, out, err)
        assert text.count("\n") == 1 and "ambiguous" in text, (argv, text)
        assert all(s in text for s in ("abc11111", "tw", "make all", "abc22222", "gpu", "cargo test"))
    assert {p.name: p.read_bytes() for p in store.root.glob("*.json")} == before


# -- 3. byte-exact logs -----------------------------------------------------------------------------

def test_logs_are_byte_exact_for_a_5mb_line_and_invalid_utf8(worker):
    name, p_home = worker
    script = ("head -c 5000000 /dev/zero | tr '\\000' x; printf 'END\\n'; "
              "printf 'bad \\377\\376 \\300\\257 \\355\\240\\200 ok\\n'; printf 'last \\200\\n'")
    job_id = start_detached(name, "sh", "-c", script)
    assert wait_finished(job_id, timeout=120)["exit_code"] == 0
    expected = (b"x" * 5_000_000 + b"END\n" + b"bad \xff\xfe \xc0\xaf \xed\xa0\x80 ok\n" + b"last \x80\n")
    log = (p_home / "jobs" / job_id / "output.log").read_bytes()
    rc, out, err = run_p("logs", job_id[:5], timeout=120)
    assert rc == 0, err
    assert out == log  # p logs adds, drops and re-encodes nothing
    assert out.replace(b"\r\n", b"\n") == expected  # (the job's pty turns \n into \r\n)
    rc, out, err = run_p("logs", job_id, "--tail", "2")
    assert rc == 0 and out.replace(b"\r\n", b"\n") == expected.split(b"END\n")[1], (out, err)


# -- 4. stop's default grace ------------------------------------------------------------------------

def test_stop_without_timeout_waits_the_default_10s_grace_then_kills(ssh_worker):
    # trap with a handler: SIGTERM is caught, said, and ignored; the loop goes on
    job_id = start_detached("tw", "sh", "-c",
                            "trap 'echo got-term' TERM; echo ready; while :; do sleep 0.2; done")
    log = ssh_worker.worker_home / ".p/jobs" / job_id / "output.log"
    retry_until(lambda: b"ready" in log.read_bytes(), timeout=20, ignore=(FileNotFoundError,))
    started = time.monotonic()
    rc, out, err = run_p("stop", job_id[:8], timeout=120)
    took = time.monotonic() - started
    assert rc == 0 and b"stopped job" in out, err
    assert took >= 9, took  # SIGKILL only after the 10 s grace
    assert took < 60, took  # loose: the machine is shared
    assert job_processes(job_id) == []
    job = status_of(job_id)
    assert job["status"] == "stopped" and job["exit_code"] == 137, job  # killed, not ended by TERM
    assert b"got-term" in log.read_bytes()


# -- 5. pull ----------------------------------------------------------------------------------------

def test_pull_without_dest_lands_under_its_basename_with_symlinks_as_links(worker, tmp_path):
    name, _ = worker
    job_id = start_detached(name, "sh", "-c", "mkdir -p res/sub && echo result > res/r.txt && "
                   "echo deep > res/sub/d.txt && ln -s r.txt res/link && ln -s /etc res/escape")
    assert wait_finished(job_id)["exit_code"] == 0
    here = tmp_path / "dl"
    here.mkdir()
    rc, out, err = run_p("pull", job_id, "res", cwd=here)
    assert rc == 0, err
    rc, out, err = run_p("pull", job_id, "out/artifact.bin", cwd=here)
    assert rc == 0, err
    assert sorted(p.name for p in here.iterdir()) == ["artifact.bin", "res"]
    assert (here / "artifact.bin").read_bytes() == b"\x00\x01artifact"
    res = here / "res"
    assert (res / "r.txt").read_text() == "result\n" and (res / "sub/d.txt").read_text() == "deep\n"
    assert (res / "link").is_symlink() and os.readlink(res / "link") == "r.txt"
    # a link pointing out of the tree is neither followed nor recreated (rsync --safe-links)
    assert not os.path.lexists(res / "escape")
    assert sorted(p.name for p in res.iterdir()) == ["link", "r.txt", "sub"]
    # a trailing slash still means the directory itself, under its own name
    there = tmp_path / "dl2"
    there.mkdir()
    rc, out, err = run_p("pull", job_id, "res/", cwd=there)
    assert rc == 0, err
    assert [p.name for p in there.iterdir()] == ["res"] and (there / "res/link").is_symlink()


# -- 6. rm ------------------------------------------------------------------------------------------

def du_kb(path: Path) -> int:
    return int(subprocess.run(["du", "-sk", str(path)], capture_output=True, text=True,
                              check=True).stdout.split()[0])


def test_rm_reports_the_worker_disk_it_freed(worker):
    name, p_home = worker
    job_id = start_detached(name, "sh", "-c", "head -c 3000000 /dev/urandom > big.bin")
    assert wait_finished(job_id)["exit_code"] == 0
    dirs = [p_home / "jobs" / job_id, p_home / "workdirs" / job_id]
    expected = human_kb(sum(du_kb(d) for d in dirs))
    rc, out, err = run_p("rm", job_id[:8])
    assert rc == 0, err
    assert out.decode() == f"removed job {job_id[:8]} (freed {expected} on {name})\n"
    size, unit = re.search(r"freed ([\d.]+) (MB|GB)", out.decode()).groups()
    assert float(size) * {"MB": 1e6, "GB": 1e9}[unit] >= 2.9e6
    assert not any(d.exists() for d in dirs) and ls_json("-a") == []


def test_rm_on_an_unreachable_worker_fails_in_one_line_and_keeps_everything(ssh_worker, isolated_home):
    job_id = start_detached("tw", "true")
    wait_finished(job_id)
    record = isolated_home / ".local/share/p/jobs" / f"{job_id}.json"
    kept = record.read_bytes()
    ssh_worker.stop(drop_sessions=True)
    try:
        rc, out, err = run_p("rm", "--force", job_id)
        assert rc == 1 and out == b"", (rc, out, err)
        assert err.decode().count("\n") == 1 and "'tw'" in err.decode(), err
        assert record.read_bytes() == kept
    finally:
        ssh_worker.start()
    assert (ssh_worker.worker_home / ".p/workdirs" / job_id).exists()
    rc, out, err = run_p("rm", job_id)
    assert rc == 0 and not record.exists(), err
    assert not (ssh_worker.worker_home / ".p/workdirs" / job_id).exists()


# -- 7. prune and unknown jobs ----------------------------------------------------------------------

def test_prune_leaves_unknown_jobs_unless_forced_and_never_running_ones(worker):
    name, p_home = worker
    done = start_detached(name, "true")
    missed = start_detached(name, "true")
    running = start_detached(name, "sleep", "120")
    for job_id in (done, missed):
        wait_finished(job_id)
    # `missed`: its end was not noticed (client offline, watcher gone): the record says unknown
    store = Store()
    job = store.load(missed)
    job.status, job.exit_code, job.ended_at = UNKNOWN, None, None
    store.save(job)

    rc, out, err = run_p("prune", "--dry-run")
    assert rc == 0 and done[:8] in out.decode(), err
    assert missed[:8] not in out.decode() and running[:8] not in out.decode()
    rc, out, err = run_p("prune")
    assert rc == 0, err
    # (the store read directly: `p ls` would reconcile the unknown job)
    assert {j.id: j.status for j in store.jobs()} == {missed: UNKNOWN, running: RUNNING}
    assert not (p_home / "workdirs" / done).exists()
    assert (p_home / "jobs" / missed).exists() and (p_home / "workdirs" / missed).exists()

    rc, out, err = run_p("prune", "--dry-run", "--force")
    assert rc == 0 and missed[:8] in out.decode() and running[:8] not in out.decode(), err
    assert (p_home / "workdirs" / missed).exists()
    rc, out, err = run_p("prune", "--force")
    assert rc == 0 and "removed 1 job(s)" in out.decode(), (out, err)
    assert [j.id for j in store.jobs()] == [running]
    assert not (p_home / "jobs" / missed).exists() and not (p_home / "workdirs" / missed).exists()
    assert job_processes(running) and (p_home / "workdirs" / running).exists()
    assert run_p("rm", "--force", running)[0] == 0


# -- 8. one watcher per worker ----------------------------------------------------------------------

def watchers(home: Path, worker_name: str) -> list[int]:
    """Pids of live `python -m p_tasks.watch WORKER` processes of this client (its HOME)."""
    return [pid for pid, cmd in _procs_with(f"HOME={home}".encode())
            if cmd.rstrip(b"\0").split(b"\0")[-3:] == [b"-m", b"p_tasks.watch", worker_name.encode()]]


def test_the_watcher_is_never_running_twice_for_one_worker(ssh_worker, isolated_home):
    from p_tasks.watch import is_watched

    starters = [subprocess.Popen([p_executable(), "-d", "tw", "--", "sleep", "60"],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(4)]
    results = [proc.communicate(timeout=120) for proc in starters]
    assert all(proc.returncode == 0 for proc in starters), results
    jobs = [out.decode().strip() for out, _ in results]
    # A latecomer may be spawned, find the lock taken and exit at once; then one stays.
    pid = retry_until(lambda: len(w := watchers(isolated_home, "tw")) == 1 and w[0], timeout=20,
                      message=lambda: str(watchers(isolated_home, "tw")))
    assert is_watched("tw")
    seen, deadline = set(), time.monotonic() + 3
    while time.monotonic() < deadline:
        now = watchers(isolated_home, "tw")
        assert len(now) <= 1, now
        seen.update(now)
        time.sleep(0.1)
    assert seen == {pid}
    # Started by hand while one runs, a second watcher gives way at once and the first stays.
    second = subprocess.run([sys.executable, "-m", "p_tasks.watch", "tw"], timeout=30,
                            stdin=subprocess.DEVNULL, capture_output=True)
    assert second.returncode == 0, second
    assert watchers(isolated_home, "tw") == [pid]
    # It ends by itself once the worker has no running job of this client.
    for job_id in jobs:
        assert run_p("rm", "--force", job_id)[0] == 0
    retry_until(lambda: not watchers(isolated_home, "tw"), timeout=40)
    assert not is_watched("tw")


# -- 9. on_finish gets the command ------------------------------------------------------------------

def test_on_finish_hook_gets_the_jobs_command(worker, isolated_home, tmp_path):
    name, _ = worker
    marker = tmp_path / "finished.json"
    config = isolated_home / ".config/p/config.yaml"
    config.parent.mkdir(parents=True, exist_ok=True)  # (the local worker needs no registration)
    hook = ("python3 -c 'import json, os; json.dump({k: v for k, v in os.environ.items() "
            f"if k.startswith(\"P_JOB_\")}}, open(\"{marker}\", \"w\"))'")
    config.write_text((config.read_text() if config.exists() else "") + f"on_finish: {json.dumps(hook)}\n")
    argv = ["sh", "-c", "sleep 1; echo \"it's done\" > /dev/null; exit 5"]
    job_id = start_detached(name, *argv)
    retry_until(marker.exists, timeout=30)
    retry_until(lambda: marker.read_text().endswith("}"), timeout=5)
    facts = json.loads(marker.read_text())
    assert facts["P_JOB_ID"] == job_id and facts["P_JOB_WORKER"] == name
    assert facts["P_JOB_COMMAND"] == shlex.join(argv)  # as `p ls` shows it, quoted to paste back
    assert facts["P_JOB_EXIT_CODE"] == "5" and facts["P_JOB_STATUS"] == DONE

