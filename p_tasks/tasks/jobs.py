"""Job tasks: run (the `p -- cmd` path), and later ls, attach, logs, stop, pull, rm, prune."""

from __future__ import annotations

from invoke import Exit, task


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
    }
)
def run(c, worker=None, no_sync=False, detach=False, command=None):
    """Run a command on a worker: sync, start in tmux, attach (p [opts] [worker] -- cmd)."""
    from ..submit import submit

    code = submit(c, _job_argv(c, command), worker, no_sync, detach)
    if code:
        raise Exit(code=code)
