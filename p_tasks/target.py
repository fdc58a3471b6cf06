"""Connection strings: `host`, `user@host`, `user@host:port`, `user@[ipv6]:port`, or an ssh_config alias."""

from __future__ import annotations

import re
from dataclasses import dataclass

from .exceptions import ConnectionStringError

HOST_RE = re.compile(r"^[A-Za-z0-9_](?:[A-Za-z0-9._%-]*[A-Za-z0-9_])?$")
USER_RE = re.compile(r"^[A-Za-z0-9_.][A-Za-z0-9_.@-]*$")


@dataclass(frozen=True)
class Target:
    host: str
    user: str | None = None
    port: int | None = None

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        user = f"{self.user}@" if self.user else ""
        port = f":{self.port}" if self.port else ""
        return f"{user}{host}{port}"


def parse(text: str) -> Target:
    if not text or text != text.strip() or any(c.isspace() for c in text):
        raise ConnectionStringError(text, "it is empty or contains spaces")
    if text.startswith("-"):
        raise ConnectionStringError(text, "it must not start with '-'")
    user, _, rest = text.rpartition("@")
    if "@" in text and not user:
        raise ConnectionStringError(text, "the user before '@' is empty")
    if user and not USER_RE.match(user):
        raise ConnectionStringError(text, f"'{user}' is not a valid user name")
    host, port = _split_host_port(text, rest)
    return Target(host=host, user=user or None, port=port)


def _split_host_port(text: str, rest: str) -> tuple[str, int | None]:
    if rest.startswith("["):
        host, sep, tail = rest[1:].partition("]")
        if not sep or not host or ":" not in host:
            raise ConnectionStringError(text, "brackets must hold an IPv6 address")
        if tail and not tail.startswith(":"):
            raise ConnectionStringError(text, "only ':port' may follow ']'")
        return host, _port(text, tail[1:]) if tail else None
    if rest.count(":") > 1:
        raise ConnectionStringError(text, "an IPv6 address needs brackets, as in user@[::1]:22")
    host, sep, port = rest.partition(":")
    if not host:
        raise ConnectionStringError(text, "the host is empty")
    if not HOST_RE.match(host):
        raise ConnectionStringError(text, f"'{host}' is not a valid host name")
    return host, _port(text, port) if sep else None


def _port(text: str, value: str) -> int:
    if not value.isdigit() or not 0 < int(value) < 65536:
        raise ConnectionStringError(text, f"port '{value}' is not a number between 1 and 65535")
    return int(value)
