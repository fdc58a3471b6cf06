"""Job tasks: run (the `p -- cmd` path), and later ls, attach, logs, stop, pull, rm, prune."""

from __future__ import annotations

from invoke import Exit, task

from ..exceptions import UsageError


def _job_argv(c, command: str | None) -> list[str]:
    """The exact argv given after `--` (set by the p Program), or --command as one shell line."""
    if command:
        return [command]
    try:
        return list(c.config.p.argv)
    except (AttributeError, KeyError):
        return []


@task(
    help={
        "worker": "worker to run on (default: the default worker, else `local`)",
        "no-sync": "do not sync the current directory; run in the worker user's home",
        "detach": "start the job, print its id and return",
        "command": "a shell command line to run (what `p -- <command>` passes when used from invoke)",
        "yes": "send a sync bigger than sync_warn_mb (config.yaml, default 100) without asking",
        "dry-run": "print what would be sent (files, size, the largest paths); start nothing",
        "no-gitignore": "send what .gitignore excludes too, for this run (.pignore still applies)",
        "env": "NAME=value (or NAME, taken from here) for the job's environment; repeatable",
        "env-file": "a file of NAME=value lines for the job's environment",
    },
    iterable=["env"],
)
def run(c, worker=None, no_sync=False, detach=False, command=None, yes=False, dry_run=False,
        no_gitignore=False, env=None, env_file=None):
    """Run a command on a worker: sync, start in tmux, attach (p [opts] [worker] -- cmd)."""
    from ..submit import submit

    code = submit(c, _job_argv(c, command), worker, no_sync, detach, yes=yes, dry_run=dry_run,
                  gitignore=not no_gitignore, env=_job_env(c, env, env_file))
    if code:
        raise Exit(code=code)


def _job_env(c, env: list[str] | None, env_file: str | None) -> dict[str, str]:
    """-e/--env-file as given to `p` (carried in the config by the Program) or to the task."""
    from ..jobenv import from_cli

    try:
        given = c.config.p.env
        items, env_file = list(given["items"]) + list(env or []), given["file"] or env_file
    except (AttributeError, KeyError):
        items = list(env or [])
    return from_cli(items, env_file)


@task(
    name="ls",
    help={"all": "also show finished jobs", "json": "print a JSON array", "quiet": "print full ids only"},
)
def ls(c, all=False, json=False, quiet=False):  # noqa: A002 - the flag is --all
    """List running jobs across all workers (-a adds finished ones), newest first."""
    from ..listing import list_jobs

    list_jobs(all, json, quiet)


@task(positional=["job_id"], help={"job_id": "job id or unique prefix"})
def attach(c, job_id):
    """Re-attach this terminal to a job's tmux session (Ctrl+B D detaches again)."""
    from ..jobctl import attach_job

    code = attach_job(job_id)
    if code:
        raise Exit(code=code)


def line_count(text: str) -> int:
    """--tail's value: a whole number of lines, >= 0."""
    if not text.strip().isdigit():
        raise UsageError(f"--tail needs a number of lines >= 0, not '{text}'")
    return int(text)


@task(
    positional=["job_id"],
    help={"job_id": "job id or unique prefix", "follow": "keep printing until the job ends",
          "tail": "print only the last N lines"},
)
def logs(c, job_id, follow=False, tail=None):
    """Print a job's captured output (running or finished), byte for byte."""
    from ..jobctl import show_logs

    code = show_logs(job_id, follow, None if tail is None else line_count(tail))
    if code:
        raise Exit(code=code)


@task(
    positional=["job_id"],
    help={"job_id": "job id or unique prefix", "timeout": "seconds between SIGTERM and SIGKILL (10)"},
)
def stop(c, job_id, timeout=10):
    """Stop a running job and every process it started (SIGTERM, then SIGKILL after --timeout)."""
    from ..jobctl import stop_job

    print(stop_job(job_id, float(timeout)))


@task(
    positional=["job_id", "remote_path"],
    help={"job_id": "job id or unique prefix", "remote_path": "file or directory in the job's workdir",
          "dest": "where to put it (default: its name, in the current directory)"},
)
def pull(c, job_id, remote_path, dest=None):
    """Copy a file or directory from a job's workdir to this machine (p pull ID PATH [DEST])."""
    from ..pull import pull as pull_path

    print(pull_path(job_id, remote_path, dest))


@task(
    name="rm",
    positional=["job_id"],
    help={"job_id": "job id or unique prefix", "force": "also remove a running job (it is stopped first)"},
)
def rm(c, job_id, force=False):
    """Remove a job's record, its remote job dir and its workdir."""
    from ..jobctl import rm_job

    print(rm_job(job_id, force))


@task(help={"force": "also remove jobs whose state is unknown", "dry-run": "only list what would go"})
def prune(c, force=False, dry_run=False):
    """Remove all finished jobs (done, failed, stopped) with their remote dirs."""
    from ..prune import prune as prune_jobs

    prune_jobs(force, dry_run)
