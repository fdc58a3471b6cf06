"""Worker health: what `p worker ls -c` and `p worker register` learn about a worker.

A probe is one agent call (`hello df`: the facts and the free space) through the one funnel
(agent.call), and the checks `p -- cmd` makes before it starts a job (submit.check_worker).
`probe_all` probes every worker at once, each in its own thread; one that has not answered when the
timeout has passed is reported as such.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

from .config import LOCAL, Config, WorkerEntry
from .exceptions import PError, WorkerUnfit, WorkerUnreachable
from .workers import Worker, open_worker

PROBE_TIMEOUT = 20.0  # seconds for one worker (connect, maybe install the agent, hello, df)


@dataclass
class Health:
    """One worker as `p worker ls` shows it; the probe's fields stay None when it did not get them."""

    name: str
    connection: str
    default: bool
    checked: bool = False
    reachable: bool | None = None
    error: str | None = None  # why it could not be reached (or the probe failed)
    problem: str | None = None  # reachable, but cannot run jobs: why, and the fix
    agent_version: str | None = None
    arch: str | None = None
    arch_raw: str | None = None
    os: str | None = None
    tmux: str | None = None
    rsync: str | None = None
    python3: bool | None = None
    free_kb: int | None = None
    jobs_running: int | None = None

    @property
    def state(self) -> str:
        if not self.checked:
            return ""
        if not self.reachable:
            return "unreachable"
        return "unfit" if self.problem else "ok"

    def as_json(self) -> dict:
        data = asdict(self)
        if not self.checked:
            return {key: data[key] for key in ("name", "connection", "default")}
        return {**data, "state": self.state}


def entries(cfg: Config) -> list[WorkerEntry]:
    """Every worker `p worker ls` lists: the built-in `local` first unless the config names one."""
    found = list(cfg.workers)
    if not cfg.find(LOCAL):
        found.insert(0, WorkerEntry(LOCAL, LOCAL))
    return found


def unchecked(cfg: Config) -> list[Health]:
    return [Health(e.name, e.connection, e.name == cfg.default) for e in entries(cfg)]


def arch_text(arch: str | None, raw: str | None) -> str:
    """The folded architecture, with `uname -m`'s own word when it differs (`aarch64 (arm64)`)."""
    if not arch:
        return "?"
    return arch if not raw or raw == arch else f"{arch} ({raw})"


def apply_hello(health: Health, hello: dict[str, str]) -> None:
    health.agent_version = hello.get("agent_version")
    health.arch, health.arch_raw = hello.get("arch"), hello.get("arch_raw")
    health.os, health.tmux, health.rsync = hello.get("os"), hello.get("tmux"), hello.get("rsync")
    health.python3 = hello.get("python3", "missing") != "missing"


def summary(hello: dict[str, str]) -> str:
    """One line of facts for `p worker register`: `Linux amd64 (x86_64), tmux 3.3a, rsync 3.2.7, …`."""
    python3 = "python3" if hello.get("python3", "missing") != "missing" else "python3 missing"
    return (f"{hello.get('os', '?')} {arch_text(hello.get('arch'), hello.get('arch_raw'))}, "
            f"tmux {hello.get('tmux', '?')}, rsync {hello.get('rsync', '?')}, {python3}")


def probe(worker: Worker, health: Health) -> Health:
    """Fill ``health`` from the worker's `hello` and `df`; errors become its error or problem."""
    from . import agent
    from .submit import check_worker

    health.checked = True
    try:
        hello = agent.call(worker, "hello", "df").fields()  # one round trip: hello's facts and df's
        apply_hello(health, hello)
        health.reachable = True
        health.free_kb = _int(hello.get("free_kb"))
        health.jobs_running = _int(hello.get("jobs_running"))
        check_worker(worker, hello, need_rsync=True)
    except WorkerUnreachable as exc:
        health.reachable, health.error = False, exc.reason
    except WorkerUnfit as exc:
        health.problem = exc.message
    except PError as exc:
        health.error = exc.message
    except Exception as exc:  # noqa: BLE001 - one worker's odd failure must not hide the others
        health.error = f"probe failed: {exc.__class__.__name__}: {exc}"
    finally:
        worker.close()
    return health


def probe_all(cfg: Config, timeout: float = PROBE_TIMEOUT) -> list[Health]:
    """Probe every worker at once; each gets at most ``timeout`` seconds.

    Daemon threads rather than a ThreadPoolExecutor, whose threads are joined when the interpreter
    exits: a worker stuck in the SSH handshake (paramiko waits 15 s for a banner, and p retries) would
    hold `p` open long after the table is printed. A daemon thread still running is simply dropped.
    """
    import threading
    import time

    logging.getLogger("paramiko").addHandler(logging.NullHandler())  # no tracebacks from late threads
    healths = unchecked(cfg)
    workers = [open_worker(WorkerEntry(h.name, h.connection)) for h in healths]
    if any(w.name != LOCAL for w in workers):
        import fabric  # noqa: F401 - imported once here, not by several threads at once

    threads = [threading.Thread(target=probe, args=(w, h), name=f"probe {h.name}", daemon=True)
               for w, h in zip(workers, healths)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + timeout
    for index, thread in enumerate(threads):
        thread.join(max(0.0, deadline - time.monotonic()))
        if thread.is_alive():
            late = healths[index]  # its thread may still write to it: report a fresh one
            healths[index] = Health(late.name, late.connection, late.default, checked=True,
                                    reachable=False, error=f"no answer within {timeout:g}s")
    return healths


def _int(text: str | None) -> int | None:
    return int(text) if text and text.isdigit() else None
