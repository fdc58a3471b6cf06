"""Worker tasks: register, ls, rm, default."""

from __future__ import annotations

import sys

from invoke import task

from .. import config
from ..config import LOCAL
from ..exceptions import UsageError
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
    """Unregister a worker; refused while it has running jobs."""
    if name == LOCAL:
        raise UsageError("`local` is built in and cannot be removed")
    running = [j for j in Store().jobs(active_only=True) if j.worker == name]
    if running:
        ids = ", ".join(j.short_id for j in running)
        raise UsageError(f"worker '{name}' has running jobs ({ids}); stop them first (`p stop <id>`)")
    with config.editing() as cfg:
        cfg.workers.remove(cfg.get(name))
        if cfg.default_worker == name:
            cfg.default_worker = None
    print(f"removed worker '{name}'", file=sys.stderr)


@task(positional=["name"], help={"name": "the worker to use when none is named"})
def default(c, name):
    """Set the default worker."""
    with config.editing() as cfg:
        cfg.get(name)
        cfg.default_worker = name
    print(f"default worker is now '{name}'", file=sys.stderr)
