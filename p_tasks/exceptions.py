"""Errors a user can cause or meet. Each carries its own one-line message and exit code.

Tasks raise these; only the Program (``p_tasks.main``) prints them, on one line, without a traceback.
"""

from __future__ import annotations


class PError(Exception):
    """Base of every error p reports to the user: a full sentence, ideally with the next step."""

    exit_code = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class UsageError(PError):
    """The command line was wrong (exit 2, like other Unix tools)."""

    exit_code = 2


class ConfigError(PError):
    """config.yaml is unreadable or malformed."""


class WorkerNotFound(UsageError):
    def __init__(self, name: str) -> None:
        super().__init__(f"worker '{name}' is not registered; see `p worker ls`")


class ConnectionStringError(UsageError):
    def __init__(self, text: str, why: str) -> None:
        super().__init__(
            f"bad connection string '{text}': {why}; expected host, user@host, user@host:port, "
            "user@[ipv6]:port or an ~/.ssh/config alias"
        )


class WorkerUnreachable(PError):
    """The worker could not be reached or logged into."""

    def __init__(self, worker: str, reason: str) -> None:
        super().__init__(f"cannot reach worker '{worker}': {reason}")
        self.worker = worker
        self.reason = reason


class WorkerUnfit(PError):
    """The worker answered but cannot run jobs (tmux or rsync missing, tmux too old, …)."""


class AgentError(PError):
    """The agent on the worker refused or failed a verb."""

    def __init__(self, worker: str, verb: str, detail: str) -> None:
        super().__init__(f"p-agent {verb} on worker '{worker}' failed: {detail}")
        self.worker = worker
        self.verb = verb
        self.detail = detail


class SyncError(PError):
    """rsync of the working directory failed; no job was started. ``code``: rsync's exit status
    (None when rsync did not run); ``transient``: the connection dropped before any work."""

    def __init__(self, message: str, code: int | None = None, transient: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.transient = transient


class JobNotFound(UsageError):
    pass


class StoreError(PError):
    pass
