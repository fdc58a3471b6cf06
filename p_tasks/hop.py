"""The ProxyJump hop for paramiko: OpenSSH's `ssh -W` as a socket, which says why when it ends.

paramiko's own ProxyCommand does not notice the command ending: it spins on the closed pipe until the
timeout and then reports a missing SSH greeting. A hop that refuses (an unknown host key, a failed
login) ends at once, with its reason on stderr; this one raises that reason.
"""

from __future__ import annotations

import os
import socket
import time
from select import select

from paramiko import ProxyCommand, SSHException


class HopFailed(SSHException):
    """The hop's ssh ended; ``reason`` is the last line it printed."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class HopProxy(ProxyCommand):
    failure: HopFailed | None = None

    def recv(self, size: int) -> bytes:
        buffer = b""
        start = time.monotonic()
        while len(buffer) < size:
            wait = None
            if self.timeout is not None:
                wait = self.timeout - (time.monotonic() - start)
                if wait <= 0:
                    if buffer:
                        return buffer
                    raise socket.timeout()
            ready, _, _ = select([self.process.stdout], [], [], wait)
            if not ready:
                continue
            chunk = os.read(self.process.stdout.fileno(), size - len(buffer))
            if not chunk:  # the hop's ssh has ended
                if buffer:
                    return buffer
                # paramiko rewords what recv raises during the handshake; the caller reads .failure
                self.failure = HopFailed(self._last_words())
                raise self.failure
            buffer += chunk
        return buffer

    def close(self) -> None:
        if self.process.poll() is None:  # paramiko's close() raises if the hop has ended already
            self.process.terminate()
            self.process.wait()

    def _last_words(self) -> str:
        try:
            self.process.wait(timeout=2)
            text = self.process.stderr.read().decode("utf-8", "replace")
        except Exception:  # noqa: BLE001 - the reason is a courtesy; the failure stands anyway
            text = ""
        lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
        return lines[-1].rstrip(".") if lines else f"the hop's ssh ended (exit {self.process.returncode})"
