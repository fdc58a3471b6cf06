"""Any Linux worker: login shells × python3, noisy start-up files, old or missing tmux, missing rsync,
architectures, awkward paths, agent upgrades, and `p worker ls -c`.

Every test runs against a real sshd on 127.0.0.1 (tests/support/workers.py: a second server of its own,
so changing its user's login shell or PATH never affects other tests). The worker user's PATH is set
through sshd (~/.ssh/environment), which every login shell honours; "python3 absent", "tmux missing"
and "rsync missing" are a PATH of symlinks to the system's programs without them.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import ls_json, p_executable, retry_until, run_p, status_of
from support.nohosts import unresolvable_host
from support.workers import (
    PROFILE_FILES,
    RC_FILES,
    SHELLS,
    STANDARD_PATH,
    WorkerServer,
    running_server,
    shell_path,
    tool_dir,
)

ALIAS = "testworker"
# Arguments no shell on the way may touch: quotes of every kind, globs, $, newlines, the empty string.
AWKWARD = ["a b", "'single'", '"double"', "$HOME", "a;b", "*", "line1\nline2", "ünïcødé ✓", "",
           "back\\slash", "-n", "it's", "fish\\'quote", "{a,b}", "(x)", "~"]


@pytest.fixture(scope="module")
def server() -> Iterator[WorkerServer]:
    """A real sshd for this module's worker user (shell, PATH and home chosen per test)."""
    with running_server() as srv:
        yield srv


def write_client_config(srv: WorkerServer, home: Path, extra: str = "", known: str = "") -> Path:
    """~/.ssh/config with `Host testworker` for srv (plus `extra`), known_hosts with its key (+ `known`)."""
    ssh_dir = home / ".ssh"
    ssh_dir.mkdir(mode=0o700, exist_ok=True)
    config = ssh_dir / "config"
    config.write_text(
        f"Host {ALIAS}\n    HostName {srv.host}\n    Port {srv.port}\n    User {srv.user}\n"
        f"    IdentityFile {srv.client_key}\n    IdentitiesOnly yes\n{extra}"
    )
    config.chmod(0o600)
    (ssh_dir / "known_hosts").write_text(srv.known_hosts_line + "\n" + known)
    (ssh_dir / "known_hosts").chmod(0o600)
    return config


def fresh_worker(srv: WorkerServer, home: Path, shell: str) -> WorkerServer:
    """srv with an empty worker home, `shell` as login shell, and the client configured for it."""
    path = shell_path(shell)
    if path is None:
        pytest.skip(f"{shell} is not installed (apt-get install {shell})")
    srv.ensure_running()
    srv.reset_worker()
    srv.set_login_shell(path)
    write_client_config(srv, home)
    return srv


@pytest.fixture
def worker(server, isolated_home, tmp_path, monkeypatch, request) -> WorkerServer:
    """The module's server made fresh with the login shell `request.param` (default bash); the CWD is
    a small project in a directory whose name has spaces and non-ASCII letters."""
    shell = getattr(request, "param", "bash")
    project = tmp_path / "proj dir ü ✓"
    project.mkdir()
    (project / "input.txt").write_text("payload\n")
    monkeypatch.chdir(project)
    return fresh_worker(server, isolated_home, shell)


def register(*extra: str, name: str = "tw") -> str:
    rc, out, err = run_p("worker", "register", ALIAS, "-n", name, *extra)
    assert rc == 0, err
    return out.decode()


def crlf(data: bytes) -> bytes:
    """Output that went through a terminal (the job's tmux pane) with \\r\\n turned back into \\n."""
    return data.replace(b"\r\n", b"\n")


def one_line(err: bytes) -> str:
    text = err.decode()
    assert text.count("\n") == 1 and "Traceback" not in text, text
    return text.rstrip("\n")


def start_detached(*command: str, no_sync: bool = False) -> str:
    rc, out, err = run_p("-d", *(["-n"] if no_sync else []), "--", *command)
    assert rc == 0, err
    job_id = out.decode().strip()
    assert len(job_id) == 36, out
    return job_id


def agent_calls(err: bytes) -> list[str]:
    """The agent calls `p --debug` logged, one per round trip: 'VERB install=BOOL'."""
    found = (AGENT_CALL.search(line) for line in err.decode().splitlines())
    return [f"{m.group(1)} install={m.group(2)}" for m in found if m]


AGENT_CALL = re.compile(r"\bagent (\S+) \[.*\] on \S+ \(install=(True|False)\)$")


def agent_version() -> str:
    text = (Path(__file__).parents[2] / "agent_sh" / "p-agent").read_text()
    return next(ln.split('"')[1] for ln in text.splitlines() if ln.startswith("P_AGENT_VERSION="))


def ssh_to_worker(home: Path, remote: str) -> subprocess.CompletedProcess:
    """OpenSSH to the worker with the client config the test wrote, like a user at a terminal would."""
    ssh_dir = home / ".ssh"
    argv = ["ssh", "-F", str(ssh_dir / "config"), "-o", f"UserKnownHostsFile={ssh_dir / 'known_hosts'}",
            "-o", "BatchMode=yes", "-T", ALIAS, remote]
    return subprocess.run(argv, capture_output=True, stdin=subprocess.DEVNULL, timeout=30)


def worker_facts(name: str = "tw", *flags: str) -> dict:
    rc, out, err = run_p("worker", "ls", "-c", "--json", *flags)
    assert rc == 0, err
    return next(w for w in json.loads(out) if w["name"] == name)


def status_bar(home: Path, job_id: str) -> str:
    """What the job's tmux status bar shows (the agent's `statusline` verb), decoded as UTF-8."""
    done = ssh_to_worker(home, f"sh .p/bin/p-agent statusline p-{job_id[:8]}")
    assert done.returncode == 0, done.stderr
    return done.stdout.decode("utf-8")  # strict: a character cut in half would raise


def real_tmux_version() -> str:
    out = subprocess.run(["tmux", "-V"], capture_output=True, text=True).stdout.strip()
    return out.removeprefix("tmux ")


# -- 1. login shells × python3 ---------------------------------------------------------------------

SMOKE = 'printf "[%s]\\n" "$@"; printf "tool=%s\\n" "$(p-tool)"; exit 3'


@pytest.mark.parametrize("python3", ["present", "absent"])
@pytest.mark.parametrize("worker", SHELLS, indirect=True)
def test_run_path_and_job_management(worker, python3, isolated_home, tmp_path):
    """register, `p -- argv` streamed with its exit code, -d, ls, logs -f, stop, pull, rm; the job's
    command sees the PATH of the login shell's profile."""
    if python3 == "absent":
        worker.set_path(tool_dir(worker.root, ("python*",)))
    profile, line = PROFILE_FILES[Path(worker.login_shell).name]
    worker.write(profile, line.format(dir="tools"))
    worker.stand_in("p-tool", "echo from-profile-path\n", directory="tools")

    out = register()
    assert ("python3 missing" in out) == (python3 == "absent"), out

    rc, out, err = run_p("--", "sh", "-c", SMOKE, "sh", *AWKWARD)
    assert rc == 3, err
    expected = "".join(f"[{a}]\n" for a in AWKWARD) + "tool=from-profile-path\n"
    assert crlf(out).decode() == expected

    rc, out, err = run_p("--", "echo one; echo two; exit 4")  # one argument: a line for the login shell
    assert (rc, crlf(out)) == (4, b"one\ntwo\n"), err

    sleeper = start_detached("sh", "-c", "echo started; sleep 60")
    rc, out, err = run_p("ls")
    assert rc == 0 and sleeper[:8] in out.decode() and "running" in out.decode(), (out, err)
    rc, out, err = run_p("stop", sleeper[:8], "--timeout", "1")
    assert rc == 0 and "stopped" in out.decode(), err
    assert status_of(sleeper)["status"] == "stopped"

    maker = start_detached("sh", "-c", "for i in 1 2 3; do echo line$i; sleep 0.2; done; "
                           "mkdir -p res && cp input.txt res/copy.txt; exit 7")
    rc, out, err = run_p("logs", "-f", maker[:8])
    assert (rc, crlf(out)) == (7, b"line1\nline2\nline3\n"), err
    rc, out, err = run_p("pull", maker, "res", str(tmp_path / "got"))
    assert rc == 0, err
    assert (tmp_path / "got" / "copy.txt").read_text() == "payload\n"

    for job_id in (sleeper, maker):
        rc, out, err = run_p("rm", job_id)
        assert rc == 0 and "removed" in out.decode(), err
        assert not (worker.worker_home / ".p/jobs" / job_id).exists()
        assert not (worker.worker_home / ".p/workdirs" / job_id).exists()

    rc, out, err = run_p("worker", "ls", "--check", "--json")
    assert rc == 0, err
    facts = next(w for w in json.loads(out) if w["name"] == "tw")
    assert facts["reachable"] is True and facts["problem"] is None, facts
    assert facts["python3"] is (python3 == "present")


def test_status_bar_without_python3_cuts_long_commands_cleanly(worker, isolated_home):
    """Without python3 the agent's sh path shortens the command for the status bar; no broken UTF-8."""
    worker.set_path(tool_dir(worker.root, ("python*",)))
    register()
    job_id = start_detached("sh", "-c", "sleep 30", "sh", "ünïcødé ✓ " * 20, no_sync=True)
    line = status_bar(isolated_home, job_id)
    assert job_id[:8] in line and "ünïcødé" in line, line
    assert "…" in line and "running" in line, line
    assert run_p("rm", "--force", job_id)[0] == 0


# -- 2. noisy start-up files -----------------------------------------------------------------------

NOISE = "echo 'Welcome to buildbox'\necho 'oops on stderr' >&2\n"


@pytest.mark.parametrize("worker", SHELLS, indirect=True)
def test_noisy_startup_files_never_corrupt_replies(worker, isolated_home):
    """What a start-up file prints at every login (stdout and stderr) never reaches an agent reply,
    a version or an exit code; rsync, which cannot work through it, fails with p's own words."""
    shell = Path(worker.login_shell).name
    worker.write(RC_FILES[shell], NOISE)
    out = register()
    assert "Welcome" not in out and "tmux " in out, out
    facts = worker_facts()
    assert facts["agent_version"] == agent_version() and facts["state"] == "ok", facts
    assert facts["tmux"] == real_tmux_version() and facts["jobs_running"] == 0, facts

    rc, out, err = run_p("-n", "--", "sh", "-c", "exit 5")
    assert rc == 5, err
    job_id = start_detached("sleep", "30", no_sync=True)
    assert status_of(job_id)["status"] == "running"
    rc, out, err = run_p("stop", job_id)
    assert (rc, status_of(job_id)["status"]) == (0, "stopped"), err
    rc, out, err = run_p("rm", job_id)
    assert rc == 0 and "removed" in out.decode(), err

    rc, out, err = run_p("--", "true")
    if shell == "dash":  # `dash -c` reads no start-up file: only the job's login shell prints
        assert rc == 0, err
        return
    assert rc == 1
    line = one_line(err)  # rsync 3.2.4+ no longer says what the shell printed: it may be ('')
    assert line.startswith("p: sync to worker 'tw' failed, no job started: the worker's shell prints "
                           "output at login ("), line
    assert line.endswith("), which breaks rsync's protocol; make ~/.bashrc (or your shell's start-up "
                         "file) print only on interactive logins"), line


@pytest.mark.parametrize("worker", SHELLS, indirect=True)
def test_startup_files_printing_to_stderr_only_do_not_break_sync(worker):
    shell = Path(worker.login_shell).name
    worker.write(RC_FILES[shell], "echo 'motd on stderr' >&2\n")
    register()
    rc, out, err = run_p("--", "sh", "-c", "cat input.txt; exit 6")
    assert rc == 6, err
    assert crlf(out).endswith(b"payload\n"), out


def test_noisy_bashrc_does_not_leak_into_job_output(worker):
    worker.write(".bashrc", NOISE)
    register()
    rc, out, err = run_p("-n", "--", "echo", "hi")
    assert (rc, crlf(out)) == (0, b"hi\n")


# -- 3. tmux versions ------------------------------------------------------------------------------

def fake_tmux(worker: WorkerServer, version_line: str) -> None:
    """A `tmux` first on the worker's PATH that prints version_line for -V and is the real one else."""
    real = shutil.which("tmux")
    worker.stand_in("tmux", f'if [ "$1" = -V ]; then echo \'{version_line}\'; exit 0; fi\n'
                            f'exec {real} "$@"\n')
    worker.set_path(worker.worker_home / "fakebin", STANDARD_PATH)


def assert_refused_fast_everywhere(worker: WorkerServer, isolated_home: Path, message: str) -> None:
    """`register` refuses with `message`, saves nothing; registered without a check, `p -- cmd`
    refuses with the same line, fast, before anything lands on the worker."""
    rc, out, err = run_p("worker", "register", ALIAS, "-n", "tw")
    assert (rc, one_line(err)) == (1, f"p: {message}")
    assert not (isolated_home / ".config/p/config.yaml").exists()
    register("--no-check")
    for argv in (["--", "true"], ["-d", "--", "true"]):
        started = time.monotonic()
        rc, out, err = run_p(*argv)
        assert (rc, one_line(err)) == (1, f"p: {message}"), argv
        assert time.monotonic() - started < 8
    assert not list((worker.worker_home / ".p/workdirs").glob("*"))
    assert not list((worker.worker_home / ".p/jobs").glob("*"))
    assert ls_json("-a") == []


@pytest.mark.parametrize("worker", SHELLS, indirect=True)
def test_too_old_tmux_refused(worker, isolated_home):
    fake_tmux(worker, "tmux 1.8")
    assert_refused_fast_everywhere(
        worker, isolated_home, "tmux 1.8 on worker 'tw' is too old; p needs tmux >= 2.6")
    assert worker_facts()["problem"] == "tmux 1.8 on worker 'tw' is too old; p needs tmux >= 2.6"


@pytest.mark.parametrize("worker", SHELLS, indirect=True)
def test_missing_tmux_refused(worker, isolated_home):
    worker.set_path(tool_dir(worker.root, ("tmux*",)))
    message = "tmux is not installed on worker 'tw'; install it there (e.g. apt-get install tmux)"
    assert_refused_fast_everywhere(worker, isolated_home, message)
    facts = worker_facts()
    assert facts["tmux"] == "missing" and facts["state"] == "unfit", facts


@pytest.mark.parametrize("line", ["tmux 2.6", "tmux 3.3a", "tmux next-3.4", "tmux 3.0-rc5", "tmux master"])
def test_supported_tmux_version_strings_accepted(worker, line):
    fake_tmux(worker, line)
    out = register()
    assert f"tmux {line.removeprefix('tmux ')}," in out
    rc, out, err = run_p("--", "cat", "input.txt")
    assert (rc, crlf(out)) == (0, b"payload\n"), err


@pytest.mark.parametrize("text, version", [
    ("2.6", (2, 6)), ("3.3a", (3, 3)), ("next-3.4", (3, 4)), ("3.0-rc5", (3, 0)), ("2.10", (2, 10)),
    ("1.8", (1, 8)), ("openbsd-7.4", (7, 4)), ("master", None), ("", None),
])
def test_tmux_version_parsing(text, version):
    from p_tasks.submit import tmux_version

    assert tmux_version(text) == version


# -- 4. rsync missing ------------------------------------------------------------------------------

@pytest.mark.parametrize("worker", SHELLS, indirect=True)
def test_missing_rsync_refused_but_no_sync_jobs_work(worker, isolated_home):
    worker.set_path(tool_dir(worker.root, ("rsync*",)))
    rc, out, err = run_p("worker", "register", ALIAS, "-n", "tw")
    assert (rc, one_line(err)) == (1, (
        "p: rsync is not installed on worker 'tw'; install it there (e.g. apt-get install rsync) "
        "or register it with --no-check and run only `p -n` jobs there"))
    assert not (isolated_home / ".config/p/config.yaml").exists()
    register("--no-check")
    rc, out, err = run_p("--", "true")
    assert (rc, one_line(err)) == (1, (
        "p: rsync is not installed on worker 'tw'; install it there (e.g. apt-get install rsync) "
        "or run without syncing: p -n -- <command>"))
    rc, out, err = run_p("-n", "--", "echo", "fine")
    assert (rc, crlf(out)) == (0, b"fine\n"), err
    facts = worker_facts()
    assert facts["rsync"] == "missing" and facts["state"] == "unfit" and "rsync" in facts["problem"]


# -- 5. architectures ------------------------------------------------------------------------------

@pytest.mark.parametrize("raw, folded", [
    ("x86_64", "amd64"), ("amd64", "amd64"), ("aarch64", "aarch64"), ("arm64", "aarch64"),
    ("riscv64", "riscv64"), ("sparc64", "other"), ("armv7l", "other"),
])
def test_architecture_folded_and_reported(worker, raw, folded):
    real = shutil.which("uname")
    worker.stand_in("uname", f'if [ "$1" = -m ]; then echo {raw}; exit 0; fi\nexec {real} "$@"\n')
    worker.set_path(worker.worker_home / "fakebin", STANDARD_PATH)
    shown = folded if raw == folded else f"{folded} ({raw})"
    assert f"Linux {shown}, tmux" in register()
    facts = worker_facts()
    assert (facts["arch"], facts["arch_raw"], facts["state"]) == (folded, raw, "ok")
    rc, out, err = run_p("worker", "ls", "--check")
    assert rc == 0 and shown in out.decode(), out
    rc, out, err = run_p("--", "cat", "input.txt")  # nothing on the worker depends on it
    assert (rc, crlf(out)) == (0, b"payload\n"), err


# -- 6. paths --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def spaced_server() -> Iterator[WorkerServer]:
    """A second sshd whose user's home directory has spaces in its path."""
    with running_server(home="home dir/with  spaces") as srv:
        yield srv


@pytest.mark.parametrize("shell", SHELLS)
def test_worker_home_with_spaces(spaced_server, shell, isolated_home, tmp_path, monkeypatch):
    worker = fresh_worker(spaced_server, isolated_home, shell)
    project = tmp_path / "src ü"
    project.mkdir()
    (project / "input.txt").write_text("payload\n")
    monkeypatch.chdir(project)
    assert " " in str(worker.worker_home)
    register()
    rc, out, err = run_p("--", "sh", "-c", 'cat input.txt; printf "%s\\n" "$PWD"; exit 2')
    assert rc == 2, err
    lines = crlf(out).decode().splitlines()
    assert lines[0] == "payload" and lines[1].startswith(str(worker.worker_home) + "/.p/workdirs/")
    rc, out, err = run_p("-n", "--", "pwd")
    assert (rc, crlf(out).decode()) == (0, f"{worker.worker_home}\n"), err
    job_id = start_detached("sh", "-c", "mkdir out && echo made > out/f.txt; sleep 1; echo bye; exit 9")
    rc, out, err = run_p("logs", "-f", job_id)
    assert (rc, crlf(out)) == (9, b"bye\n"), err
    rc, out, err = run_p("pull", job_id, "out", str(tmp_path / "got"))
    assert rc == 0 and (tmp_path / "got" / "f.txt").read_text() == "made\n", err
    sleeper = start_detached("sleep", "30")
    assert "running" in run_p("ls")[1].decode()
    rc, out, err = run_p("stop", sleeper)
    assert rc == 0, err
    for job in (job_id, sleeper):
        assert run_p("rm", job)[0] == 0
        assert not (worker.worker_home / ".p/workdirs" / job).exists()
    assert worker_facts()["state"] == "ok"


def test_non_ascii_home_with_fish(isolated_home, tmp_path, monkeypatch):
    with running_server(home="hömé") as srv:
        fresh_worker(srv, isolated_home, "fish")
        monkeypatch.chdir(tmp_path)
        (tmp_path / "input.txt").write_text("payload\n")
        register()
        rc, out, err = run_p("--", "cat", "input.txt")
        assert (rc, crlf(out)) == (0, b"payload\n"), err
        assert sorted(p.name for p in srv.root.iterdir() if (p / ".p").exists()) == ["hömé"]


AWKWARD_NAMES = ["-rf", "--help", "-", "new\nline.txt", " lead", "trail ", "tab\there", "ü ✓.txt",
                 "#hash", ";semi", "a\\b", "$HOME", "it's", "[ab]"]
GLOB_NAMES = ["*", "?"]


def synced_project(worker: WorkerServer, names: list[str]) -> str:
    """Files named `names` (content: their repr), and -dir/-x<newline>y, in the CWD; sync them with a
    job, check that the workdir holds exactly them; return the job id."""
    project = Path.cwd()
    for name in names:
        (project / name).write_text(f"content of {name!r}\n")
    (project / "-dir").mkdir()
    (project / "-dir" / "-x\ny").write_text("deep\n")
    register()
    job_id = start_detached("true")
    retry_until(lambda: status_of(job_id)["status"] == "done", timeout=20)
    workdir = worker.worker_home / ".p/workdirs" / job_id
    sent = sorted(str(p.relative_to(workdir)) for p in workdir.rglob("*") if p.is_file())
    assert sent == sorted([*names, "input.txt", "-dir/-x\ny"])
    return job_id


def test_file_names_never_taken_as_options_or_split(worker, tmp_path):
    job_id = synced_project(worker, AWKWARD_NAMES + GLOB_NAMES)
    for index, name in enumerate(AWKWARD_NAMES):
        dest = tmp_path / f"pulled-{index}"
        rc, out, err = run_p("pull", job_id, f"./{name}", str(dest))
        assert rc == 0, (name, err)
        assert dest.read_text() == f"content of {name!r}\n", name
    rc, out, err = run_p("pull", job_id, "./-dir", str(tmp_path / "dir"))
    assert rc == 0, err
    assert (tmp_path / "dir" / "-x\ny").read_text() == "deep\n"
    rc, out, err = run_p("pull", job_id, "new\nline.txt", str(tmp_path / "nl"))
    assert rc == 0 and (tmp_path / "nl").read_text() == "content of 'new\\nline.txt'\n", err


@pytest.mark.parametrize("name", GLOB_NAMES)
def test_pull_file_named_like_a_wildcard(worker, tmp_path, name):
    job_id = synced_project(worker, AWKWARD_NAMES + GLOB_NAMES)
    rc, out, err = run_p("pull", job_id, name, str(tmp_path / "got"))
    assert rc == 0, err
    assert (tmp_path / "got").read_text() == f"content of {name!r}\n"


def test_job_records_the_local_cwd_with_spaces_and_unicode(worker):
    register()
    job_id = start_detached("true", no_sync=True)
    assert status_of(job_id)["cwd"] == str(Path.cwd()) and "proj dir ü ✓" in status_of(job_id)["cwd"]
    rc, out, err = run_p("ls", "-a")
    assert rc == 0 and "proj dir ü ✓" in out.decode()


# -- 7. agent upgrades -----------------------------------------------------------------------------

def bundled(name: str) -> bytes:
    return (Path(__file__).parents[2] / "agent_sh" / name).read_bytes()


def assert_current_agent(worker: WorkerServer) -> None:
    from p_tasks.agent import wanted_id

    bin_dir = worker.worker_home / ".p/bin"
    assert (bin_dir / "p-agent").read_bytes() == bundled("p-agent")
    assert (bin_dir / "p_agent.py").read_bytes() == bundled("p_agent.py")
    assert (bin_dir / "p-agent.id").read_text() == wanted_id().split()[0] + "\n"
    assert sorted(p.name for p in bin_dir.iterdir()) == ["p-agent", "p-agent.id", "p_agent.py"]


def test_matching_agent_costs_no_extra_round_trip(worker):
    register()
    assert_current_agent(worker)
    rc, out, err = run_p("--debug", "-n", "--", "true")
    assert rc == 0, err
    calls = agent_calls(err)
    assert calls[:2] == ["hello install=False", "start install=False"], calls
    assert not [c for c in calls if c.endswith("install=True")], calls


@pytest.mark.parametrize("damage", ["older", "truncated", "missing"])
def test_older_or_damaged_agent_replaced_on_next_command(worker, damage):
    register()
    agent_file = worker.worker_home / ".p/bin/p-agent"
    if damage == "older":
        (worker.worker_home / ".p/bin/p-agent.id").write_text("0123456789abcdef\n")
        older = agent_file.read_bytes().replace(b'P_AGENT_VERSION="', b'P_AGENT_VERSION="0.0.1-')
        agent_file.write_bytes(older)
    elif damage == "truncated":
        agent_file.write_bytes(agent_file.read_bytes()[: agent_file.stat().st_size // 2])
    else:
        agent_file.unlink()
    rc, out, err = run_p("--debug", "-n", "--", "sh", "-c", "exit 4")
    assert rc == 4, err
    calls = agent_calls(err)
    assert calls[:3] == ["hello install=False", "hello install=True", "start install=False"], calls
    assert_current_agent(worker)
    assert worker_facts()["agent_version"] == agent_version()


def test_concurrent_upgrades_leave_a_correct_agent(worker):
    """Several p processes find the agent outdated at once and all install it: each writes temp files
    and renames them into place, so every one runs a whole agent and what is left is intact. A job's
    output stream that runs the old agent file meanwhile is not disturbed (the rename keeps its inode)."""
    register()
    streamed: dict[str, tuple[int, bytes, bytes]] = {}
    streamer = threading.Thread(target=lambda: streamed.update(
        r=run_p("--debug", "-n", "--", "sh", "-c", "sleep 3; echo end-of-job")))
    streamer.start()
    jobs = worker.worker_home / ".p/jobs"
    retry_until(lambda: jobs.exists() and any((j / "output.log").exists() for j in jobs.iterdir()))
    (worker.worker_home / ".p/bin/p-agent.id").write_text("0000000000000000\n")
    procs = [subprocess.Popen([p_executable(), "--debug", "-n", "--", "sh", "-c", f"exit {i}"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
             for i in range(6)]
    results = [(p.wait(timeout=120), p.stderr.read()) for p in procs]
    assert [rc for rc, _ in results] == list(range(6)), [err for _, err in results]
    streamer.join(timeout=60)
    rc, out, err = streamed["r"]
    assert (rc, crlf(out)) == (0, b"end-of-job\n"), err
    installs = [c for _, e in [*results, (rc, err)] for c in agent_calls(e) if c.endswith("install=True")]
    assert installs, [agent_calls(e) for _, e in [*results, (rc, err)]]
    assert_current_agent(worker)


def test_logs_after_damage_repairs_the_agent(worker):
    register()
    job_id = start_detached("echo", "hello-log", no_sync=True)
    retry_until(lambda: status_of(job_id)["status"] == "done", timeout=20)
    agent_file = worker.worker_home / ".p/bin/p-agent"
    agent_file.write_bytes(agent_file.read_bytes()[: agent_file.stat().st_size // 2])
    rc, out, err = run_p("logs", job_id)
    assert (rc, crlf(out)) == (0, b"hello-log\n"), err


# -- 8. p worker ls [-c] [--json] -------------------------------------------------------------------

class Blackhole:
    """A TCP port that accepts connections and never says anything (a hung host); counts accepts."""

    def __init__(self) -> None:
        import socket

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.accepted: list = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        try:
            while True:
                self.accepted.append(self.sock.accept())
        except OSError:
            pass

    def close(self) -> None:
        for conn, _ in self.accepted:
            conn.close()
        self.sock.close()


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_worker_ls_without_check_uses_no_network(worker, isolated_home):
    hole = Blackhole()
    try:
        register()
        for name, connection in (("hole", f"me@127.0.0.1:{hole.port}"), ("nx", "me@no-such-host.invalid")):
            assert run_p("worker", "register", connection, "-n", name, "--no-check")[0] == 0
        started = time.monotonic()
        rc, out, err = run_p("worker", "ls")
        assert rc == 0, err
        rows = [line.split() for line in out.decode().splitlines()]
        assert rows[0] == ["NAME", "CONNECTION", "DEFAULT"]
        assert rows[2:] == [["local", "(this", "machine,", "built", "in)"], ["tw", ALIAS, "*"],
                            ["hole", f"me@127.0.0.1:{hole.port}"], ["nx", "me@no-such-host.invalid"]]
        rc, out, err = run_p("worker", "ls", "--json")
        assert rc == 0, err
        assert json.loads(out) == [
            {"name": "local", "connection": "local", "default": False},
            {"name": "tw", "connection": ALIAS, "default": True},
            {"name": "hole", "connection": f"me@127.0.0.1:{hole.port}", "default": False},
            {"name": "nx", "connection": "me@no-such-host.invalid", "default": False},
        ]
        assert time.monotonic() - started < 5
        assert hole.accepted == []
    finally:
        hole.close()


def test_worker_ls_check_probes_every_worker_in_parallel(worker, sshd, isolated_home, tmp_path, monkeypatch):
    """-c: each worker's facts, or the one-line reason it cannot be reached (DNS, refused, auth, unknown
    or changed host key, no answer), all probed at once, each within --timeout."""
    nx_host = unresolvable_host(monkeypatch)  # fails to resolve with no DNS packet sent
    sshd.ensure_running()
    other_key = tmp_path / "other_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other_key)], check=True)
    hole = Blackhole()
    user = f"    User {worker.user}\n    IdentityFile {worker.client_key}\n    IdentitiesOnly yes\n"
    extra = "".join([
        *(f"Host {h}\n    HostName 127.0.0.1\n    Port {hole.port}\n    ConnectTimeout 30\n"
          for h in ("hole1", "hole2")),
        f"Host badauth\n    HostName 127.0.0.1\n    Port {worker.port}\n    User {worker.user}\n"
        f"    IdentityFile {other_key}\n    IdentitiesOnly yes\n",
        f"Host unknownkey\n    HostName localhost\n    Port {worker.port}\n{user}",
        f"Host changedkey\n    HostName 127.0.0.1\n    Port {sshd.port}\n{user}",
    ])
    # the shared sshd's port with this server's key: to p, the shared sshd's key has changed
    wrong_key = f"[127.0.0.1]:{sshd.port} {worker.host_key_line}\n"
    write_client_config(worker, isolated_home, extra, known=wrong_key)
    try:
        register()
        sleeper = start_detached("sleep", "30", no_sync=True)
        others = {"refused": f"me@127.0.0.1:{free_port()}", "nx": f"me@{nx_host}",
                  "hole1": "hole1", "hole2": "hole2", "badauth": "badauth", "unknownkey": "unknownkey",
                  "changedkey": "changedkey"}
        for name, connection in others.items():
            assert run_p("worker", "register", connection, "-n", name, "--no-check")[0] == 0
        started = time.monotonic()
        rc, out, err = run_p("worker", "ls", "-c", "--json", "--timeout", "4")
        elapsed = time.monotonic() - started
        assert rc == 0, err
        assert elapsed < 4 + 3, elapsed  # two silent hosts of 4 s each, and everyone else, at once
        facts = {w["name"]: w for w in json.loads(out)}
        assert list(facts) == ["local", "tw", *others]
        tw = facts["tw"]
        assert tw["state"] == "ok" and tw["reachable"] is True and tw["error"] is None, tw
        assert tw["agent_version"] == agent_version() and tw["os"] == "Linux" and tw["default"] is True
        assert tw["tmux"] == real_tmux_version() and tw["rsync"] not in (None, "missing")
        assert tw["python3"] is True and tw["free_kb"] > 0 and tw["jobs_running"] == 1, tw
        assert tw["arch"] in ("amd64", "aarch64", "riscv64", "other") and tw["arch_raw"]
        assert facts["local"]["state"] == "ok"
        reasons = {name: facts[name]["error"] for name in others}
        assert all(facts[name]["state"] == "unreachable" for name in others), facts
        assert reasons["refused"].startswith("connection refused by 127.0.0.1:")
        assert reasons["nx"].startswith(f"cannot resolve host name '{nx_host}' (DNS)")
        assert reasons["hole1"] == reasons["hole2"] == "no answer within 4s"
        assert reasons["badauth"].startswith(f"authentication as '{worker.user}' failed")
        assert "not in known_hosts" in reasons["unknownkey"], reasons
        assert "CHANGED" in reasons["changedkey"], reasons
        rc, out, err = run_p("worker", "ls", "-c", "--timeout", "4")
        text = out.decode()
        assert rc == 0 and text.splitlines()[0].split() == [
            "NAME", "CONNECTION", "DEFAULT", "STATE", "AGENT", "ARCH", "OS", "TMUX", "RSYNC", "PYTHON3",
            "FREE", "JOBS"]
        assert f"refused: {reasons['refused']}" in text.splitlines() and "hole1: no answer within 4s" in text
        assert run_p("stop", sleeper)[0] == 0
    finally:
        hole.close()


