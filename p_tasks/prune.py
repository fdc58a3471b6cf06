"""`p prune`: remove every finished job with its remote dirs; unreachable workers keep theirs."""

from __future__ import annotations

import sys
from collections import defaultdict

from . import config
from .exceptions import PError
from .job import FINISHED, UNKNOWN, Job, newest_first
from .jobctl import human_kb, remove_job
from .store import Store
from .workers import open_worker


def candidates(store: Store, force: bool) -> list[Job]:
    wanted = FINISHED | ({UNKNOWN} if force else set())
    return newest_first([j for j in store.jobs() if j.status in wanted])


def prune(force: bool, dry_run: bool) -> None:
    store = Store()
    jobs = candidates(store, force)
    if dry_run:
        for job in jobs:
            print(f"would remove {job.short_id}  {job.worker}  {job.status_text()}  {job.command}")
        print(f"{len(jobs)} job(s) would be removed")
        return
    by_worker: dict[str, list[Job]] = defaultdict(list)
    for job in jobs:
        by_worker[job.worker].append(job)
    removed, freed, failed = 0, 0, []
    cfg = config.load()
    for name, group in sorted(by_worker.items()):
        try:
            worker = open_worker(cfg.get(name))
        except PError as exc:
            failed.append(f"{name} ({exc.message})")
            continue
        try:
            for job in group:
                freed += remove_job(job, worker, store, force=True)
                removed += 1
        except PError as exc:
            failed.append(f"{name} ({exc.message})")
        finally:
            worker.close()
    print(f"removed {removed} job(s), freed {human_kb(freed)} on the workers")
    if failed:
        kept = "; ".join(failed)
        raise PError(f"could not reach {kept}; their jobs were kept, run `p prune` again later")
    if not jobs:
        print("nothing to prune", file=sys.stderr)
