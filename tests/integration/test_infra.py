"""The test infrastructure itself: sshd, client config, worker isolation, terminal, helpers."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest
from helpers import retry_until, run_command, run_p
from support.processes import clean_home, pids_with_home


def ssh(config, *remote: str, input: str | None = None, timeout: float = 30):
    return run_command(config.ssh_argv(*remote), input=input, timeout=timeout)


# -- isolated_home ---------------------------------------------------------------------------------

def test_isolated_home_points_home_and_xdg_into_a_short_fresh_dir(isolated_home):
    assert os.environ["HOME"] == str(isolated_home)
    assert Path("~").expanduser() == isolated_home
    assert len(str(isolated_home)) < 20 and str(isolated_home).startswith("/tmp/p")
    for var in ("XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_STATE_HOME", "XDG_CACHE_HOME"):
        assert Path(os.environ[var]).is_relative_to(isolated_home)
    for var in ("XDG_RUNTIME_DIR", "TMUX", "TMUX_PANE", "SSH_AUTH_SOCK"):
        assert var not in os.environ
    assert list(isolated_home.iterdir()) == []


def test_cleanup_ends_tmux_servers_and_control_masters_under_home(isolated_home, ssh_client_config):
    sock = isolated_home / ".p" / "tmux.sock"
    sock.parent.mkdir()
    subprocess.run(["tmux", "-S", str(sock), "-f", "/dev/null", "new-session", "-d", "sleep 600"],
                   check=True)
    mux = isolated_home / ".cache" / "p" / "ssh" / "m"
    mux.parent.mkdir(parents=True)
    rc, _, err = run_command(ssh_client_config.ssh_argv()[:-1]
                             + ["-o", "ControlMaster=yes", "-S", str(mux), "-fN", "testworker"])
    assert rc == 0, err
    assert len(pids_with_home(isolated_home)) >= 2 and mux.is_socket()

    clean_home(isolated_home)

    assert pids_with_home(isolated_home) == []
    assert subprocess.run(["tmux", "-S", str(sock), "ls"], capture_output=True).returncode != 0


# -- sshd and the client config --------------------------------------------------------------------

def test_key_login_through_written_config_lands_in_isolated_worker_home(sshd, ssh_client_config):
    rc, out, err = ssh(ssh_client_config, 'echo "$HOME"; pwd')
    assert rc == 0, err
    assert out.decode().split() == [str(sshd.worker_home)] * 2
    assert sshd.worker_home != Path(os.path.expanduser("~" + sshd.user))


def test_client_config_files_are_private_and_name_the_worker(sshd, ssh_client_config):
    assert ssh_client_config.config.stat().st_mode & 0o777 == 0o600
    assert f"Port {sshd.port}" in ssh_client_config.config.read_text()
    assert ssh_client_config.known_hosts.read_text() == f"[127.0.0.1]:{sshd.port} {sshd.host_key_line}\n"


def test_worker_shell_reads_startup_files_and_relative_paths_from_worker_home(sshd, ssh_client_config):
    (sshd.worker_home / ".bashrc").write_text("echo from-worker-bashrc\n")
    (sshd.worker_home / ".profile").write_text("echo from-worker-profile\n")
    (sshd.worker_home / "marker").write_text("here\n")
    rc, out, err = ssh(ssh_client_config, "sh", "-s", input='cat marker; env\n')
    assert rc == 0, err
    lines = out.decode().splitlines()
    assert lines[:2] == ["from-worker-bashrc", "here"]
    assert not [v for v in lines if v.startswith(("LD_PRELOAD=", "NSS_WRAPPER"))]
    rc, out, _ = ssh(ssh_client_config, "bash -lc true")
    assert "from-worker-profile" in out.decode()


def test_login_shell_can_be_changed(sshd, ssh_client_config):
    try:
        sshd.set_login_shell("/bin/dash")
        assert ssh(ssh_client_config, "echo $0")[1] == b"dash\n"
    finally:
        sshd.set_login_shell("/bin/bash")
    assert ssh(ssh_client_config, "echo $0")[1] == b"bash\n"


def test_auth_counter_counts_accepted_logins(sshd, ssh_client_config):
    before = sshd.auth_count()
    for _ in range(2):
        assert ssh(ssh_client_config, "true")[0] == 0
    assert retry_until(lambda: sshd.auth_count() == before + 2, 5)


def test_stop_refuses_connections_and_start_serves_again_on_the_same_port(sshd, ssh_client_config):
    port = sshd.port
    sshd.stop()
    try:
        rc, _, err = ssh(ssh_client_config, "true")
        assert rc == 255 and b"Connection refused" in err
    finally:
        sshd.start()
    assert sshd.port == port
    assert ssh(ssh_client_config, "echo back") == (0, b"back\n", b"")


def test_stop_with_drop_sessions_cuts_open_connections(sshd, ssh_client_config):
    proc = subprocess.Popen(ssh_client_config.ssh_argv("sleep 60"), stdin=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    try:
        retry_until(lambda: b"sleep\x0060" in b"".join(
            Path("/proc", str(p), "cmdline").read_bytes() for p in pids_with_home(sshd.worker_home)
        ), ignore=(OSError,))
        sshd.stop(drop_sessions=True)
        assert proc.wait(timeout=10) == 255
    finally:
        proc.kill()
        proc.wait()
        sshd.start()


def test_swapped_host_key_is_rejected_by_strict_checking(sshd, ssh_client_config):
    old = sshd.host_key_line
    try:
        assert sshd.swap_host_key() != old
        rc, _, err = ssh(ssh_client_config, "true")
        assert rc == 255 and b"REMOTE HOST IDENTIFICATION HAS CHANGED" in err
    finally:
        sshd.swap_host_key()
    assert sshd.host_key_line == old
    assert ssh(ssh_client_config, "true")[0] == 0


# -- terminal --------------------------------------------------------------------------------------

def test_terminal_shows_output_and_reports_exit_status(terminal):
    term = terminal("printf 'hello\\n'; exit 3")
    assert "hello" in term.wait_for("hello")
    assert term.exit_status() == 3
    assert term.capture().splitlines()[0] == "hello"


def test_terminal_resize_reaches_the_program(terminal):
    term = terminal("""printf 'cols=%s\\n' "$(tput cols)"; read x; printf 'cols=%s\\n' "$(tput cols)" """)
    term.wait_for("cols=120")
    term.resize(80, 24)
    term.send_keys("Enter")
    assert term.wait_for(re.compile(r"^cols=80$", re.M))
    assert term.exit_status() == 0


def test_terminal_types_keys_and_runs_in_the_isolated_env(terminal, isolated_home):
    term = terminal('read line; printf "%s|%s|%s\\n" "$line" "$HOME" "${TMUX-unset}"', env={"X": "1"})
    term.send_keys("typed text", literal=True)
    term.send_keys("Enter")
    term.wait_for(f"typed text|{isolated_home}|unset")
    assert term.exit_status() == 0


def test_terminal_ctrl_c_ends_the_command_not_the_terminal(terminal):
    term = terminal("echo ready; sleep 60")
    term.wait_for("ready")
    term.send_keys("C-c")
    assert term.exit_status() == 130


# -- helpers ---------------------------------------------------------------------------------------

def test_run_p_runs_the_p_on_path_with_the_isolated_env(tmp_path, isolated_home):
    fake = tmp_path / "p"
    fake.write_text('#!/bin/sh\nprintf "%s\\n" "$HOME" "$@"; cat; echo oops >&2; exit 4\n')
    fake.chmod(0o755)
    rc, out, err = run_p("a b", "c", input="stdin\n", env={"PATH": f"{tmp_path}:{os.environ['PATH']}"})
    assert (rc, out, err) == (4, f"{isolated_home}\na b\nc\nstdin\n".encode(), b"oops\n")


def test_run_command_times_out_with_an_assertion():
    with pytest.raises(AssertionError, match="timed out"):
        run_command(["sleep", "10"], timeout=0.2)


def test_retry_until_returns_the_value_or_fails_with_the_message():
    values = iter([0, "", "done"])
    assert retry_until(lambda: next(values), 1, 0.001) == "done"
    with pytest.raises(AssertionError, match="still false after 0.1s.*\nscreen: x"):
        retry_until(lambda: None, 0.1, message=lambda: "screen: x")
