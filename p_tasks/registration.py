"""`p worker register`: validate the name and connection, confirm the host key, probe, save."""

from __future__ import annotations

import subprocess
import sys

from . import agent, config
from .config import LOCAL, WorkerEntry
from .exceptions import UsageError, WorkerUnreachable
from .probe import summary
from .submit import check_worker
from .target import parse
from .workers import SshWorker

REGISTER_NO_SYNC_HINT = "register it with --no-check and run only `p -n` jobs there"
RESERVED = frozenset({"run", "ls", "attach", "logs", "stop", "pull", "rm", "prune", "worker", "help", LOCAL})


def default_name(connection: str) -> str:
    host = parse(connection).host
    return host.replace(":", "-").strip("-") if ":" in host else host


def register(connection: str, name: str | None, no_check: bool, accept_new: bool):
    parse(connection)
    name = name or default_name(connection)
    config.check_name(name, RESERVED)
    if config.load().find(name):
        raise UsageError(f"a worker named '{name}' is already registered; pick another with -n <name>")
    facts = "" if no_check else probe(SshWorker(name, connection), accept_new)
    entry = WorkerEntry(name, connection)
    with config.editing() as cfg:
        if cfg.find(name):
            raise UsageError(f"a worker named '{name}' is already registered; pick another with -n <name>")
        cfg.workers.append(entry)
        if not cfg.default_worker:
            cfg.default_worker = name
    return entry, facts


def probe(worker: SshWorker, accept_new: bool) -> str:
    """Reach the worker (confirming an unknown host key only by the user's decision), install the agent."""
    try:
        hello = agent.call(worker, "hello").fields()
    except WorkerUnreachable as exc:
        if "not in known_hosts" not in exc.reason or not confirm_host_key(worker, accept_new):
            raise
        hello = agent.call(worker, "hello").fields()
    finally:
        worker.close()
    check_worker(worker, hello, need_rsync=True, no_sync_hint=REGISTER_NO_SYNC_HINT)
    return f": {summary(hello)}"


def confirm_host_key(worker: SshWorker, accept_new: bool) -> bool:
    """Let OpenSSH record the key: `accept-new` when asked to, its own yes/no prompt on a terminal."""
    if not accept_new and not sys.stdin.isatty():
        return False
    worker.strict = "accept-new" if accept_new else "ask"
    argv = ["ssh", *worker.ssh_options(batch=accept_new), "-o", "ControlMaster=no", "-T"]
    argv += ["--", worker.target.host, "exit 0"]
    done = subprocess.run(argv, stdin=None if not accept_new else subprocess.DEVNULL, check=False)
    worker.strict = "yes"
    worker.close()
    return done.returncode == 0
