"""`p -- cmd`: check the worker, sync the CWD, start the job in tmux, then attach, stream or detach."""

from __future__ import annotations

import random
import re
import shlex
import shutil
import sys
import threading
import time
from pathlib import Path

from . import agent, attach, config, jobenv, sizes, sync
from .config import LOCAL
from .exceptions import ConfigError, PError, SyncError, UsageError, WorkerUnfit
from .job import FAILED, RUNNING, UNKNOWN, Job, new_id
from .progress import Progress, rsync_has_progress2
from .store import Store
from .sync import SyncPlan
from .workers import RETRY_DELAYS, Worker, open_worker


def payload(argv: list[str]) -> tuple[str, str]:
    """(mode, payload) for the agent's `start`: one argument is a shell line, several are exact argv."""
    if len(argv) == 1:
        return "shell", argv[0]
    return "argv", "exec " + shlex.join(argv)


MIN_TMUX = (2, 6)


def tmux_version(text: str) -> tuple[int, int] | None:
    """(major, minor) from what `tmux -V` printed after 'tmux ' ('3.3a', 'next-3.4', '2.6'); None if odd."""
    match = re.search(r"(\d+)\.(\d+)", text)
    return (int(match.group(1)), int(match.group(2))) if match else None


NO_SYNC_HINT = "run without syncing: p -n -- <command>"


def check_worker(
    worker: Worker, hello: dict[str, str], need_rsync: bool, no_sync_hint: str = NO_SYNC_HINT
) -> None:
    """Raise WorkerUnfit (one line: what is wrong on which worker, and the fix) unless it can run jobs.
    ``no_sync_hint`` ends the rsync messages: how to do without rsync where the caller is."""
    where = f"worker '{worker.name}'"
    tmux = hello.get("tmux", "missing")
    if tmux == "missing":
        raise WorkerUnfit(f"tmux is not installed on {where}; install it there (e.g. apt-get install tmux)")
    version = tmux_version(tmux)
    if tmux == "unknown":
        raise WorkerUnfit(f"tmux on {where} does not run (`tmux -V` failed); reinstall it there")
    if version and version < MIN_TMUX:
        raise WorkerUnfit(f"tmux {tmux} on {where} is too old; p needs tmux >= 2.6")
    if need_rsync and hello.get("rsync") == "unknown":
        raise WorkerUnfit(
            f"rsync on {where} does not run (`rsync --version` failed); repair it there "
            f"or {no_sync_hint}"
        )
    if need_rsync and hello.get("rsync", "missing") == "missing":
        raise WorkerUnfit(
            f"rsync is not installed on {where}; install it there (e.g. apt-get install rsync) "
            f"or {no_sync_hint}"
        )
    if need_rsync and shutil.which("rsync") is None:
        raise WorkerUnfit("rsync is not installed on this machine; install it (e.g. apt-get install rsync)")


def submit(
    ctx, argv: list[str], worker_name: str | None, no_sync: bool, detach: bool, *,
    yes: bool = False, dry_run: bool = False, gitignore: bool = True, env: dict[str, str] | None = None,
) -> int:
    """The whole `p -- cmd` path. What would be sent is computed (and a big sync confirmed, see
    sizes.guard) before the worker is contacted; ``dry_run`` stops right there."""
    if not argv or argv == [""]:
        raise UsageError("nothing to run after `--`; usage: p [<worker>] -- <command> [<arg>...]")
    cfg = config.load()
    if not worker_name and cfg.default_worker not in (None, LOCAL) and not cfg.find(cfg.default_worker):
        raise ConfigError(
            f"default_worker '{cfg.default_worker}' in {cfg.path} is not a registered worker; "
            "fix it with `p worker default <name>`"
        )
    entry = cfg.get(worker_name or cfg.default)
    plan = None if no_sync else sync_plan(gitignore)
    if dry_run:
        home = f"would run in the home directory of worker '{entry.name}' (-n), nothing to send"
        print(sizes.dry_run_text(plan, entry.name) if plan else f"{home}; nothing started")
        return 0
    if plan is not None:
        sizes.guard(plan, entry.name, cfg.sync_warn_mb, yes)
    worker = open_worker(entry)
    store = Store()
    try:
        job = Job(new_id(), entry.name, str(Path.cwd()), argv, synced=not no_sync,
                  env_names=sorted(env or {}))
        job = start(local_context(ctx), worker, job, store, plan, env or {})
        if detach:
            from .watch import ensure_watcher

            ensure_watcher(job.worker)
            print(job.id)
            return 0
        if sys.stdin.isatty() and sys.stdout.isatty():
            return attach.attach(worker, job, store)
        return attach.stream(worker, job, store)
    finally:
        worker.close()


def local_context(ctx):
    """rsync runs on this machine: under `fab -H host`, the task's ``c`` is a remote Connection."""
    from invoke import Context

    return ctx if type(ctx) is Context else Context(config=getattr(ctx, "config", None))


def start(
    ctx, worker: Worker, job: Job, store: Store, plan: SyncPlan | None = None, env: dict | None = None
) -> Job:
    """Check the worker, sync, start. The record exists (`starting`) before anything lands on the
    worker, so a p killed at any step leaves a record that `p ls` reconciles and `p prune` cleans."""
    warming = threading.Thread(target=worker.warm, daemon=True)  # OpenSSH master, alongside hello
    warming.start()
    hello = agent.call(worker, "hello").fields()
    check_worker(worker, hello, need_rsync=job.synced)
    warming.join()
    store.save(job)
    try:
        if job.synced:
            upload(ctx, worker, job, store.latest_workdir(job.worker, job.cwd), plan)
            store.remember_workdir(job)
        mode, body = payload(job.argv)
        workdir = "sync" if job.synced else "home"
        job.reason = "starting"
        secret = {"P_START_ENV": jobenv.shell_lines(env)} if env else None
        reply = agent.call(worker, "start", job.id, job.worker, job.cwd, workdir, mode, job.command, body,
                           start_size(), secret_env=secret)
    except (PError, KeyboardInterrupt) as exc:
        # Interrupted while `start` ran: the job may be running; `unknown` makes p ls ask the worker.
        interrupted_start = isinstance(exc, KeyboardInterrupt) and job.reason == "starting"
        job.status = UNKNOWN if interrupted_start else FAILED
        job.reason = getattr(exc, "message", "interrupted")
        store.save(job)
        raise
    fields = reply.fields()
    job.reason = None
    job.status, job.started_at = RUNNING, float(fields.get("started_at", 0)) or None
    store.save(job)
    return job


def start_size() -> str:
    """COLSxROWS the job starts with: this terminal's, less the status bar, when p will attach."""
    if sys.stdin.isatty() and sys.stdout.isatty():
        size = shutil.get_terminal_size()
        return f"{size.columns}x{max(1, size.lines - 1)}"
    return "200x50"


def sync_plan(gitignore: bool = True) -> SyncPlan:
    """What a sync of the CWD sends (git's view, .pignore applied; all but .pignore's without gitignore)."""
    return sync.plan(Path.cwd(), gitignore=gitignore)


def upload(
    ctx, worker: Worker, job: Job, base: str | None = None, plan: SyncPlan | None = None
) -> None:
    """rsync the CWD into the job's fresh workdir; ``base``, an earlier job's workdir, makes it a delta.
    On a terminal, a sync of more than about a second shows its progress on stderr."""
    plan = plan or sync_plan()
    dest, rsh = worker.rsync_dest(f".p/workdirs/{job.id}/")
    shown = Progress(plan.nbytes) if sys.stderr.isatty() and rsync_has_progress2() else None
    copy_dest = f"../{base}/" if base else None
    for delay in (*RETRY_DELAYS, None):
        try:
            sync.run(plan, dest, rsh, ctx, copy_dest=copy_dest, progress=shown)
            return
        except SyncError as exc:
            if copy_dest and exc.code == sync.PARTIAL:
                # The delta base went away during the sync (`p rm`/`p prune` of that earlier job, from
                # anywhere): the copies already made are the job's own; rsync again, without a base,
                # into the same workdir, which sends just what is still missing.
                copy_dest, delay = None, 0
            elif delay is None or not exc.transient:
                why = exc.message
                raise SyncError(f"sync to worker '{worker.name}' failed, no job started: {why}") from None
        time.sleep(delay * (0.5 + random.random()))
        if shown:
            shown.restart()
