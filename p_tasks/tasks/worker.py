"""Worker tasks: register, ls, rm, default."""

from __future__ import annotations

import sys

from invoke import task

from .. import config
from ..config import LOCAL
from ..exceptions import UsageError
from ..job import Job
from ..store import Store


@task(
    help={
        "connection": "user@host, user@host:port, user@[ipv6]:port, host, or an ~/.ssh/config alias",
        "name": "name for the worker (default: the host name)",
        "no-check": "register without connecting (the worker is probed on first use)",
        "accept-new-host-key": "trust the worker's host key if known_hosts has none (never a changed one)",
    },
    positional=["connection"],
)
def register(c, connection, name=None, no_check=False, accept_new_host_key=False):
    """Register a worker; the first one registered becomes the default."""
    from ..registration import register as register_worker

    entry, facts = register_worker(connection, name, no_check, accept_new_host_key)
    print(f"registered worker '{entry.name}' ({entry.connection}){facts}")


@task(
    name="ls",
    help={"check": "probe every worker over SSH, in parallel: reachable, agent, arch, tools, disk, jobs",
          "json": "print a JSON array of objects",
          "timeout": "with -c: seconds to wait for each worker (20)"},
)
def ls(c, check=False, json=False, timeout=None):
    """List registered workers (`local` is built in); -c also checks each one."""
    import json as json_lib

    from .. import probe
    from ..output import worker_table

    cfg = config.load()
    try:
        limit = probe.PROBE_TIMEOUT if timeout is None else float(timeout)
    except ValueError:
        limit = 0
    if not limit > 0:
        raise UsageError(f"--timeout needs a number of seconds > 0, not '{timeout}'")
    healths = probe.probe_all(cfg, limit) if check else probe.unchecked(cfg)
    if json:
        print(json_lib.dumps([h.as_json() for h in healths], indent=1))
    else:
        print(worker_table(healths))


@task(name="rm", positional=["name"], help={"name": "the worker to unregister"})
def rm(c, name):
    """Unregister a worker; refused while it has unfinished jobs.

    Removing the default worker makes the first remaining one the default (`local` when none is left).
    """
    if name == LOCAL:
        raise UsageError("`local` is built in and cannot be removed; `p worker default <name>` "
                         "makes another worker the default")
    config.load().get(name)  # an unknown name is reported before anything else is looked at
    unfinished = unfinished_jobs(name)
    if unfinished:
        ids = ", ".join(f"{j.short_id} {j.status}" for j in unfinished)
        raise UsageError(f"worker '{name}' has unfinished jobs ({ids}); stop them first "
                         "(`p stop <id>`) or wait for them to end")
    with config.editing() as cfg:
        cfg.workers.remove(cfg.get(name))
        was_default = cfg.default_worker == name
        if was_default:
            cfg.default_worker = cfg.workers[0].name if cfg.workers else None
    after = f"; the default worker is now '{cfg.default}'" if was_default else ""
    print(f"removed worker '{name}'{after}", file=sys.stderr)


def unfinished_jobs(worker: str) -> list[Job]:
    """The worker's jobs that are not known to have ended. Records nobody watches are first checked
    with the worker (as `p ls` does), so a job that ended unnoticed does not block the removal; a
    worker that does not answer leaves them `unknown`, which blocks it."""
    store = Store()
    jobs = [j for j in store.jobs(active_only=True) if j.worker == worker]
    if jobs:
        from ..reconcile import ask, suspects

        unsure = suspects(store, jobs)
        if unsure:
            ask(store, worker, unsure)
    return [j for j in jobs if j.active]


@task(positional=["name"], help={"name": "the worker to use when none is named (`local`: this machine)"})
def default(c, name):
    """Set the default worker."""
    with config.editing() as cfg:
        cfg.get(name)
        cfg.default_worker = name
    print(f"default worker is now '{name}'", file=sys.stderr)
