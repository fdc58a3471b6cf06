"""The agent's job-control verbs (wait, stop, rm, tail, resolve, df, status's session field), run as a
local process with a real tmux, under dash and busybox sh, like test_agent_sh.py (whose helpers these
tests use).

Jobs here start processes that outlive their tmux session on purpose (nohup, trapped SIGHUP), so every
fixture ends, besides the tmux server, every process still running with its HOME.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import urllib.parse
import uuid
from pathlib import Path

import pytest
from support.processes import pids_with_home, terminate
from test_agent_sh import (
    BANNER,
    SHELLS,
    Agent,
    destroy,
    make_agent,
    parse_kv,
    pty_normalised,
    retry_until,
    session,
    short_home,
)

pytestmark = [
    pytest.mark.skipif(not all(shutil.which(t) for t in ("tmux", "dash", "busybox")),
                       reason="needs tmux, dash and busybox"),
    pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs /proc"),
]

# Tools these verbs run beside those of test_agent_sh.AGENT_TOOLS: busybox applets in the busybox runs.
MORE_TOOLS = ("awk", "od", "du", "df", "ps", "readlink", "ls", "head", "tr", "sed")

# A job that starts background, nohup and SIGHUP-immune processes, then waits for them.
TREE_JOB = "bash -c 'sleep 1000 & nohup sleep 1001 & (trap \"\" HUP; sleep 1002) & wait'"
TREE_SLEEPS = {"sleep 1000", "sleep 1001", "sleep 1002"}


@pytest.fixture(params=sorted(SHELLS))
def shell(request) -> str:
    return request.param


def make_verbs_agent(shell: str) -> Agent:
    a = make_agent(short_home(), shell)
    if shell == "busybox":
        bindir = a.home / "shbin"
        applets = set(os.popen("busybox --list").read().split())
        for tool in applets.intersection(MORE_TOOLS):
            if not (bindir / tool).exists():
                (bindir / tool).symlink_to(shutil.which("busybox"))
    return a


def teardown(a: Agent) -> None:
    a.tmux("kill-server")
    terminate(pids_with_home(a.home))  # nohup'd and SIGHUP-immune leftovers of failed tests
    destroy(a)


@pytest.fixture
def agent(shell: str):
    a = make_verbs_agent(shell)
    yield a
    teardown(a)


# --- helpers ---------------------------------------------------------------------------------------


def alive(pid: str) -> bool:
    try:
        return Path("/proc", pid, "stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def job_processes(job_id: str) -> dict[str, str]:
    """{pid: command line} of the live processes whose environment holds P_JOB_ID=job_id."""
    needle = f"P_JOB_ID={job_id}".encode()
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if needle in environ.split(b"\0") and alive(entry.name):
            found[entry.name] = cmdline.rstrip(b"\0").replace(b"\0", b" ").decode(errors="replace")
    return found


def has_tree(job_id: str) -> bool:
    return TREE_SLEEPS <= set(job_processes(job_id).values())


def reply(proc) -> dict[str, str]:
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == b""
    return parse_kv(proc.stdout)


def snapshot(path: Path) -> dict[str, tuple[int, bytes | None]]:
    """{relative path: (mtime, content of a regular file)} of everything below PATH."""
    return {str(p.relative_to(path)): (p.lstat().st_mtime_ns, p.read_bytes() if p.is_file() else None)
            for p in sorted(path.rglob("*"))}


def status_line(agent: Agent, job_id: str) -> list[str]:
    return agent.status(job_id)[0]


def timed(fn):
    start = time.monotonic()
    result = fn()
    return result, time.monotonic() - start


# --- status: the session field ---------------------------------------------------------------------


def test_status_tells_whether_the_session_is_open(agent: Agent):
    job_id = agent.start("exit 3")
    assert agent.exitcode(job_id) == 3
    assert status_line(agent, job_id)[1:3] + status_line(agent, job_id)[5:] == ["done", "3", "open"]
    retry_until(lambda: "Press any key" in agent.pane(job_id), what="the banner")
    agent.tmux("send-keys", "-t", f"={session(job_id)}:", "x")
    retry_until(lambda: status_line(agent, job_id)[5] == "closed", what="closed")
    assert len(status_line(agent, job_id)) == 6


# --- stop ------------------------------------------------------------------------------------------


def test_stop_ends_the_whole_tree_and_records_143(agent: Agent):
    job_id = agent.start(TREE_JOB)
    retry_until(lambda: has_tree(job_id), what="the job's processes")
    out, took = timed(lambda: reply(agent.run("stop", job_id, "10")))
    assert out == {"stopped": "1"}
    assert took < 5  # SIGTERM was enough: no waiting for the grace period
    assert job_processes(job_id) == {}
    # stop returns once run-job has recorded the exit: status is final at once
    assert status_line(agent, job_id)[1:3] == ["done", "143"]
    retry_until(lambda: BANNER.format(143) in agent.pane(job_id), what="the banner")
    assert status_line(agent, job_id)[5] == "open"


def test_stop_kills_a_job_that_ignores_sigterm_after_the_grace(agent: Agent):
    job_id = agent.start("trap '' TERM; echo ready; sleep 1000")
    retry_until(lambda: b"ready" in agent.log(job_id) and "sleep 1000" in job_processes(job_id).values(),
                what="the job to start")
    out, took = timed(lambda: reply(agent.run("stop", job_id, "2")))
    assert out == {"stopped": "1"}
    assert 2 <= took < 6
    assert job_processes(job_id) == {}
    assert agent.exitcode(job_id) == 137  # SIGKILL


def test_stop_lets_a_job_clean_up_on_sigterm(agent: Agent):
    """The handler's own commands (the sleep 0.3) are new processes of the job: not sent SIGTERM."""
    job_id = agent.start("trap 'sleep 0.3; echo cleanup; exit 3' TERM; echo ready; sleep 1000")
    retry_until(lambda: b"ready" in agent.log(job_id) and "sleep 1000" in job_processes(job_id).values(),
                what="the job to start")
    assert reply(agent.run("stop", job_id, "10")) == {"stopped": "1"}
    assert agent.exitcode(job_id) == 3
    log = pty_normalised(agent.log(job_id))  # the shell may say "Terminated" for its sleep first
    assert log.startswith(b"ready\n") and log.endswith(b"cleanup\n")


def test_stop_continues_stopped_processes_so_they_see_sigterm(agent: Agent):
    job_id = agent.start("sleep 1000 & sleep 0.2; kill -STOP $!; echo ready; wait")
    retry_until(lambda: b"ready" in agent.log(job_id) and "sleep 1000" in job_processes(job_id).values(),
                what="the job to start")
    out, took = timed(lambda: reply(agent.run("stop", job_id, "30")))
    assert out == {"stopped": "1"} and took < 5
    assert job_processes(job_id) == {}
    assert agent.exitcode(job_id) == 143


def test_stop_of_a_finished_job_changes_nothing(agent: Agent):
    job_id = agent.start("echo hi; exit 4")
    assert agent.exitcode(job_id) == 4
    before = snapshot(agent.job_dir(job_id))
    assert reply(agent.run("stop", job_id, "5")) == {"already": "done"}
    assert snapshot(agent.job_dir(job_id)) == before
    assert agent.has_session(job_id)


def test_stop_of_a_vanished_job_ends_its_leftovers(agent: Agent):
    job_id = agent.start("nohup sleep 1003 >/dev/null 2>&1 & echo started; wait")
    retry_until(lambda: "sleep 1003" in job_processes(job_id).values(), what="the job to start")
    agent.tmux("kill-session", "-t", f"={session(job_id)}")
    retry_until(lambda: status_line(agent, job_id)[1] == "vanished", what="vanished")
    assert "sleep 1003" in job_processes(job_id).values()  # nohup: survived the session's SIGHUP
    assert reply(agent.run("stop", job_id, "5")) == {"stopped": "1"}
    assert job_processes(job_id) == {}
    assert status_line(agent, job_id)[1] == "vanished"


def test_stop_from_inside_the_job_itself(agent: Agent):
    job_id = agent.start('sleep 1000 & echo ready; sh "$HOME/.p/bin/p-agent" stop "$P_JOB_ID" 5; wait')
    assert agent.exitcode(job_id) == 143
    retry_until(lambda: job_processes(job_id) == {}, timeout=5, what="no job processes")


def test_stop_without_proc_uses_the_panes_process_group(agent: Agent):
    job_id = agent.start(TREE_JOB)
    retry_until(lambda: has_tree(job_id), what="the job's processes")
    out = reply(agent.run("stop", job_id, "10", env={"P_AGENT_PROC": "/nonexistent"}))
    assert out == {"stopped": "1"}
    assert job_processes(job_id) == {}
    assert status_line(agent, job_id)[1:3] == ["done", "143"]


# --- wait ------------------------------------------------------------------------------------------


def test_wait_returns_promptly_when_a_job_ends(agent: Agent):
    ender = agent.start("while [ ! -e go ]; do sleep 0.05; done; exit 6")
    other = agent.start_argv(["sleep", "100"])
    waiter = subprocess.Popen(agent.argv("wait", "60", ender, other), env=agent.env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE)
    try:
        time.sleep(1.2)
        assert waiter.poll() is None
        (agent.ph / "workdirs" / ender / "go").touch()
        exitcode = agent.job_dir(ender) / "exitcode"
        seen = None
        deadline = time.monotonic() + 20
        while waiter.poll() is None and time.monotonic() < deadline:
            if seen is None and exitcode.exists():
                seen = time.monotonic()
            time.sleep(0.01)
        returned = time.monotonic()
        out, errs = waiter.communicate(timeout=5)
    finally:
        waiter.kill()
    assert waiter.returncode == 0, errs
    assert seen is not None and returned - seen < 1.0
    rows = [line.split(" ") for line in out.decode().splitlines()]
    assert [r[:3] for r in rows] == [[ender, "done", "6"], [other, "running", "-"]]
    assert [r[5] for r in rows] == ["open", "open"]


def test_wait_returns_at_the_timeout(agent: Agent):
    job_id = agent.start_argv(["sleep", "100"])
    proc, took = timed(lambda: agent.run("wait", "2", job_id))
    assert proc.returncode == 0
    assert 2 <= took < 3.5
    assert proc.stdout.decode().split() == status_line(agent, job_id)
    assert status_line(agent, job_id)[1] == "running"
    proc, took = timed(lambda: agent.run("wait", "0", job_id))
    assert (proc.returncode, took < 1) == (0, True)


def test_wait_returns_at_once_for_ended_or_missing_jobs(agent: Agent):
    running = agent.start_argv(["sleep", "100"])
    done = agent.start("true")
    agent.exitcode(done)
    missing = str(uuid.uuid4())
    for ids in ((running, done), (missing, running)):
        proc, took = timed(lambda ids=ids: agent.run("wait", "30", *ids))
        assert proc.returncode == 0 and took < 1
        assert len(proc.stdout.decode().splitlines()) == 2


def test_wait_notices_a_vanished_job(agent: Agent):
    job_id = agent.start_argv(["sleep", "100"])
    agent.tmux("kill-session", "-t", f"={session(job_id)}")
    proc, took = timed(lambda: agent.run("wait", "30", job_id))
    assert proc.returncode == 0 and took < 3
    assert proc.stdout.decode().split() == [job_id, "vanished", "-", status_line(agent, job_id)[3], "-",
                                            "closed"]


# --- rm --------------------------------------------------------------------------------------------


def test_rm_removes_exactly_the_jobs_two_dirs(agent: Agent):
    job_id = agent.start("true", files={"big": os.urandom(1024 * 1024)})
    agent.exitcode(job_id)
    keep = [agent.ph / "workdirs" / (job_id + ".keep"), agent.ph / "jobs" / (job_id + "x"),
            agent.ph / "workdirs" / job_id[:-1]]
    for d in keep:
        d.mkdir()
        (d / "f").write_text("keep")
    other = agent.start("true")
    agent.exitcode(other)
    out = reply(agent.run("rm", job_id))
    assert int(out["freed_kb"]) >= 1024
    assert set(out) == {"freed_kb"}
    assert not agent.job_dir(job_id).exists()
    assert not (agent.ph / "workdirs" / job_id).exists()
    assert all((d / "f").read_text() == "keep" for d in keep)
    assert agent.job_dir(other).is_dir() and (agent.ph / "workdirs" / other).is_dir()
    assert not agent.has_session(job_id)
    assert agent.has_session(other)


def test_rm_of_a_running_job_ends_it_first(agent: Agent):
    job_id = agent.start(TREE_JOB)
    retry_until(lambda: has_tree(job_id), what="the job's processes")
    (agent.ph / "workdirs" / job_id / "ro").mkdir()
    (agent.ph / "workdirs" / job_id / "ro" / "f").write_text("x")
    (agent.ph / "workdirs" / job_id / "ro").chmod(0o500)
    out, took = timed(lambda: reply(agent.run("rm", job_id)))
    assert took < 5
    assert int(out["freed_kb"]) > 0
    assert job_processes(job_id) == {}
    assert not agent.has_session(job_id)
    assert not agent.job_dir(job_id).exists()
    assert not (agent.ph / "workdirs" / job_id).exists()


def test_rm_of_a_home_job_leaves_home_alone(agent: Agent):
    (agent.home / "precious").write_text("keep")
    job_id = agent.start("pwd", workdir="home")
    agent.exitcode(job_id)
    out = reply(agent.run("rm", job_id))
    assert int(out["freed_kb"]) < 100
    assert (agent.home / "precious").read_text() == "keep"
    assert (agent.ph / "bin" / "p-agent").exists()
    assert not agent.job_dir(job_id).exists()


def test_rm_of_a_missing_job_frees_nothing(agent: Agent):
    assert reply(agent.run("rm", str(uuid.uuid4()))) == {"freed_kb": "0"}


def test_rm_leaves_a_session_of_the_same_name_that_is_another_jobs(agent: Agent):
    job_id = agent.start_argv(["sleep", "100"])
    twin = job_id[:9] + str(uuid.uuid4())[9:]  # same first 8 hex digits, so the same session name
    assert reply(agent.run("rm", twin)) == {"freed_kb": "0"}
    assert agent.has_session(job_id)
    assert status_line(agent, job_id)[1] == "running"


# --- tail ------------------------------------------------------------------------------------------


def test_tail(agent: Agent):
    job_id = agent.start("for i in 1 2 3 4 5; do echo line$i; done; printf 'no-newline\\377'")
    agent.exitcode(job_id)
    log = agent.log(job_id)
    for n in (0, 1, 3, 6, 100):
        proc = agent.run("tail", job_id, str(n))
        assert proc.returncode == 0
        assert proc.stdout == (b"".join(log.splitlines(keepends=True)[-n:]) if n else b"")
    assert agent.run("tail", job_id, "2").stdout == b"line5\r\nno-newline\xff"


def test_tail_of_a_running_job_and_a_missing_one(agent: Agent):
    job_id = agent.start("echo a; echo b; sleep 100")
    retry_until(lambda: agent.log(job_id) == b"a\r\nb\r\n", what="output")
    assert agent.run("tail", job_id, "1").stdout == b"b\r\n"
    proc = agent.run("tail", str(uuid.uuid4()), "1")
    assert proc.returncode == 1 and proc.stderr.startswith(b"p-agent: ")


# --- resolve ---------------------------------------------------------------------------------------


@pytest.fixture
def pull_job(agent: Agent) -> str:
    """A finished job whose workdir holds files, directories and symlinks in and out of it."""
    job_id = agent.start("true")
    agent.exitcode(job_id)
    wd = agent.ph / "workdirs" / job_id
    (wd / "sub").mkdir()
    for name in ("sub/file", "a b", "-x", "new\nline", "100%", "é"):
        (wd / name).write_text(name)
    (wd / "out").symlink_to("/etc")
    (wd / "lnk").symlink_to("sub")
    (wd / "flink").symlink_to("sub/file")
    (wd / "up").symlink_to("../" * 20 + "etc/passwd")
    (wd / "chain1").symlink_to("chain2")
    (wd / "chain2").symlink_to("/etc/passwd")
    (wd / "dangling").symlink_to("nowhere/at/all")
    (wd / "loop").symlink_to("loop")
    return job_id


def resolve(agent: Agent, job_id: str, path: str) -> tuple[int, dict[str, str] | bytes]:
    proc = agent.run("resolve", job_id, path)
    if proc.returncode:
        assert proc.stdout == b""
        return proc.returncode, proc.stderr
    out = parse_kv(proc.stdout)
    assert list(out) == ["path", "kind"]
    return 0, {"path": urllib.parse.unquote_to_bytes(out["path"]).decode(), "kind": out["kind"]}


def test_resolve_paths_inside_the_workdir(agent: Agent, pull_job: str):
    rel = f".p/workdirs/{pull_job}"
    cases = {
        "sub/file": (f"{rel}/sub/file", "file"),
        "sub": (f"{rel}/sub", "dir"),
        "sub/": (f"{rel}/sub", "dir"),
        "./sub//file": (f"{rel}/sub/file", "file"),
        ".": (rel, "dir"),
        "": (rel, "dir"),
        "sub/..": (rel, "dir"),
        "a b": (f"{rel}/a b", "file"),
        "-x": (f"{rel}/-x", "file"),
        "new\nline": (f"{rel}/new\nline", "file"),
        "100%": (f"{rel}/100%", "file"),
        "é": (f"{rel}/é", "file"),
        "lnk": (f"{rel}/lnk", "link"),
        "lnk/": (f"{rel}/sub", "dir"),
        "lnk/file": (f"{rel}/sub/file", "file"),
        f"sub/../../{pull_job}/sub": (f"{rel}/sub", "dir"),
        f"../{pull_job}": (rel, "dir"),
        "flink": (f"{rel}/flink", "link"),
        "dangling": (f"{rel}/dangling", "link"),
        str(agent.ph / "workdirs" / pull_job / "sub" / "file"): (f"{rel}/sub/file", "file"),
    }
    for path, (expected, kind) in cases.items():
        assert resolve(agent, pull_job, path) == (0, {"path": expected, "kind": kind}), path


def test_resolve_refuses_paths_outside_the_workdir(agent: Agent, pull_job: str):
    for path in ("../x", "..", "../" + pull_job + "x", "/etc/passwd", "/", "out", "out/", "out/passwd",
                 "out/nonexistent", "up", "chain1", "lnk/../../x",
                 "../nonexistent/x", "loop"):
        code, errs = resolve(agent, pull_job, path)
        assert (code, errs) == (4, f"p-agent: {path} is outside the job's workdir\n".encode()), path


def test_resolve_missing_paths(agent: Agent, pull_job: str):
    for path in ("nonexistent", "sub/nonexistent", "nonexistent/x", "sub/file/x", "-n"):
        code, errs = resolve(agent, pull_job, path)
        assert (code, errs) == (5, f"p-agent: no such file in the job's workdir: {path}\n".encode()), path


def test_resolve_without_readlink_reads_ls(agent: Agent, pull_job: str):
    """readlink(1) is POSIX only since 2024: without it, the link's target comes from `ls -ld`."""
    bindir = agent.home / "noreadlink"
    bindir.mkdir()
    for d in ("/usr/bin", "/bin"):
        for name in os.listdir(d):
            if name != "readlink" and not (bindir / name).exists():
                (bindir / name).symlink_to(os.path.join(d, name))
    (agent.home / "shbin" / "readlink").unlink(missing_ok=True)
    agent.env["PATH"] = f"{agent.home / 'shbin'}:{bindir}"
    assert shutil.which("readlink", path=agent.env["PATH"]) is None
    test_resolve_paths_inside_the_workdir(agent, pull_job)
    test_resolve_refuses_paths_outside_the_workdir(agent, pull_job)


def test_resolve_in_a_home_job(agent: Agent):
    job_id = agent.start("true", workdir="home")
    agent.exitcode(job_id)
    (agent.home / "results").mkdir()
    (agent.home / "results" / "r.txt").write_text("r")
    assert resolve(agent, job_id, "results/r.txt") == (0, {"path": "results/r.txt", "kind": "file"})
    assert resolve(agent, job_id, ".") == (0, {"path": ".", "kind": "dir"})
    assert resolve(agent, job_id, "..")[0] == 4


def test_resolve_through_a_symlinked_home(shell: str):
    """HOME itself reached through a symlink: paths are still relative to it."""
    a = make_verbs_agent(shell)
    link = Path(str(a.home) + "L")
    link.symlink_to(a.home)
    try:
        a.env["HOME"] = str(link)
        job_id = a.start("true")
        a.exitcode(job_id)
        (a.ph / "workdirs" / job_id / "f").write_text("f")
        assert resolve(a, job_id, "f") == (0, {"path": f".p/workdirs/{job_id}/f", "kind": "file"})
    finally:
        link.unlink()
        teardown(a)


# --- df --------------------------------------------------------------------------------------------


def test_df(agent: Agent):
    agent.run("hello")
    out = reply(agent.run("df"))
    assert list(out) == ["free_kb", "jobs_running"]
    st = os.statvfs(agent.ph)
    assert abs(int(out["free_kb"]) - st.f_bavail * st.f_frsize // 1024) < 512 * 1024
    assert out["jobs_running"] == "0"
    running = [agent.start_argv(["sleep", "100"]) for _ in range(2)]
    done = agent.start("true")
    agent.exitcode(done)
    assert reply(agent.run("df"))["jobs_running"] == "2"
    agent.tmux("kill-session", "-t", f"={session(running[0])}")
    assert reply(agent.run("df"))["jobs_running"] == "1"


# --- usage -----------------------------------------------------------------------------------------


def test_bad_usage_exits_2_and_touches_nothing(agent: Agent):
    job_id = agent.start("true")
    agent.exitcode(job_id)
    before = snapshot(agent.ph)
    bad = "../../" + job_id[6:]
    for args in (("wait",), ("wait", "5"), ("wait", "x", job_id), ("wait", "5", bad),
                 ("wait", "5", job_id, bad),
                 ("stop", job_id), ("stop", bad, "5"), ("stop", job_id, "-1"), ("stop", job_id, "1.5"),
                 ("rm",), ("rm", bad), ("rm", job_id.upper()), ("rm", job_id, job_id),
                 ("tail", job_id), ("tail", bad, "3"), ("tail", job_id, "-3"),
                 ("resolve", job_id), ("resolve", bad, "x"), ("df", "x")):
        proc = agent.run(*args)
        assert proc.returncode == 2, args
        assert proc.stdout == b"" and proc.stderr.startswith(b"p-agent: "), args
    assert snapshot(agent.ph) == before
    assert agent.run("stop", str(uuid.uuid4()), "1").returncode == 1
