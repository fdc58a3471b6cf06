"""The worker-side agent (agent_sh/p-agent) run as a local process: no SSH, a real tmux.

Each test gets a short temporary HOME (the agent's tmux socket lives under it, so the real tmux server
is never touched) with the agent copied to $HOME/.p/bin/, and runs under dash and under busybox sh: a
`sh` on PATH points at the shell under test, so `sh bin/p-agent run-job` inside tmux and the status bar's
`sh … statusline` use it too.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, TypeVar

import pytest

AGENT_DIR = Path(__file__).resolve().parents[2] / "agent_sh"
AGENT = AGENT_DIR / "p-agent"
SHELLS = {"dash": "dash", "busybox": "busybox"}
SENTINEL = b"\033]8999;p-end\007"
BANNER = "--- Job done [exit {}]. Press any key to detach. ---"
STATUS_BAR = re.compile(r" p-[0-9a-f]{8}  \S+  .*  \[(running|exit \d+)\] \d+:\d\d:\d\d")

pytestmark = pytest.mark.skipif(
    not all(shutil.which(t) for t in ("tmux", "dash", "busybox")), reason="needs tmux, dash and busybox"
)

T = TypeVar("T")


def retry_until(predicate: Callable[[], T], timeout: float = 10.0, what: str = "condition") -> T:
    """Poll PREDICATE until it returns something truthy; fail after TIMEOUT seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


def parse_kv(text: bytes) -> dict[str, str]:
    """key=value reply lines as a dict."""
    return dict(line.split("=", 1) for line in text.decode().splitlines())


def pty_normalised(data: bytes) -> bytes:
    """Undo the pty's output processing (ONLCR: \\n → \\r\\n)."""
    return data.replace(b"\r\n", b"\n")


def short_home(prefix: str = "pa") -> Path:
    """A fresh HOME short enough for a unix socket path under it."""
    return Path(tempfile.mkdtemp(prefix=prefix))


# Tools the agent runs; in the busybox runs they are busybox applets too (as on Alpine), where present.
AGENT_TOOLS = ("cat", "chmod", "cksum", "cut", "date", "dd", "head", "mkdir", "mv", "rm", "sleep", "stty",
               "tail", "tr", "wc", "uname")


def shell_dir(home: Path, shell: str) -> Path:
    """A directory whose `sh` is SHELL (busybox picks its applet from argv[0]), for the front of PATH."""
    bindir = home / "shbin"
    bindir.mkdir()
    (bindir / "sh").symlink_to(shutil.which(shell))
    if shell == "busybox":
        applets = set(subprocess.run(["busybox", "--list"], capture_output=True, text=True).stdout.split())
        for tool in applets.intersection(AGENT_TOOLS):
            (bindir / tool).symlink_to(shutil.which("busybox"))
    return bindir


@dataclass
class Agent:
    """The agent installed in a temporary HOME, run with one shell."""

    home: Path
    shell: str
    env: dict[str, str] = field(default_factory=dict)
    tmux_args: list[str] = field(default_factory=list)

    @property
    def ph(self) -> Path:
        return self.home / ".p"

    @property
    def agent(self) -> Path:
        return self.ph / "bin" / "p-agent"

    def argv(self, *args: str) -> list[str]:
        return [*shell_argv(self.shell), str(self.agent), *args]

    def run(self, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        env = {**self.env, **(env or {})}
        return subprocess.run(self.argv(*args), env=env, capture_output=True, timeout=60)

    def tmux(self, *args: str) -> subprocess.CompletedProcess:
        """tmux on the agent's server, from the agent's environment (TMUX_TMPDIR for `-L`)."""
        return subprocess.run(["tmux", *self.tmux_args, *args], capture_output=True, text=True, env=self.env)

    def job_dir(self, job_id: str) -> Path:
        return self.ph / "jobs" / job_id

    def start(self, payload: str, mode: str = "shell", workdir: str = "sync", display: str | None = None,
              env: dict[str, str] | None = None, files: dict[str, bytes] | None = None) -> str:
        """Start a job (creating its synced workdir with FILES); return its id."""
        job_id = str(uuid.uuid4())
        if workdir == "sync":
            wd = self.ph / "workdirs" / job_id
            wd.mkdir(parents=True)
            for name, data in (files or {}).items():
                (wd / name).write_bytes(data)
        display = payload if display is None else display
        proc = self.run("start", job_id, "testw", "/client/cwd", workdir, mode, display, payload, env=env)
        assert proc.returncode == 0, proc.stderr
        reply = parse_kv(proc.stdout)
        assert reply["session"] == session(job_id)
        assert reply["started_at"].isdigit()
        return job_id

    def start_argv(self, args: list[str], **kw) -> str:
        return self.start("exec " + shlex.join(args), mode="argv", display=shlex.join(args), **kw)

    def exitcode(self, job_id: str, timeout: float = 20) -> int:
        path = self.job_dir(job_id) / "exitcode"
        retry_until(path.exists, timeout, f"exitcode of {job_id}")
        return int(path.read_text())

    def log(self, job_id: str) -> bytes:
        """output.log so far (empty before the job has created it)."""
        path = self.job_dir(job_id) / "output.log"
        return path.read_bytes() if path.exists() else b""

    def pane(self, job_id: str) -> str:
        return self.tmux("capture-pane", "-p", "-t", f"={session(job_id)}:").stdout

    def has_session(self, job_id: str) -> bool:
        return self.tmux("has-session", "-t", f"={session(job_id)}").returncode == 0

    def press_key(self, job_id: str) -> None:
        retry_until(lambda: "Press any key" in self.pane(job_id), what="the banner")
        self.tmux("send-keys", "-t", f"={session(job_id)}:", "x")
        retry_until(lambda: not self.has_session(job_id), what="the session to close")

    def status(self, *ids: str) -> list[list[str]]:
        proc = self.run("status", *ids)
        assert proc.returncode == 0, proc.stderr
        return [line.split(" ") for line in proc.stdout.decode().splitlines()]


def shell_argv(shell: str) -> list[str]:
    return [shutil.which("busybox"), "sh"] if shell == "busybox" else [shutil.which("dash")]


def session(job_id: str) -> str:
    return "p-" + job_id[:8]


def make_agent(home: Path, shell: str) -> Agent:
    (home / ".p" / "bin").mkdir(parents=True)
    for name in ("p-agent", "p_agent.py"):
        shutil.copy(AGENT_DIR / name, home / ".p" / "bin" / name)
    env = {
        "HOME": str(home),
        "PATH": f"{shell_dir(home, SHELLS[shell])}:{os.environ['PATH']}",
        "SHELL": "/bin/sh",
        "LANG": "C.UTF-8",
        "TMUX_TMPDIR": str(home),  # where `tmux -L` sockets go (the long-HOME fallback)
    }
    sock = home / ".p" / "tmux.sock"
    return Agent(home=home, shell=shell, env=env, tmux_args=["-S", str(sock)])


def destroy(agent: Agent) -> None:
    agent.tmux("kill-server")
    shutil.rmtree(agent.home, ignore_errors=True)


@pytest.fixture(params=sorted(SHELLS))
def shell(request) -> str:
    return request.param


@pytest.fixture
def agent(shell: str):
    a = make_agent(short_home(), shell)
    yield a
    destroy(a)


def run_to_end(agent: Agent, job_id: str) -> int:
    """Wait for the job's exitcode, then close its session with a key press."""
    code = agent.exitcode(job_id)
    agent.press_key(job_id)
    return code


# --- hello -----------------------------------------------------------------------------------------


def test_hello_reports_every_field_and_creates_dirs(agent: Agent):
    proc = agent.run("hello")
    assert proc.returncode == 0, proc.stderr
    reply = parse_kv(proc.stdout)
    assert set(reply) == {"agent_version", "arch", "arch_raw", "os", "tmux", "rsync", "python3", "home"}
    assert re.search(r'^P_AGENT_VERSION="?' + re.escape(reply["agent_version"]), AGENT.read_text(), re.M)
    assert reply["os"] == os.uname().sysname
    assert reply["arch_raw"] == os.uname().machine
    assert reply["tmux"] == subprocess.run(["tmux", "-V"], capture_output=True, text=True).stdout.split()[1]
    if shutil.which("rsync"):
        assert reply["rsync"] == subprocess.run(["rsync", "--version"], capture_output=True, text=True
                                                ).stdout.split()[2].lstrip("v")
    assert reply["python3"] == shutil.which("python3", path=agent.env["PATH"])
    assert reply["home"] == str(agent.home)
    for sub in ("bin", "jobs", "workdirs"):
        assert (agent.ph / sub).is_dir()


def test_hello_df_adds_the_free_space_and_running_jobs_and_refuses_other_words(agent: Agent):
    plain = parse_kv(agent.run("hello").stdout)
    proc = agent.run("hello", "df")
    assert proc.returncode == 0, proc.stderr
    reply = parse_kv(proc.stdout)
    assert set(reply) == set(plain) | {"free_kb", "jobs_running"}
    assert int(reply["free_kb"]) > 0 and reply["jobs_running"] == "0"
    assert {k: v for k, v in reply.items() if k in plain} == plain
    for bad in (["disk"], ["df", "df"]):
        proc = agent.run("hello", *bad)
        assert proc.returncode == 2 and b"hello [df]" in proc.stderr, proc.stderr


@pytest.mark.parametrize("raw, folded", [
    ("x86_64", "amd64"), ("amd64", "amd64"), ("aarch64", "aarch64"), ("arm64", "aarch64"),
    ("riscv64", "riscv64"), ("sparc64", "other"),
])
def test_hello_folds_arch_aliases(agent: Agent, raw: str, folded: str):
    fake = agent.home / "fakebin"
    fake.mkdir()
    (fake / "uname").write_text(f'#!/bin/sh\ncase "$1" in -m) echo {raw} ;; *) echo FakeOS ;; esac\n')
    (fake / "uname").chmod(0o755)
    proc = agent.run("hello", env={"PATH": f"{fake}:{agent.env['PATH']}"})
    assert proc.returncode == 0, proc.stderr
    reply = parse_kv(proc.stdout)
    assert (reply["arch"], reply["arch_raw"], reply["os"]) == (folded, raw, "FakeOS")


def test_hello_reports_missing_tools(agent: Agent):
    bare = agent.home / "barebin"
    bare.mkdir()
    for tool in ("uname", "head", "cat", "mkdir", "chmod", "tr", "wc"):
        (bare / tool).symlink_to(shutil.which(tool))
    proc = agent.run("hello", env={"PATH": str(bare)})
    assert proc.returncode == 0, proc.stderr
    reply = parse_kv(proc.stdout)
    assert (reply["tmux"], reply["rsync"], reply["python3"]) == ("missing", "missing", "missing")


# --- refusals --------------------------------------------------------------------------------------

BAD_IDS = [
    "",
    "nope",
    "../../etc",
    "12345678-1234-1234-1234-1234567890AB",
    "12345678-1234-1234-1234-1234567890a",
    "12345678-1234-1234-1234-1234567890abc",
    "12345678-1234-1234-1234-1234567890a\n",
    "12345678_1234-1234-1234-1234567890ab",
    "1234567*-1234-1234-1234-1234567890ab",
    "../jobs/12345678-1234-1234-1234-123456",
]


@pytest.mark.parametrize("bad", BAD_IDS)
def test_bad_job_id_is_refused_before_touching_anything(shell: str, bad: str):
    home = short_home()
    try:
        env = {"HOME": str(home), "PATH": os.environ["PATH"]}
        for args in (["start", bad, "w", "/c", "home", "shell", "true", "true"], ["status", bad],
                     ["status", str(uuid.uuid4()), bad], ["follow", bad, "0", "0"], ["attach", bad],
                     ["run-job", bad]):
            proc = subprocess.run([*shell_argv(shell), str(AGENT), *args], env=env, capture_output=True)
            assert proc.returncode == 2, (args, proc)
            assert proc.stdout == b""
            assert proc.stderr.startswith(b"p-agent: ")
        assert list(home.iterdir()) == []
    finally:
        shutil.rmtree(home, ignore_errors=True)


def test_bad_arguments_are_refused(agent: Agent):
    job_id = str(uuid.uuid4())
    for args in (["start", job_id, "w", "/c", "nowhere", "shell", "true", "true"],
                 ["start", job_id, "w", "/c", "home", "perl", "true", "true"],
                 ["start", job_id, "w"], ["follow", job_id, "-1", "0"], ["follow", job_id, "0", "2"],
                 ["statusline", "p-1234"], ["statusline", "../x"], ["frobnicate"], []):
        proc = agent.run(*args)
        assert proc.returncode == 2, (args, proc)
        assert proc.stderr.startswith(b"p-agent: ")
    assert not (agent.ph / "jobs").exists() or list((agent.ph / "jobs").iterdir()) == []


def test_start_without_synced_workdir_fails(agent: Agent):
    proc = agent.run("start", str(uuid.uuid4()), "w", "/c", "sync", "shell", "true", "true")
    assert proc.returncode == 1
    assert b"does not exist" in proc.stderr
    assert list((agent.ph / "jobs").iterdir()) == []


# --- output capture --------------------------------------------------------------------------------


def test_job_that_exits_immediately_is_captured(agent: Agent):
    job_id = agent.start("printf 'hi'")
    assert run_to_end(agent, job_id) == 0
    assert agent.log(job_id) == b"hi"


def test_invalid_utf8_and_every_byte_are_captured_exactly(agent: Agent):
    data = b"\xff\xfe\xc3\x28\xa0\xa1\xe2\x82\n\xf0\x28\x8c\xbc\xed\xa0\x80" + bytes(range(256)) + b"end\n"
    job_id = agent.start_argv(["cat", "data.bin"], files={"data.bin": data})
    assert run_to_end(agent, job_id) == 0
    assert pty_normalised(agent.log(job_id)) == data


def test_five_megabyte_single_line_is_captured_exactly(agent: Agent):
    data = (b"0123456789abcdef" * (5 * 1024 * 1024 // 16))[:5_000_000] + b"\n"
    job_id = agent.start_argv(["cat", "big.txt"], files={"big.txt": data})
    assert agent.exitcode(job_id, timeout=120) == 0
    log = agent.log(job_id)
    assert len(log) == len(data) + 1
    assert pty_normalised(log) == data
    agent.press_key(job_id)
    proc = agent.run("follow", job_id, "3333333", "1")
    assert proc.returncode == 0
    assert proc.stdout == log[3333333:]


def test_job_files_are_written(agent: Agent):
    job_id = agent.start("exit 3", display="the display")
    assert run_to_end(agent, job_id) == 3
    jd = agent.job_dir(job_id)
    assert (jd / "cmd").read_text() == "the display\n"
    assert (jd / "cwd").read_text() == "/client/cwd\n"
    assert (jd / "worker").read_text() == "testw\n"
    assert (jd / "tmux_session").read_text() == session(job_id) + "\n"
    assert (jd / "mode").read_text() == "shell\n"
    assert (jd / "workdir").read_text() == "sync\n"
    assert (jd / "payload").read_text() == "exit 3"
    assert (jd / "login_shell").read_text() == "/bin/sh\n"
    assert (jd / "exitcode").read_text() == "3\n"
    started, ended = int((jd / "started_at").read_text()), int((jd / "ended_at").read_text())
    assert started <= ended <= time.time() + 1


def test_banner_is_shown_but_not_logged(agent: Agent):
    job_id = agent.start("echo visible; exit 3")
    assert agent.exitcode(job_id) == 3
    pane = retry_until(lambda: (p := agent.pane(job_id)) and BANNER.format(3) in p and p, what="banner")
    assert "visible" in pane
    assert b"Job done" not in agent.log(job_id)
    assert SENTINEL not in agent.log(job_id)
    assert agent.log(job_id) == b"visible\r\n"
    agent.press_key(job_id)
    assert not agent.has_session(job_id)


def process_group_runs(pgid: int, name: str) -> bool:
    """Whether a process called NAME is in process group PGID (Linux /proc)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        comm, rest = text[text.index("(") + 1:text.rindex(")")], text[text.rindex(")") + 2:].split()
        if comm == name and int(rest[2]) == pgid:
            return True
    return False


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
def test_ctrl_c_kills_the_job_and_records_130(agent: Agent):
    job_id = agent.start_argv(["sleep", "100"])
    target = f"={session(job_id)}:"
    pane_pid = int(agent.tmux("display", "-p", "-t", target, "#{pane_pid}").stdout)
    retry_until(lambda: process_group_runs(pane_pid, "sleep"), what="sleep to run")
    agent.tmux("send-keys", "-t", target, "C-c")
    assert agent.exitcode(job_id) == 130
    retry_until(lambda: BANNER.format(130) in agent.pane(job_id), what="banner")
    agent.press_key(job_id)


def test_ctrl_c_trapped_by_the_job_records_the_jobs_own_exit(agent: Agent):
    job_id = agent.start("trap 'echo caught; exit 5' INT; echo ready; sleep 100; echo not-reached")
    retry_until(lambda: b"ready" in agent.log(job_id), what="the job to start")
    pane_pid = int(agent.tmux("display", "-p", "-t", f"={session(job_id)}:", "#{pane_pid}").stdout)
    retry_until(lambda: process_group_runs(pane_pid, "sleep"), what="sleep to run")
    agent.tmux("send-keys", "-t", f"={session(job_id)}:", "C-c")
    assert run_to_end(agent, job_id) == 5
    assert pty_normalised(agent.log(job_id)).replace(b"^C", b"") == b"ready\ncaught\n"  # ^C: the tty's echo


def test_keys_typed_during_the_job_do_not_close_the_session(agent: Agent):
    job_id = agent.start("read line; echo got $line; sleep 0.5")
    target = f"={session(job_id)}:"
    agent.tmux("send-keys", "-t", target, "one", "Enter")
    retry_until(lambda: "got one" in agent.pane(job_id), what="the job to read")
    agent.tmux("send-keys", "-t", target, "typed ahead")
    assert agent.exitcode(job_id) == 0
    retry_until(lambda: BANNER.format(0) in agent.pane(job_id), what="banner")
    time.sleep(0.3)  # give a wrongly kept type-ahead the chance to close the session
    assert agent.has_session(job_id)
    agent.press_key(job_id)


def test_argv_round_trips_exactly(agent: Agent):
    args = ["a b", "it's", 'say "hi"', "$HOME", "a;b", "*", "line1\nline2", "ünïcødé ✓ 漢字", "", "\\", "-n",
            "`id`", "$(id)", "  lead"]
    job_id = agent.start_argv(["python3", "-c", "import sys,json; print(json.dumps(sys.argv[1:]))", *args])
    assert run_to_end(agent, job_id) == 0
    assert json.loads(pty_normalised(agent.log(job_id))) == args


def test_job_has_a_terminal_and_its_environment(agent: Agent):
    job_id = agent.start('test -t 0 && test -t 1 && echo "tty $P_JOB_ID $SHELL $PWD"')
    assert run_to_end(agent, job_id) == 0
    wd = agent.ph / "workdirs" / job_id
    assert agent.log(job_id) == f"tty {job_id} /bin/sh {wd}\r\n".encode()


def test_workdir_home_runs_in_home(agent: Agent):
    job_id = agent.start("pwd", workdir="home")
    assert run_to_end(agent, job_id) == 0
    assert agent.log(job_id) == f"{agent.home}\r\n".encode()
    assert not (agent.ph / "workdirs" / job_id).exists()


# --- login shells ----------------------------------------------------------------------------------


def add_mybin(agent: Agent) -> None:
    mybin = agent.home / "mybin"
    mybin.mkdir()
    (mybin / "hello-p").write_text("#!/bin/sh\necho from-mybin\n")
    (mybin / "hello-p").chmod(0o755)


@pytest.mark.skipif(not Path("/bin/bash").exists(), reason="needs bash")
def test_bash_login_shell_reads_profile(agent: Agent):
    add_mybin(agent)
    (agent.home / ".profile").write_text('export PATH="$HOME/mybin:$PATH"\n')
    env = {"SHELL": "/bin/bash"}
    argv_job = agent.start_argv(["hello-p"], env=env)
    shell_job = agent.start('hello-p; echo "shell=$SHELL ${BASH_VERSION:+bash}"', env=env)
    assert run_to_end(agent, argv_job) == 0
    assert run_to_end(agent, shell_job) == 0
    assert agent.log(argv_job) == b"from-mybin\r\n"
    assert agent.log(shell_job) == b"from-mybin\r\nshell=/bin/bash bash\r\n"
    assert (agent.job_dir(argv_job) / "login_shell").read_text() == "/bin/bash\n"


@pytest.mark.skipif(not shutil.which("zsh"), reason="needs zsh")
def test_zsh_login_shell_reads_zprofile(agent: Agent):
    add_mybin(agent)
    (agent.home / ".zprofile").write_text('export PATH="$HOME/mybin:$PATH"\n')
    env = {"SHELL": shutil.which("zsh")}
    argv_job = agent.start_argv(["hello-p"], env=env)
    shell_job = agent.start('hello-p && echo "zsh ${ZSH_VERSION:+yes}"', env=env)
    assert run_to_end(agent, argv_job) == 0
    assert run_to_end(agent, shell_job) == 0
    assert agent.log(argv_job) == b"from-mybin\r\n"
    assert agent.log(shell_job) == b"from-mybin\r\nzsh yes\r\n"


@pytest.mark.skipif(not shutil.which("fish"), reason="needs fish")
def test_fish_login_shell_reads_its_config(agent: Agent):
    add_mybin(agent)
    conf = agent.home / ".config" / "fish"
    conf.mkdir(parents=True)
    (conf / "config.fish").write_text("set -gx PATH $HOME/mybin $PATH\n")
    env = {"SHELL": shutil.which("fish")}
    argv_job = agent.start_argv(["hello-p", "it's $x"], env=env)
    shell_job = agent.start("hello-p; and echo fish $FISH_VERSION | string replace -r '[0-9].*' N", env=env)
    assert run_to_end(agent, argv_job) == 0
    assert run_to_end(agent, shell_job) == 0
    assert agent.log(argv_job) == b"from-mybin\r\n"
    assert agent.log(shell_job) == b"from-mybin\r\nfish N\r\n"


def test_unusable_shell_falls_back_to_sh(agent: Agent):
    job_id = agent.start("echo ok", env={"SHELL": "/nonexistent/shell"})
    assert run_to_end(agent, job_id) == 0
    assert (agent.job_dir(job_id) / "login_shell").read_text() == "/bin/sh\n"
    assert agent.log(job_id) == b"ok\r\n"


# --- status ----------------------------------------------------------------------------------------


def test_status_without_tmux_server(agent: Agent):
    missing = str(uuid.uuid4())
    assert agent.status(missing) == [[missing, "missing", "-", "-", "-", "closed"]]


def test_status_states(agent: Agent):
    running = agent.start_argv(["sleep", "100"])
    done = agent.start("exit 7")
    vanished = agent.start_argv(["sleep", "100"])
    missing = str(uuid.uuid4())
    agent.exitcode(done)
    assert agent.tmux("kill-session", "-t", f"={session(vanished)}").returncode == 0
    rows = agent.status(running, done, vanished, missing)
    started = {j: (agent.job_dir(j) / "started_at").read_text().strip() for j in (running, done, vanished)}
    ended = (agent.job_dir(done) / "ended_at").read_text().strip()
    assert rows == [
        [running, "running", "-", started[running], "-", "open"],
        [done, "done", "7", started[done], ended, "open"],
        [vanished, "vanished", "-", started[vanished], "-", "closed"],
        [missing, "missing", "-", "-", "-", "closed"],
    ]


# --- follow ----------------------------------------------------------------------------------------


def test_follow_from_offset(agent: Agent):
    job_id = agent.start("printf 0123456789")
    assert run_to_end(agent, job_id) == 0
    for offset, expected in ((0, b"0123456789"), (4, b"456789"), (10, b""), (99, b"")):
        for follow in ("0", "1"):
            proc = agent.run("follow", job_id, str(offset), follow)
            assert (proc.returncode, proc.stdout) == (0, expected)


def test_follow_streams_until_the_job_ends(agent: Agent):
    payload = "printf 'first\\377'; while [ ! -e go ]; do sleep 0.05; done; head -c 300000 big; printf last"
    big = bytes(range(256)) * 1200
    job_id = agent.start(payload, files={"big": big})
    follower = subprocess.Popen(agent.argv("follow", job_id, "2", "1"), env=agent.env, stdout=subprocess.PIPE)
    try:
        retry_until(lambda: agent.log(job_id).startswith(b"first"), what="first output")
        assert follower.poll() is None
        (agent.ph / "workdirs" / job_id / "go").touch()
        out, _ = follower.communicate(timeout=30)
    finally:
        follower.kill()
    assert follower.returncode == 0
    assert (agent.job_dir(job_id) / "exitcode").exists()
    assert out == agent.log(job_id)[2:]
    assert pty_normalised(out) == b"rst\xff" + big[:300000] + b"last"
    agent.press_key(job_id)
    log = agent.log(job_id)
    for offset in (1, 65535, 65536, 65537, 131072 + 7, 200001, len(log) - 1, len(log)):
        proc = agent.run("follow", job_id, str(offset), "0")
        assert (proc.returncode, proc.stdout) == (0, log[offset:]), offset


def test_follow_of_vanished_job_ends_with_error(agent: Agent):
    job_id = agent.start("printf before; sleep 100")
    retry_until(lambda: agent.log(job_id) == b"before", what="output")
    follower = subprocess.Popen(agent.argv("follow", job_id, "0", "1"), env=agent.env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
    try:
        agent.tmux("kill-session", "-t", f"={session(job_id)}")
        out, errs = follower.communicate(timeout=30)
    finally:
        follower.kill()
    assert follower.returncode == 1
    assert out == b"before"
    assert b"vanished" in errs


def test_follow_missing_job_fails(agent: Agent):
    proc = agent.run("follow", str(uuid.uuid4()), "0", "1")
    assert proc.returncode == 1
    assert proc.stderr.startswith(b"p-agent: ")


# --- attach and the status bar ---------------------------------------------------------------------


@pytest.fixture
def outer(agent: Agent):
    """A second tmux server (a terminal for `attach`), on its own socket."""
    sock = agent.home / "outer.sock"

    def tmux(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["tmux", "-S", str(sock), "-f", "/dev/null", *args], capture_output=True,
                              text=True, env={**os.environ, "TERM": "xterm-256color"})
    yield tmux
    tmux("kill-server")


def attach_in(outer, agent: Agent, job_id: str) -> None:
    env = " ".join(shlex.quote(f"{k}={v}") for k, v in agent.env.items())
    cmd = f"env {env} {shlex.join(agent.argv('attach', job_id))}; echo attach-exited-$?; sleep 100"
    assert outer("new-session", "-d", "-s", "outer", "-x", "150", "-y", "30", cmd).returncode == 0


def test_attach_shows_job_and_status_bar_and_detaches(agent: Agent, outer):
    display = "sleepy #[fg=red] ## #{pane_id} %H job"
    job_id = agent.start("echo in-job; sleep 100", display=display)
    attach_in(outer, agent, job_id)
    screen = retry_until(lambda: (s := outer("capture-pane", "-p", "-t", "outer").stdout)
                         and STATUS_BAR.search(s) and "in-job" in s and s, what="status bar")
    bar = STATUS_BAR.search(screen).group(0)
    assert bar.startswith(f" {session(job_id)}  testw  {display.replace('#', '♯')}  [running] 0:00:")
    outer("send-keys", "-t", "outer", "C-b", "d")
    retry_until(lambda: "attach-exited-0" in outer("capture-pane", "-p", "-t", "outer").stdout, what="detach")
    assert agent.status(job_id)[0][1] == "running"


def test_attach_to_finished_job_then_key_closes(agent: Agent, outer):
    job_id = agent.start("exit 4")
    assert agent.exitcode(job_id) == 4
    attach_in(outer, agent, job_id)
    retry_until(lambda: BANNER.format(4) in outer("capture-pane", "-p", "-t", "outer").stdout, what="banner")
    retry_until(lambda: "[exit 4] 0:00:0" in outer("capture-pane", "-p", "-t", "outer").stdout, what="bar")
    outer("send-keys", "-t", "outer", "q")
    retry_until(lambda: "attach-exited-0" in outer("capture-pane", "-p", "-t", "outer").stdout, what="exit")
    assert not agent.has_session(job_id)


def test_attach_without_session_exits_3(agent: Agent):
    job_id = agent.start("true")
    run_to_end(agent, job_id)
    for target in (job_id, str(uuid.uuid4())):
        proc = agent.run("attach", target)
        assert proc.returncode == 3
        assert proc.stderr.startswith(b"p-agent: ")


def test_statusline_text(agent: Agent):
    long_cmd = "echo " + "x" * 100
    job_id = agent.start("sleep 100", display=long_cmd)
    proc = agent.run("statusline", session(job_id))
    assert proc.returncode == 0
    line = proc.stdout.decode()
    assert STATUS_BAR.fullmatch(line.rstrip("\n"))
    assert line.startswith(f" {session(job_id)}  testw  echo xxx")
    assert "…  [running] 0:00:0" in line
    assert len(line.split("  ")[2]) == 60
    assert agent.run("statusline", "p-00000000").stdout == b" p-00000000\n"


def test_statusline_shows_hash_as_sharp_sign(agent: Agent):
    job_id = agent.start("sleep 100", display="a #[fg=red] ##")
    assert agent.run("statusline", session(job_id)).stdout.decode().startswith(
        f" {session(job_id)}  testw  a ♯[fg=red] ♯♯  [running] ")


def test_statusline_without_python3(agent: Agent):
    job_id = agent.start("sleep 100", display="multi\nline\tcmd  " + "é" * 80)  # odd: cut splits an é
    env = {"PATH": agent.env["PATH"].replace(os.path.dirname(shutil.which("python3")), "/nonexistent")}
    if shutil.which("python3", path=env["PATH"]):
        (agent.ph / "bin" / "p_agent.py").unlink()
    line = agent.run("statusline", session(job_id), env=env).stdout.decode()  # strict: no split character
    assert line.startswith(f" {session(job_id)}  testw  multi line cmd  é")
    assert "…  [running] 0:00:0" in line


# --- awkward homes ---------------------------------------------------------------------------------


def test_home_with_space_quote_hash_and_percent(shell: str):
    a = make_agent(short_home(prefix="pa h'%Y#{x}"), shell)
    try:
        job_id = a.start("printf weird-home")
        assert run_to_end(a, job_id) == 0
        assert a.log(job_id) == b"weird-home"
        assert re.fullmatch(r" p-\w+  testw  printf weird-home  \[exit 0\] 0:00:0\d\n",
                            a.run("statusline", session(job_id)).stdout.decode())
    finally:
        destroy(a)


def test_long_home_uses_a_named_socket(shell: str):
    base = short_home()
    home = base / ("h" * 100)
    home.mkdir()
    a = make_agent(home, shell)
    cksum = subprocess.run(["cksum"], input=str(home).encode(), capture_output=True).stdout.split()[0]
    a.tmux_args = ["-L", f"p-{cksum.decode()}"]
    a.env["TMUX_TMPDIR"] = str(base)
    try:
        job_id = a.start_argv(["sleep", "100"])
        assert a.status(job_id)[0][1] == "running"
        assert not (a.ph / "tmux.sock").exists()
        assert (base / f"tmux-{os.getuid()}" / f"p-{cksum.decode()}").is_socket()
    finally:
        destroy(a)
        shutil.rmtree(base, ignore_errors=True)


def test_tmux_env_of_callers_tmux_is_ignored(agent: Agent):
    job_id = agent.start("echo nested", env={"TMUX": "/nonexistent/sock,1,0", "TMUX_PANE": "%9"})
    assert run_to_end(agent, job_id) == 0
    assert agent.log(job_id) == b"nested\r\n"


def test_tmux_conf_keeps_default_keys(agent: Agent):
    job_id = agent.start("true")
    run_to_end(agent, job_id)
    conf = (agent.ph / "tmux.conf").read_text()
    assert "set -g default-shell /bin/sh" in conf
    assert "set -g status-interval 1" in conf
    assert not re.search(r"^\s*(bind|unbind|set\S* -g prefix)", conf, re.M)
