"""Degraded mode: jobs whose end may have been missed become `unknown`, then are asked about.

A running job is trusted while its worker's watcher (watch.py) is alive. Otherwise it is marked
`unknown`, and every worker with unknown jobs is asked for their state in one round trip, all workers in
parallel, each bounded by a short timeout. A worker that does not answer leaves its jobs `unknown`.
"""

from __future__ import annotations

import sys
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor

from . import watch
from .job import RUNNING, STARTING, UNKNOWN, Job, RemoteState, apply_remote
from .store import Store

STARTING_GRACE = 120  # seconds a `starting` record may wait for its p process to confirm the start


def suspects(store: Store, jobs: list[Job]) -> list[Job]:
    """Mark and return the jobs whose state nobody is watching."""
    watched: dict[str, bool] = {}
    out = []
    for job in jobs:
        if job.status == STARTING and time.time() - store.path(job.id).stat().st_mtime < STARTING_GRACE:
            continue
        if job.status in (RUNNING, STARTING):
            if job.worker not in watched:
                watched[job.worker] = watch.is_watched(job.worker)
            if watched[job.worker]:
                continue
            job.status = UNKNOWN
            store.save(job)
        if job.status == UNKNOWN:
            out.append(job)
    return out


def reconcile(store: Store, jobs: list[Job]) -> None:
    by_worker: dict[str, list[Job]] = defaultdict(list)
    for job in suspects(store, jobs):
        by_worker[job.worker].append(job)
    if not by_worker:
        return
    with ThreadPoolExecutor(max_workers=min(16, len(by_worker))) as pool:
        results = pool.map(lambda item: ask(store, *item), by_worker.items())
        for problem in results:
            if problem:
                print(f"p: {problem}", file=sys.stderr)


def ask(store: Store, worker_name: str, jobs: list[Job]) -> str | None:
    """One status round trip to the worker; returns a one-line problem or None."""
    from . import agent, config
    from .exceptions import PError
    from .workers import open_worker

    try:  # a broken config.yaml or a removed worker: the worker was not asked at all
        worker = open_worker(config.load().get(worker_name))
    except PError as exc:
        return f"cannot ask worker '{worker_name}' about its jobs: {exc.message}; they stay unknown"
    try:
        lines = agent.call(worker, "status", *(j.id for j in jobs), quick=True).lines()
    except PError as exc:
        return f"worker '{worker_name}' did not answer ({exc.message}); its jobs stay unknown"
    remote = {state.id: state for state in map(RemoteState.parse, lines)}
    still_running = False
    for job in jobs:
        if job.id in remote:
            job.status = UNKNOWN if job.status == STARTING else job.status
            apply_remote(job, remote[job.id])
            store.save(job)
            still_running |= job.status == RUNNING
    if still_running:
        watch.ensure_watcher(worker_name)
    return None
