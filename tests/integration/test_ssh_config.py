"""~/.ssh/config honoured through OpenSSH itself: Include and ProxyJump, for agent calls and rsync."""

from __future__ import annotations

from helpers import run_p


def add_host(ssh_client_config, sshd, text: str) -> None:
    with open(ssh_client_config.config, "a") as cfg:
        cfg.write(text)


def test_included_host_is_resolved_like_ssh_does(ssh_client_config, sshd, isolated_home, tmp_path,
                                                 monkeypatch):
    extra = isolated_home / ".ssh" / "extra.conf"
    extra.write_text(f"Host included\n    HostName {sshd.host}\n    Port {sshd.port}\n    User {sshd.user}\n"
                     f"    IdentityFile {sshd.client_key}\n")
    text = ssh_client_config.config.read_text()
    ssh_client_config.config.write_text(f"Include {extra}\n\n{text}")
    rc, out, err = run_p("worker", "register", "included")
    assert rc == 0, err
    (tmp_path / "in.txt").write_text("synced through an included host\n")
    monkeypatch.chdir(tmp_path)
    rc, out, err = run_p("included", "--", "cat", "in.txt")
    assert rc == 0 and out.replace(b"\r\n", b"\n") == b"synced through an included host\n", err


def test_proxyjump_is_used_by_agent_calls_and_rsync(ssh_client_config, sshd, tmp_path, monkeypatch):
    add_host(ssh_client_config, sshd,
             f"\nHost jumped\n    HostName {sshd.host}\n    Port {sshd.port}\n    User {sshd.user}\n"
             f"    IdentityFile {sshd.client_key}\n    ProxyJump testworker\n")
    before = sshd.auth_count()
    rc, out, err = run_p("worker", "register", "jumped")
    assert rc == 0, err
    (tmp_path / "in.txt").write_text("via the jump host\n")
    monkeypatch.chdir(tmp_path)
    rc, out, err = run_p("jumped", "--", "cat", "in.txt")
    assert rc == 0 and out.replace(b"\r\n", b"\n") == b"via the jump host\n", err
    # every connection to the target went through the jump host: two logins each
    assert sshd.auth_count() - before >= 4


def test_proxyjump_hop_with_an_unknown_host_key_is_refused(ssh_client_config, sshd, isolated_home):
    """The hop is checked as strictly as the worker: its key (under the name `localhost`) is in no
    known_hosts file, so p refuses, even with --accept-new-host-key, and records nothing."""
    add_host(ssh_client_config, sshd,
             f"\nHost hop\n    HostName localhost\n    Port {sshd.port}\n    User {sshd.user}\n"
             f"    IdentityFile {sshd.client_key}\n"
             f"\nHost behindhop\n    HostName {sshd.host}\n    Port {sshd.port}\n    User {sshd.user}\n"
             f"    IdentityFile {sshd.client_key}\n    ProxyJump hop\n")
    known_before = ssh_client_config.known_hosts.read_bytes()
    for extra in ([], ["--accept-new-host-key"]):
        rc, out, err = run_p("worker", "register", "behindhop", *extra, timeout=60)
        assert rc == 1, (out, err)
        line = err.decode()
        assert line.count("\n") == 1 and "Traceback" not in line, line
        assert "the ProxyJump hop 'hop' failed: Host key verification failed;" in line
        assert "`ssh hop`" in line
    assert ssh_client_config.known_hosts.read_bytes() == known_before
    assert not (isolated_home / ".config/p/config.yaml").exists()
