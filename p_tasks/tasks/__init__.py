"""The Invoke Collection: every p subcommand is a task here."""

from __future__ import annotations

from invoke import Collection

from . import jobs, worker

ns = Collection(jobs.run, jobs.ls, jobs.attach, jobs.logs, jobs.stop, jobs.pull, jobs.rm, jobs.prune)
ns.add_collection(Collection.from_module(worker), name="worker")
