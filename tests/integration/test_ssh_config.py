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
