"""`p ls`: the local store as a table, JSON or ids. No network and no Fabric import on this path."""

from __future__ import annotations

import json
import os
import shutil
import sys

from .job import Job, newest_first
from .output import job_json, job_table
from .store import BadRecord, Store


def list_jobs(show_all: bool, as_json: bool, quiet: bool) -> None:
    store = Store()
    records = list(store.scan(active_only=not show_all))
    jobs = newest_first([r for r in records if isinstance(r, Job)])
    if any(j.active for j in jobs):
        from .reconcile import reconcile

        reconcile(store, [j for j in jobs if j.active])
        if not show_all:
            jobs = [j for j in jobs if j.active]
    for bad in (r for r in records if isinstance(r, BadRecord)):
        print(f"p: skipped job record {bad.path}: {bad.reason}", file=sys.stderr)
    if quiet:
        print("\n".join(j.id for j in jobs)) if jobs else None
    elif as_json:
        print(json.dumps([job_json(j) for j in jobs], indent=1))
    else:
        width = shutil.get_terminal_size((120, 24)).columns if sys.stdout.isatty() else 0
        color = sys.stdout.isatty() and not os.environ.get("NO_COLOR")
        print(job_table(jobs, width, color))
