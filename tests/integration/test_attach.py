"""Attach as a person uses it: `p` runs in a real terminal (a client-side tmux pane driven with
send-keys and read with capture-pane), on the built-in `local` worker and on an SSH worker.

Screen layout while attached: p's tmux client fills the terminal; the job's pane is every row but the
last, which is the job's status bar (`p-<short>  <worker>  <command>  [<status>] H:MM:SS`).
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers import retry_until, run_p

BANNER = "--- Job done [exit {}]. Press any key to detach. ---"
SUMMARY = r"^job (?P<short>[0-9a-f]{{8}}) done \[exit {}\] in 0:00:0\d$"
BAR = re.compile(
    r"^ p-(?P<short>[0-9a-f]{8})  (?P<worker>\S+)  (?P<cmd>.+?)  "
    r"\[(?P<state>[^\]]+)\] (?P<h>\d+):(?P<m>\d\d):(?P<s>\d\d)\s*$"
)


@dataclass
class Target:
    """A worker to run jobs on, and the home of the client that runs `p`."""

    name: str
    words: list[str]  # what goes between `p` and `--`
    home: Path

    def p(self, *argv: str) -> str:
        """The command line `p [<worker>] -- argv…` for the terminal."""
        return shlex.join(["p", *self.words, "--", *argv])

    def records(self) -> list[dict]:
        return [json.loads(f.read_text()) for f in (self.home / ".local/share/p/jobs").glob("*.json")]

    def job(self) -> dict:
        """The only job record, once `p` has written it."""
        return retry_until(lambda: (lambda r: r[0] if len(r) == 1 else None)(self.records()), 10)


@pytest.fixture(params=["local", "ssh"])
def target(request, isolated_home, tmp_path, monkeypatch) -> Target:
    """`local` (the default, nothing registered) or `tw`, an SSH worker on the loopback sshd."""
    if request.param == "ssh":
        request.getfixturevalue("ssh_client_config")
        rc, _, err = run_p("worker", "register", "testworker", "-n", "tw")
        assert rc == 0, err
        target = Target("tw", ["tw"], isolated_home)
    else:
        target = Target("local", [], isolated_home)
    project = tmp_path / "proj"
    project.mkdir()
    (project / "input.txt").write_text("payload\n")
    monkeypatch.chdir(project)
    return target


@pytest.fixture
def term(terminal, target):
    """terminal(), started in the project directory."""
    return lambda line, **kw: terminal(line, cwd=Path.cwd(), **kw)


def status_bar(t) -> re.Match | None:
    """The job's status bar: the last line of the screen, parsed."""
    lines = t.capture().splitlines()
    return BAR.match(lines[-1]) if lines else None


def wait_bar(t, state: str = "running", timeout: float = 10) -> re.Match:
    def seen():
        bar = status_bar(t)
        return bar if bar and bar["state"] == state else None

    return retry_until(seen, timeout, message=lambda: f"no [{state}] status bar; screen:\n{t.capture()}")


def seconds(bar: re.Match) -> int:
    return int(bar["h"]) * 3600 + int(bar["m"]) * 60 + int(bar["s"])


def wait_banner(t, code: int) -> str:
    """Wait for the done banner as a line of its own; return the screen."""
    line = re.compile("^" + re.escape(BANNER.format(code)) + "$", re.M)
    t.wait_for(line)
    return t.capture()


def finish(t, code: int) -> re.Match:
    """Banner → a key → p's summary line; p's exit status is the job's. Returns the summary match."""
    wait_banner(t, code)
    t.send_keys("x")
    assert t.exit_status() == code, t.capture()
    return t.wait_for(re.compile(SUMMARY.format(code), re.M))


# -- 1. output, banner, key, summary, exit code ----------------------------------------------------

@pytest.mark.parametrize("code", [3, 0])
def test_done_banner_key_summary_and_exit_code(target, term, code):
    t = term(target.p("sh", "-c", f"echo started; sleep 1; exit {code}"))
    early = t.wait_for(re.compile(r"^started$", re.M)).string
    assert "Job done" not in early  # live output, while the job still runs
    screen = wait_banner(t, code)
    lines = screen.splitlines()
    banner = BANNER.format(code)
    assert lines.index("started") < lines.index(banner)
    job = target.job()

    t.send_keys("x")
    assert t.exit_status() == code, t.capture()
    summary = t.wait_for(re.compile(SUMMARY.format(code), re.M))
    assert summary["short"] == job["id"][:8]
    assert "inside tmux" not in t.capture()
    job = target.job()
    assert (job["status"], job["exit_code"]) == ("done", code)


# -- 2. status bar ---------------------------------------------------------------------------------

def test_status_bar_shows_job_worker_command_and_advancing_clock(target, term):
    t = term(target.p("sleep", "30"))
    first = wait_bar(t)
    job = target.job()
    assert first["short"] == job["id"][:8]
    assert first["worker"] == target.name
    assert first["cmd"] == "sleep 30"
    # the bar is at the very bottom of the terminal: the job's screen is every row above it
    assert len(t.capture().splitlines()) == t.size()[1]
    later = retry_until(lambda: (b := status_bar(t)) and seconds(b) > seconds(first) and b, 5,
                        message=lambda: t.capture())
    assert later["state"] == "running"
    t.send_keys("C-c")
    finish(t, 130)


# -- 3. detach, ls, reattach by prefix, Ctrl+C -------------------------------------------------------

def test_detach_then_reattach_by_prefix(target, term):
    t = term(target.p("sleep", "30"))
    wait_bar(t)
    job = target.job()
    short = job["id"][:8]
    t.send_keys("C-b")
    t.send_keys("d")
    assert t.exit_status() == 0, t.capture()
    t.wait_for(f"p attach {short}")

    rc, out, err = run_p("ls")
    assert rc == 0, err
    rows = [line for line in out.decode().splitlines() if line.startswith(short)]
    assert len(rows) == 1 and "running" in rows[0] and target.name in rows[0], out.decode()

    t2 = term(shlex.join(["p", "attach", short[:5]]))
    bar = wait_bar(t2)
    assert bar["short"] == short
    t2.send_keys("C-c")
    summary = finish(t2, 130)
    assert summary["short"] == short
    job = target.job()
    assert (job["status"], job["exit_code"]) == ("done", 130)


def test_reattach_to_a_finished_job_shows_its_banner_once(target, term):
    t = term(target.p("sh", "-c", "echo finished; exit 4"))
    wait_banner(t, 4)
    t.send_keys("C-b")
    t.send_keys("d")  # detach from the banner screen: the job is done, its session still open
    assert t.exit_status() == 4, t.capture()
    short = target.job()["id"][:8]
    assert re.search(SUMMARY.format(4), t.capture(), re.M), t.capture()

    t2 = term(shlex.join(["p", "attach", short[:6]]))
    screen = wait_banner(t2, 4)
    assert "finished" in screen.splitlines()
    assert wait_bar(t2, "exit 4")["short"] == short
    finish(t2, 4)

    t3 = term(shlex.join(["p", "attach", short]))  # key pressed: the session is closed now
    assert t3.exit_status() != 0, t3.capture()
    t3.wait_for(f"p logs {short}")


# -- 4. Ctrl+C is SIGINT for the job -----------------------------------------------------------------

SIGINT_JOB = (
    "import os, signal, sys, time\n"
    "def on_int(*_):\n"
    "    print('got SIGINT', flush=True)\n"
    "    os._exit(7)\n"
    "signal.signal(signal.SIGINT, on_int)\n"
    "print('ready', flush=True)\n"
    "time.sleep(30)\n"
)


def test_ctrl_c_reaches_job_as_sigint(target, term):
    t = term(target.p("python3", "-c", SIGINT_JOB))
    t.wait_for(re.compile(r"^ready$", re.M))
    t.send_keys("C-c")
    t.wait_for(re.compile(r"got SIGINT$", re.M))  # after the tty's echo of ^C
    finish(t, 7)


# -- 5. raw mode: every key reaches the job --------------------------------------------------------

RAW_JOB = (
    "import os, sys, tty\n"
    "tty.setraw(0)\n"
    "sys.stdout.write('ready\\r\\n'); sys.stdout.flush()\n"
    "for _ in range(3):\n"
    "    sys.stdout.write('read ' + repr(os.read(0, 1)) + '\\r\\n'); sys.stdout.flush()\n"
)


def test_ctrl_z_backslash_and_s_reach_the_job(target, term):
    t = term(target.p("python3", "-c", RAW_JOB))
    t.wait_for(re.compile(r"^ready$", re.M))
    t.send_keys("C-z", "C-\\", "C-s")
    screen = wait_banner(t, 0)
    reads = [line for line in screen.splitlines() if line.startswith("read ")]
    assert reads == [r"read b'\x1a'", r"read b'\x1c'", r"read b'\x13'"], screen
    finish(t, 0)


# -- 6. terminal size at attach and on resize ------------------------------------------------------

SIZE_JOB = 'trap \'echo "size=$(stty size)"\' WINCH; echo "size=$(stty size)"; while :; do sleep 0.1; done'


def sizes(t) -> list[str]:
    return [line[5:] for line in t.capture().splitlines() if re.fullmatch(r"size=\d+ \d+", line)]


def test_job_sees_terminal_size_and_resizes(target, term):
    t = term(target.p("sh", "-c", SIZE_JOB), cols=120, rows=40)
    wait_bar(t)
    # status on: the job's pane is one row shorter than the terminal
    retry_until(lambda: sizes(t) and sizes(t)[-1] == "39 120", 10, message=lambda: t.capture())
    t.resize(100, 30)
    retry_until(lambda: sizes(t) and sizes(t)[-1] == "29 100", 10, message=lambda: t.capture())
    # the bar moved to the new bottom row
    retry_until(lambda: status_bar(t) and len(t.capture().splitlines()) == 30, 5, message=t.capture)
    t.send_keys("C-c")
    finish(t, 130)


def test_job_started_for_attach_sees_the_terminal_size_at_once(target, term):
    """The session is created at the client's size, so a job reading it only at start is right."""
    t = term(target.p("sh", "-c", 'echo "size:$(stty size)"; exit 0'), cols=100, rows=30)
    screen = wait_banner(t, 0)
    assert "size:29 100" in screen.splitlines(), screen
    finish(t, 0)


# -- 7. UTF-8 and TERM -----------------------------------------------------------------------------

TEXT = "┌─┐ 漢字 é"


def test_utf8_intact_and_proper_term(target, term):
    t = term(target.p("sh", "-c", f"printf '%s\\n' '{TEXT}'; echo \"TERM=$TERM\""))
    screen = wait_banner(t, 0)
    lines = screen.splitlines()
    assert TEXT in lines, screen
    terms = [line for line in lines if line.startswith("TERM=")]
    assert len(terms) == 1 and re.fullmatch(r"TERM=(screen|tmux)[-.\w]*", terms[0]), screen
    finish(t, 0)


# -- 8. stdout not a terminal: stream, no attach ---------------------------------------------------

def test_pipe_streams_without_attaching(target, term):
    p = target.p("sh", "-c", "echo hi; exit 5")
    t = term(f'{{ {p}; echo "p-exit=$?"; }} | cat')
    assert t.exit_status() == 0, t.capture()  # no key was needed: nothing attached
    lines = t.capture().splitlines()
    assert "hi" in lines and "p-exit=5" in lines, lines
    assert not [line for line in lines if "Job done" in line or BAR.match(line)], lines


# -- 9. p inside tmux ------------------------------------------------------------------------------

def test_inside_tmux_tells_how_to_detach_the_inner_session(target, term, isolated_home):
    # The terminal's wrapper unsets TMUX, so the command line sets it: the client terminal is tmux.
    client = isolated_home / "tmux-client" / "client.sock"
    t = term(f"TMUX={shlex.quote(str(client))},1,0 " + target.p("sh", "-c", "echo inner"))
    t.wait_for(re.compile(r"^inner$", re.M))
    finish(t, 0)
    hint = [line for line in t.capture().splitlines() if "inside tmux" in line]
    assert len(hint) == 1 and "Ctrl+B Ctrl+B D" in hint[0], t.capture()


# -- a terminal the worker has no terminfo for -----------------------------------------------------

def test_unknown_term_is_not_taken_for_a_detach(target, term):
    t = term("TERM=xterm-p-unknown " + target.p("sleep", "30"))

    def outcome():
        if status_bar(t):
            return "attached"
        return "ended" if t.status_file.exists() else None

    if retry_until(outcome, 10, message=lambda: t.capture()) == "attached":  # a fallback TERM
        t.send_keys("C-c")
        finish(t, 130)
        return
    short = target.job()["id"][:8]
    screen = t.capture()
    assert t.exit_status() != 0, screen
    assert "detached" not in screen and f"p attach {short}" in screen, screen
