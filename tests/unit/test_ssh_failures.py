"""The one-line reasons for SSH failures: OpenSSH's messages and paramiko's exceptions map to the same
lines (workers.failure_line). The real failures are driven end to end in test_connection_errors.py and
test_hardening_gaps.py; this checks the OpenSSH side's wording table on the messages OpenSSH prints."""

from __future__ import annotations

import socket

import paramiko
import pytest

from p_tasks.workers import SshParams, describe_openssh_error, describe_ssh_error, failure_line

PARAMS = SshParams(alias="box", hostname="10.0.0.7", user="me", port=2222, identity_files=[],
                   known_hosts_files=[], connect_timeout=10)


@pytest.mark.parametrize("stderr, kind", [
    ("ssh: Could not resolve hostname box: Name or service not known\r\n", "dns"),
    ("ssh: connect to host 10.0.0.7 port 2222: Connection refused\r\n", "refused"),
    ("Connection timed out during banner exchange\r\nConnection to 10.0.0.7 port 2222 timed out\r\n",
     "silent"),
    ("ssh: connect to host 10.0.0.7 port 2222: Connection timed out\r\n", "timeout"),
    ("@@@@@@@@\r\n@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @\r\n"
     "Host key verification failed.\r\n", "changed"),
    ("No ED25519 host key is known for [10.0.0.7]:2222 and you have requested strict checking.\r\n"
     "Host key verification failed.\r\n", "unknown"),
    ("me@10.0.0.7: Permission denied (publickey).\r\n", "auth"),
    ("kex_exchange_identification: read: Connection reset by peer\r\n", "dropped"),
])
def test_openssh_messages_get_p_s_line(stderr, kind):
    assert describe_openssh_error(stderr, PARAMS) == failure_line(kind, PARAMS)


def test_anything_else_keeps_openssh_s_last_line():
    assert describe_openssh_error("debug noise\nssh: something new\n", PARAMS) == \
        "SSH connection to 10.0.0.7:2222 failed: ssh: something new"


@pytest.mark.parametrize("exc, kind", [
    (socket.gaierror(-2, "Name or service not known"), "dns"),
    (ConnectionRefusedError(111, "refused"), "refused"),
    (paramiko.SSHException("Error reading SSH protocol banner"), "silent"),
    (paramiko.AuthenticationException("Authentication failed."), "auth"),
    (paramiko.PasswordRequiredException("Private key file is encrypted"), "passphrase"),
])
def test_paramiko_exceptions_get_the_same_lines(exc, kind):
    assert describe_ssh_error(exc, PARAMS) == failure_line(kind, PARAMS)


def test_a_drop_during_the_handshake_is_not_called_silence():
    exc = paramiko.SSHException("Error reading SSH protocol banner")
    assert describe_ssh_error(exc, PARAMS, silent=False) == failure_line("dropped", PARAMS)
