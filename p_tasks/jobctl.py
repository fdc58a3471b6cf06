"""Job commands that talk to the job's worker: attach, logs (and later stop, pull, rm, prune)."""

from __future__ import annotations

import sys
import time

from . import agent, config
from .attach import attach, refresh
from .exceptions import AgentError, PError, UsageError, WorkerUnreachable
from .job import ACTIVE, RUNNING, STOPPED, Job
from .store import Store
from .workers import Worker, open_worker

RECONNECT_TRIES = 30
UNREACHABLE = 255  # ssh's exit status when the connection failed or dropped


def open_job(prefix: str) -> tuple[Job, Worker, Store]:
    store = Store()
    job = store.resolve(prefix)
    return job, open_worker(config.load().get(job.worker)), store


def attach_job(prefix: str) -> int:
    job, worker, store = open_job(prefix)
    try:
        remote = refresh(worker, job, store)
        if remote is None or not remote.session_open:
            raise PError(
                f"job {job.short_id} has ended ({job.status_text()}) and its session is closed; "
                f"see its output with `p logs {job.short_id}`"
            )
        if not (sys.stdin.isatty() and sys.stdout.isatty()):
            raise UsageError("p attach needs a terminal; use `p logs -f` in scripts")
        return attach(worker, job, store)
    finally:
        worker.close()


def show_logs(prefix: str, follow: bool, tail: int | None) -> int:
    if tail is not None and tail < 0:
        raise UsageError("--tail needs a number of lines >= 0")
    job, worker, store = open_job(prefix)
    try:
        if tail is not None or not follow:
            # One call: the stream itself installs or repairs the agent (agent.stream).
            words = ["tail", job.id, str(tail)] if tail is not None else ["follow", job.id, "0", "0"]
            streamed = agent.stream(worker, *words)
            if streamed.exited == UNREACHABLE:
                raise WorkerUnreachable(worker.name, worker.unreachable_reason(streamed.stderr))
            if streamed.exited != 0:
                raise AgentError(worker.name, words[0], streamed.error_line())
            return 0
        refresh(worker, job, store)
        return follow_log(worker, job, store)
    finally:
        worker.close()


def follow_log(worker: Worker, job: Job, store: Store) -> int:
    """Print the log until the job ends; after a dropped connection resume at the byte reached."""
    offset, tries = 0, 0
    while True:
        offset += agent.stream(worker, "follow", job.id, str(offset), "1").copied
        try:
            refresh(worker, job, store)
        except WorkerUnreachable:
            job.status = RUNNING
        if job.status != RUNNING:
            return job.exit_status
        tries += 1
        if tries > RECONNECT_TRIES:
            raise PError(f"lost the log stream of job {job.short_id} on {worker.name}; retry `p logs -f`")
        time.sleep(min(tries, 5))


def stop_job(prefix: str, timeout: float) -> str:
    job, worker, store = open_job(prefix)
    try:
        refresh(worker, job, store)
        if job.status != RUNNING:
            return f"job {job.short_id} already ended ({job.status_text()}); nothing changed"
        agent.call(worker, "stop", job.id, str(int(timeout)))
        refresh(worker, job, store)
        job.status = STOPPED
        store.save(job)
        return f"stopped job {job.short_id}"
    finally:
        worker.close()


def remove_job(job: Job, worker: Worker, store: Store, force: bool) -> int:
    """Remove the remote job dir and workdir, then the record; return KiB freed on the worker."""
    if job.status in ACTIVE and not force:
        raise UsageError(f"job {job.short_id} is {job.status}; stop it first or use --force")
    reply = agent.call(worker, "rm", job.id).fields()
    store.delete(job.id)
    return int(reply.get("freed_kb", "0") or 0)


def rm_job(prefix: str, force: bool) -> str:
    job, worker, store = open_job(prefix)
    try:
        refresh(worker, job, store)  # unreachable: raises, and the record and remote dirs stay
        freed = remove_job(job, worker, store, force)
        return f"removed job {job.short_id} (freed {human_kb(freed)} on {worker.name})"
    finally:
        worker.close()


def human_kb(kb: int) -> str:
    """KiB as du reports them, in the same units as every other size p prints."""
    from .progress import human

    return human(kb * 1024)
