"""Completion notices without polling by the user: one background watcher per worker.

The watcher holds ``watch/<worker>.lock`` and makes long agent calls (`wait`) that return as soon as
one of the worker's running jobs ends (or after a while, to pick up new jobs). It folds each ending into
the local store, runs the optional ``on_finish`` hook, and exits by itself once the worker has no running
jobs of this client, or when the worker cannot be reached (p ls then marks those jobs `unknown` and
reconciles them). The lock makes sure it is never started twice for one worker.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
from pathlib import Path

from . import paths
from .job import RUNNING, Job, RemoteState, apply_remote
from .store import Store

WAIT_SECONDS = 5  # also how soon a job started meanwhile joins the wait
# The agent's `wait` replies at most ~1.5 s after WAIT_SECONDS; a reply later than this is a lost link.
REPLY_SECONDS = WAIT_SECONDS + 10


def lock_path(worker: str) -> Path:
    return paths.private_dir(paths.jobs_dir().parent / "watch") / f"{worker}.lock"


def is_watched(worker: str) -> bool:
    """True while a watcher holds the worker's lock."""
    try:
        with paths.open_lock(lock_path(worker)) as handle:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    return False


def ensure_watcher(worker: str) -> None:
    """Start the worker's watcher in the background unless one is running."""
    if is_watched(worker):
        return
    subprocess.Popen(
        [sys.executable, "-m", "p_tasks.watch", worker],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True, close_fds=True,
    )


def running_jobs(store: Store, worker: str) -> list[Job]:
    return [j for j in store.jobs(active_only=True) if j.worker == worker and j.status == RUNNING]


def watch(worker_name: str) -> int:
    from . import agent, config
    from .exceptions import PError
    from .workers import open_worker

    handle = paths.open_lock(lock_path(worker_name))  # noqa: SIM115 - held for the watcher's life
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return 0
    store, cfg = Store(), config.load()
    worker = open_worker(cfg.get(worker_name))
    try:
        while jobs := running_jobs(store, worker_name):
            # Through the OpenSSH master that `p` just used: no handshake of its own once warm.
            reply = agent.call(worker, "wait", str(WAIT_SECONDS), *(j.id for j in jobs),
                               through_master=REPLY_SECONDS)
            for line in reply.lines():
                fold(store, RemoteState.parse(line), cfg)
    except PError:
        return 1
    finally:
        worker.close()
    return 0


def fold(store: Store, remote: RemoteState, cfg) -> None:
    from .hooks import on_finish

    try:
        job = store.load(remote.id)
    except Exception:  # noqa: BLE001 - removed meanwhile (p rm): nothing to fold
        return
    if job.status != RUNNING or remote.state == "running":
        return
    apply_remote(job, remote)
    store.save(job)
    on_finish(cfg, job)


if __name__ == "__main__":
    os.umask(0o077)
    sys.exit(watch(sys.argv[1]))
