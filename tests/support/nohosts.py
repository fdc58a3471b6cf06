"""A host name that fails to resolve without one DNS packet leaving the machine.

Tests may contact nothing outside 127.0.0.0/8 and ::1, yet the DNS-failure cases need a name that does
not resolve, and looking up `no-such-host.invalid` normally asks the nameserver in /etc/resolv.conf.

How: glibc's resolver sends each query `attempts` times per nameserver, and RES_OPTIONS overrides
resolv.conf for the process and everything it starts (p, the OpenSSH client, paramiko inside p). With
``attempts:0`` glibc still reads /etc/hosts (a local file) but never opens a socket to a nameserver:
getaddrinfo fails at once with EAI_AGAIN, which p reports as its DNS error like any other gaierror.
(nss_wrapper's NSS_WRAPPER_HOSTS is no help here: for a name missing from its hosts file it falls back
to the real getaddrinfo, which queries the nameserver.)

The override is honoured only by glibc's own stub resolver. Where a lookup would go elsewhere (nscd,
systemd-resolved through nss-resolve, mDNS, another libc) `local_dns_env` skips the test rather than
let it reach the network. `test_dns_failure_never_leaves_the_machine` proves the mechanism with strace.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

UNRESOLVABLE = "no-such-host.invalid"
NO_DNS_ENV = {"RES_OPTIONS": "attempts:0"}
NSCD_SOCKETS = ("/run/nscd/socket", "/var/run/nscd/socket")
LOCAL_NSS_MODULES = {"files", "dns", "myhostname"}  # dns is the stub resolver RES_OPTIONS governs


def _hosts_modules(nsswitch: Path = Path("/etc/nsswitch.conf")) -> set[str]:
    """The NSS modules of the `hosts:` line (glibc's default when the file or line is missing)."""
    try:
        lines = nsswitch.read_text().splitlines()
    except OSError:
        lines = []
    for line in lines:
        key, _, value = line.partition("#")[0].partition(":")
        if key.strip() == "hosts":
            return {word for word in value.split() if not word.startswith("[")}
    return {"dns", "files"}


def why_not_local() -> str | None:
    """Why RES_OPTIONS cannot be trusted to keep lookups on this machine, or None if it can."""
    try:
        libc = os.confstr("CS_GNU_LIBC_VERSION")
    except (ValueError, OSError):
        libc = None
    if not libc:
        return "not glibc: RES_OPTIONS=attempts:0 may not stop DNS queries"
    if any(os.path.exists(sock) for sock in NSCD_SOCKETS):
        return "nscd is running: it would resolve names itself, ignoring RES_OPTIONS"
    others = _hosts_modules() - LOCAL_NSS_MODULES
    if others:
        return f"/etc/nsswitch.conf resolves hosts also through {sorted(others)}, beyond RES_OPTIONS"
    return None


def local_dns_env() -> dict[str, str]:
    """Environment additions under which no lookup sends a DNS query; skips the test where that
    cannot be guaranteed."""
    reason = why_not_local()
    if reason:
        pytest.skip(f"cannot keep DNS lookups local: {reason}")
    return dict(NO_DNS_ENV)


def unresolvable_host(monkeypatch: pytest.MonkeyPatch) -> str:
    """Set `local_dns_env()` for the rest of the test (every `p` it runs inherits it) and return a
    host name that then fails to resolve, locally."""
    for key, value in local_dns_env().items():
        monkeypatch.setenv(key, value)
    return UNRESOLVABLE
