"""Hardening points shown end to end, each against the real loopback sshd, real tmux and real rsync:
malformed config files, a hostile ~/.tmux.conf on the worker, an IPv6 worker, unreachable workers
(refused, blackhole) for every job command, owner-only local files, a ProxyJump hop whose host key
changed, and the README's bash-completion route.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import socket
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import retry_until, run_command, run_p
from support.processes import close_socket_owner, sockets_under
from support.sshd import SshServer
from support.workers import STANDARD_PATH, WorkerServer, running_server

from p_tasks.job import UNKNOWN, Job, new_id
from p_tasks.store import Store

CONNECT = 3  # ConnectTimeout of the unreachable hosts below (ssh_config), seconds
# p's own start-up and exit on a loaded 2-CPU machine; a bound, never a tight limit. It keeps the total
# under p's default connect timeout (10 s): a p that ignored ConnectTimeout would fail these bounds.
MARGIN = 6
BAR = re.compile(r"^ p-(?P<short>[0-9a-f]{8})  (?P<worker>\S+)  (?P<cmd>.+?)  \[(?P<state>[^\]]+)\] "
                 r"\d+:\d\d:\d\d\s*$")


def one_line(err: bytes) -> str:
    text = err.decode()
    assert text.count("\n") == 1 and text.endswith("\n") and "Traceback" not in text, text
    return text.rstrip("\n")


def timed_p(*args: str, **kw) -> tuple[int, bytes, bytes, float]:
    started = time.monotonic()
    rc, out, err = run_p(*args, timeout=60, **kw)
    return rc, out, err, time.monotonic() - started


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def add_ssh_config(path: Path, text: str) -> None:
    with open(path, "a") as cfg:
        cfg.write(text)


@pytest.fixture
def tw(ssh_client_config, tmp_path, monkeypatch):
    """Worker `tw` (alias testworker: the sshd fixture), registered; the CWD a one-file project."""
    rc, out, err = run_p("worker", "register", "testworker", "-n", "tw")
    assert rc == 0, err
    project = tmp_path / "proj"
    project.mkdir()
    (project / "in.txt").write_text("payload\n")
    monkeypatch.chdir(project)
    return ssh_client_config


class Blackhole:
    """A TCP listener that accepts connections and never says a word (no SSH banner)."""

    def __init__(self) -> None:
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        self.held: list[socket.socket] = []
        threading.Thread(target=self._hold, daemon=True).start()

    def _hold(self) -> None:
        try:
            while True:
                self.held.append(self.listener.accept()[0])
        except OSError:
            pass  # closed

    def close(self) -> None:
        self.listener.close()
        for conn in self.held:
            conn.close()


@pytest.fixture
def blackhole() -> Iterator[Blackhole]:
    hole = Blackhole()
    yield hole
    hole.close()


# -- 1. malformed config.yaml ------------------------------------------------------------------------

def _config_dir_files(home: Path) -> dict[str, bytes]:
    folder = home / ".config/p"
    return {f.name: f.read_bytes() for f in folder.iterdir()}


def _line_of(text: str, fragment: str) -> int:
    return next(n for n, line in enumerate(text.splitlines(), 1) if fragment in line)


def _malformed(valid: str, case: str) -> tuple[str, int]:
    """A broken config.yaml made from p's own valid one, and the line its error must name."""
    if case == "tab-indented line":  # not YAML: a tab cannot indent
        text = valid + "\t- name: w3\n"
        return text, len(text.splitlines())
    if case == "cut inside a key":  # a write stopped in the middle of `connection:`
        cut = valid.index("connection", valid.index("name: w2")) + len("conn")
        return valid[:cut], _line_of(valid, "name: w2") + 1
    # cut right after `- name: w2`: valid YAML, but the item has no connection
    cut = valid.index("name: w2") + len("name: w2\n")
    return valid[:cut], _line_of(valid, "name: w2")


@pytest.mark.parametrize("case", ["tab-indented line", "cut inside a key", "cut after an item's name"])
def test_malformed_config_one_line_with_file_and_line_and_left_alone(case, isolated_home, tmp_path,
                                                                     monkeypatch):
    for name, port in (("w1", 2201), ("w2", 2202)):
        assert run_p("worker", "register", f"me@127.0.0.1:{port}", "-n", name, "--no-check")[0] == 0
    path = isolated_home / ".config/p/config.yaml"
    text, line = _malformed(path.read_text(), case)
    path.write_text(text)
    # a job of w1 nobody watches: `p ls` has to ask its worker, for which it needs the config
    Store().save(Job(new_id(), "w1", str(tmp_path), ["make"], status=UNKNOWN, started_at=time.time()))
    before = _config_dir_files(isolated_home)
    monkeypatch.chdir(tmp_path)
    where = f"config file {path} line {line}: "
    for args in (["--", "true"], ["-n", "w2", "--", "true"], ["worker", "ls"], ["worker", "default", "w1"]):
        rc, out, err = run_p(*args)
        assert rc == 1, (args, out, err)
        assert one_line(err).startswith(f"p: {where}"), (args, err)
        assert _config_dir_files(isolated_home) == before, args
    # `p ls` answers from the local store (as with an unreachable worker) and names the problem
    rc, out, err = run_p("ls")
    assert rc == 0 and "make" in out.decode() and "unknown" in out.decode(), (out, err)
    assert where in one_line(err) and "they stay unknown" in err.decode(), err
    assert _config_dir_files(isolated_home) == before


# -- 2. a hostile ~/.tmux.conf on the worker -----------------------------------------------------------

HOSTILE_TMUX_CONF = "set -g prefix C-a\nunbind C-b\nunbind d\nset -g status off\nset -g status-style bg=red\n"


@pytest.fixture(scope="module")
def env_server() -> Iterator[WorkerServer]:
    """An sshd whose sessions take their environment from the worker's ~/.ssh/environment."""
    with running_server() as srv:
        yield srv


def client_for(srv: SshServer, home: Path, alias: str = "testworker") -> list[str]:
    """~/.ssh/config and known_hosts for srv under alias; returns the ssh argv to run things there."""
    ssh_dir = home / ".ssh"
    ssh_dir.mkdir(mode=0o700, exist_ok=True)
    config = ssh_dir / "config"
    config.write_text(f"Host {alias}\n    HostName {srv.host}\n    Port {srv.port}\n    User {srv.user}\n"
                      f"    IdentityFile {srv.client_key}\n    IdentitiesOnly yes\n")
    known = ssh_dir / "known_hosts"
    known.write_text(srv.known_hosts_line + "\n")
    return ["ssh", "-F", str(config), "-o", f"UserKnownHostsFile={known}", "-o", "BatchMode=yes", alias]


def test_hostile_user_tmux_conf_changes_neither_keys_nor_bar_and_p_stays_off_the_users_tmux(
    env_server, isolated_home, terminal, tmp_path, monkeypatch
):
    srv = env_server
    srv.ensure_running()
    srv.reset_worker()
    # Every session of the worker user (p's agent included) has TMUX_TMPDIR in the worker's home, so the
    # user's default tmux server is one this test owns, and any p session on it would be seen.
    user_tmux = srv.worker_home / "user-tmux"
    user_tmux.mkdir(mode=0o700)
    srv.write(".ssh/environment", f"PATH={STANDARD_PATH}\nTMUX_TMPDIR={user_tmux}\n", mode=0o600)
    for conf in (".tmux.conf", ".config/tmux/tmux.conf"):
        srv.write(conf, HOSTILE_TMUX_CONF)
    ssh = client_for(srv, isolated_home)

    def on_worker(command: str) -> str:
        rc, out, err = run_command([*ssh, command], timeout=30)
        assert rc == 0, (command, err)
        return out.decode().strip()

    on_worker("tmux new-session -d -s mine")  # the user's own tmux, with the hostile configuration
    assert on_worker("tmux show-options -gv prefix") == "C-a"  # it is really read there
    assert on_worker("tmux show-options -gv status") == "off"

    assert run_p("worker", "register", "testworker", "-n", "tw")[0] == 0
    monkeypatch.chdir(tmp_path)
    t = terminal(shlex.join(["p", "tw", "--", "sleep", "120"]), cwd=tmp_path)
    bar = retry_until(lambda: (lines := t.capture().splitlines()) and BAR.match(lines[-1]), 20,
                      message=lambda: t.capture())
    assert bar["worker"] == "tw" and bar["cmd"] == "sleep 120" and bar["state"] == "running"
    job = bar["short"]
    t.send_keys("C-b", "d")  # tmux's default keys, though the user's conf unbinds them
    t.wait_for(f"detached from job {job}", timeout=15)
    assert t.exit_status() == 0, t.capture()

    assert on_worker("tmux list-sessions -F '#{session_name}'").splitlines() == ["mine"]
    p_tmux = "tmux -S .p/tmux.sock"
    assert f"p-{job}" in on_worker(f"{p_tmux} list-sessions -F '#{{session_name}}'").splitlines()
    assert on_worker(f"{p_tmux} show-options -gv prefix") == "C-b"
    assert on_worker(f"{p_tmux} show-options -gv status") == "on"


# -- 3. an IPv6 worker: user@[::1]:port ----------------------------------------------------------------

class V6Server(SshServer):
    host = "::1"

    def _config_text(self) -> str:
        return super()._config_text().replace("AddressFamily inet\n", "AddressFamily inet6\n")


def _ipv6_loopback_missing() -> str | None:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
    except OSError as exc:
        return f"IPv6 loopback ::1 is not available here ({exc})"
    return None


@pytest.fixture(scope="module")
def v6_server() -> Iterator[V6Server]:
    reason = _ipv6_loopback_missing()
    if reason:
        pytest.skip(reason)
    with running_server(V6Server) as srv:
        yield srv


def test_worker_at_ipv6_literal_end_to_end(v6_server, isolated_home, tmp_path, monkeypatch):
    srv = v6_server
    srv.ensure_running()
    srv.reset_worker()
    ssh_dir = isolated_home / ".ssh"
    ssh_dir.mkdir(mode=0o700)
    (ssh_dir / "config").write_text(f"Host *\n    IdentityFile {srv.client_key}\n    IdentitiesOnly yes\n")
    (ssh_dir / "known_hosts").write_text(srv.known_hosts_line + "\n")
    assert srv.known_hosts_line.startswith(f"[::1]:{srv.port} ")
    rc, out, err = run_p("worker", "register", f"{srv.user}@[::1]:{srv.port}", "-n", "v6")
    assert rc == 0, err
    rc, out, err = run_p("-n", "v6", "--", "echo", "hi")
    assert rc == 0 and out.replace(b"\r\n", b"\n") == b"hi\n", (out, err)
    (tmp_path / "in.txt").write_text("through [::1]\n")  # rsync to `[::1]:path` too
    monkeypatch.chdir(tmp_path)
    rc, out, err = run_p("v6", "--", "cat", "in.txt")
    assert rc == 0 and out.replace(b"\r\n", b"\n") == b"through [::1]\n", (out, err)
    assert "Accepted publickey" in srv.log_tail(200) and "from ::1 port" in srv.log_tail(200)


# -- 4. blackhole: p's own wording, within ConnectTimeout ----------------------------------------------

def test_blackhole_says_no_greeting_within_connect_timeout(ssh_client_config, blackhole):
    add_ssh_config(ssh_client_config.config, f"\nHost hole\n    HostName 127.0.0.1\n"
                                             f"    Port {blackhole.port}\n    ConnectTimeout {CONNECT}\n")
    assert run_p("worker", "register", "hole", "--no-check")[0] == 0
    said = (f"127.0.0.1:{blackhole.port} accepted the connection but sent no SSH greeting within "
            f"{CONNECT}s")
    for name, args in (("hole", ["-n", "hole", "--", "true"]),
                       ("hole2", ["worker", "register", "hole", "-n", "hole2"])):
        rc, out, err, took = timed_p(*args)
        assert rc == 1 and one_line(err) == f"p: cannot reach worker '{name}': {said}", (args, err)
        assert CONNECT * 0.9 <= took < CONNECT + MARGIN, (args, took)
    assert blackhole.held, "p never connected to the blackhole"


# -- 5. no command hangs on an unreachable worker -----------------------------------------------------

@pytest.mark.parametrize("kind", ["refused", "blackhole"])
def test_job_commands_on_an_unreachable_worker_answer_in_one_line_and_keep_the_record(
    kind, tw, sshd, isolated_home, tmp_path, request
):
    rc, out, err = run_p("-d", "tw", "--", "sleep", "300")
    assert rc == 0, err
    job_id = out.decode().strip()
    record = isolated_home / f".local/share/p/jobs/{job_id}.json"
    port = request.getfixturevalue("blackhole").port if kind == "blackhole" else free_port()
    # the worker goes away: its alias now leads to a refused port or to a host that never answers
    moved = f"Port {port}\n    ConnectTimeout {CONNECT}\n"
    tw.config.write_text(tw.config.read_text().replace(f"Port {sshd.port}\n", moved))
    kept = record.read_bytes()
    short = job_id[:8]
    dest = tmp_path / "pulled"
    for args in (["logs", short], ["logs", "--tail", "5", short], ["stop", short], ["attach", short],
                 ["pull", short, "in.txt", str(dest)], ["rm", short], ["rm", "--force", short]):
        rc, out, err, took = timed_p(*args)
        line = one_line(err)
        assert rc == 1 and line.startswith("p: cannot reach worker 'tw': "), (args, line)
        if kind == "refused":  # p's own wording for every command, log streams included
            said = f"connection refused by 127.0.0.1:{port}; is sshd running there?"
            assert line.endswith(said), (args, line)
        else:
            assert re.search(r"timed out|no SSH greeting", line), (args, line)
        assert took < CONNECT + MARGIN, (args, took)
        assert record.read_bytes() == kept, args
    assert not dest.exists()
    rc, out, err = run_p("ls", "--json")  # the local store still answers
    assert rc == 0 and [j["id"] for j in json.loads(out)] == [job_id], (out, err)


# -- 7. local files are owner-only -------------------------------------------------------------------

def _modes_below(root: Path) -> dict[Path, int]:
    found = {}
    for dirpath, dirs, files in os.walk(root):
        for name in [*dirs, *files]:
            path = Path(dirpath, name)
            found[path] = path.lstat().st_mode
    return found


def _p_made_files(home: Path, before: dict[Path, int]) -> dict[Path, int]:
    """Everything below HOME that p (and the ssh/tmux it ran) created since `before`, with modes."""
    return {path: mode for path, mode in _modes_below(home).items()
            if path not in before and not stat.S_ISLNK(mode)}


@pytest.fixture
def p_made(tw, isolated_home):
    """Register (by `tw`), then a synced detached job still running, `p ls`, `p logs`: what p made."""
    before = {p: m for p, m in _modes_below(isolated_home).items() if ".ssh" in p.parts}
    rc, out, err = run_p("-d", "tw", "--", "sleep", "120")
    assert rc == 0, err
    job_id = out.decode().strip()
    assert run_p("ls")[0] == 0
    assert run_p("logs", job_id)[0] == 0
    made = _p_made_files(isolated_home, before)
    data, control = isolated_home / ".local/share/p", isolated_home / ".cache/p/ssh"
    names = {p.relative_to(isolated_home).as_posix() for p in made}
    for expected in (".config/p/config.yaml", ".config/p/.config.lock", f".local/share/p/jobs/{job_id}.json",
                     f".local/share/p/jobs/active/{job_id}", ".local/share/p/watch/tw.lock"):
        assert expected in names, (expected, sorted(names))
    assert any(p.parent == data / "jobs/latest" for p in made), sorted(names)
    assert any(stat.S_ISSOCK(m) and p.parent == control for p, m in made.items()), sorted(names)
    return made, control


def _loose(made: dict[Path, int]) -> list[str]:
    return [f"{oct(stat.S_IMODE(m))} {p}" for p, m in sorted(made.items()) if m & 0o077]


def test_local_files_and_dirs_p_creates_are_owner_only(p_made):
    made, control = p_made
    locks = [p for p in made if p.parent == control and p.name.endswith(".lock")]
    assert locks, "the ControlMaster lock was not created"
    assert _loose(made) == [], "\n".join(_loose(made))


# -- 8. a ProxyJump hop whose host key changed -------------------------------------------------------

def test_proxyjump_hop_with_a_changed_host_key_is_refused(ssh_client_config, sshd, isolated_home):
    """The hop (`localhost`, recorded under that name) is reinstalled with a new key; the target's own
    key is updated and fine. p refuses: the hop's changed key alone stops it."""
    add_ssh_config(ssh_client_config.config,
                   f"\nHost hop\n    HostName localhost\n    Port {sshd.port}\n    User {sshd.user}\n"
                   f"    IdentityFile {sshd.client_key}\n"
                   f"\nHost behindhop\n    HostName {sshd.host}\n    Port {sshd.port}\n    User {sshd.user}\n"
                   f"    IdentityFile {sshd.client_key}\n    ProxyJump hop\n")
    old_key = sshd.host_key_line
    ssh_client_config.known_hosts.write_text(f"{sshd.known_hosts_line}\n[localhost]:{sshd.port} {old_key}\n")
    rc, out, err = run_p("worker", "register", "behindhop", "-n", "bh")
    assert rc == 0, err  # the hop as first recorded is fine
    new_key = sshd.swap_host_key()
    try:
        for sock in sockets_under(isolated_home / ".cache/p/ssh"):  # no master from before the change
            close_socket_owner(sock)
        known = f"[127.0.0.1]:{sshd.port} {new_key}\n[localhost]:{sshd.port} {old_key}\n"
        ssh_client_config.known_hosts.write_text(known)
        config_before = (isolated_home / ".config/p/config.yaml").read_bytes()
        for args in (["-n", "bh", "--", "true"], ["worker", "register", "behindhop", "-n", "bh2",
                                                  "--accept-new-host-key"]):
            rc, out, err = run_p(*args, timeout=60)
            line = one_line(err)
            assert rc == 1, (args, line)
            assert "the ProxyJump hop 'hop' failed: Host key verification failed;" in line, line
            assert "has changed" in line and "`ssh hop`" in line, line
        assert ssh_client_config.known_hosts.read_text() == known
        assert (isolated_home / ".config/p/config.yaml").read_bytes() == config_before
    finally:
        sshd.swap_host_key()


# -- 9. bash completion through the bash-completion package ------------------------------------------

BASH_COMPLETION = Path("/usr/share/bash-completion/bash_completion")


@pytest.mark.skipif(not BASH_COMPLETION.exists(), reason="the bash-completion package is not installed "
                    "(apt-get install bash-completion)")
def test_readme_bash_completion_file_is_loaded_by_bash_completion(isolated_home, terminal):
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    documented = "p completion bash > ~/.local/share/bash-completion/completions/p"
    assert documented in readme
    bin_dir = os.path.dirname(shutil.which("p") or "")
    env = {"HOME": str(isolated_home), "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    # bash-completion's on-demand loader, as on the first TAB after `p `; then what the loaded
    # function offers for `p at`
    probe = (f"source {BASH_COMPLETION}; _completion_loader p; complete -p p; COMP_WORDS=(p at); "
             "COMP_CWORD=1; ! declare -F _p >/dev/null || { _p; printf '%s\\n' \"${COMPREPLY[@]}\"; }")
    before = run_command(["bash", "--norc", "--noprofile", "-c", probe], env=env)
    assert before[:2] == (0, b"complete -F _minimal p\n"), before  # its fallback: nothing for p yet
    rc, out, err = run_command(["bash", "--norc", "--noprofile", "-c",
                                f"mkdir -p ~/.local/share/bash-completion/completions && {documented}"],
                               env=env)
    assert rc == 0, err
    rc, out, err = run_command(["bash", "--norc", "--noprofile", "-c", probe], env=env)
    assert rc == 0 and out.decode().splitlines() == ["complete -F _p p", "attach"], (out, err)

    rcfile = isolated_home / ".bashrc"  # what Debian's /etc/bash.bashrc does once completion is enabled
    rcfile.write_text(f'PATH="{bin_dir}:$PATH"; PS1="$ "; . {BASH_COMPLETION}\n')
    t = terminal(f"bash --rcfile {rcfile} -i", env=env)
    t.wait_for("$", timeout=15)
    t.send_keys("p at", literal=True)
    t.send_keys("Tab")
    t.wait_for("$ p attach ", timeout=15)
