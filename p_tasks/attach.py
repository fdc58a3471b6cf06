"""The terminal side of a job: attach this terminal to its tmux session, or stream its output.

Attach execs OpenSSH (`ssh -t … p-agent attach`) rather than Fabric's `run(pty=True)`: raw mode, the
real TERM, every key, exact UTF-8 and no polling (measured in ../shared/notes/fabric-invoke.md).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile

from . import agent, output
from .exceptions import PError, WorkerUnreachable
from .job import DONE, RUNNING, Job, RemoteState, apply_remote
from .store import Store
from .workers import Worker

CHUNK = 1 << 20


def refresh(worker: Worker, job: Job, store: Store) -> RemoteState | None:
    """Ask the worker for the job's state, save it in the local record, and return what it said."""
    line = agent.call(worker, "status", job.id).lines()
    if not line:
        return None
    remote = RemoteState.parse(line[0])
    apply_remote(job, remote)
    store.save(job)
    return remote


def attach(worker: Worker, job: Job, store: Store) -> int:
    if os.environ.get("TMUX"):
        print(
            "p: you are inside tmux; to detach from the job press Ctrl+B Ctrl+B D "
            "(Ctrl+B D detaches your own tmux)",
            file=sys.stderr,
        )
    rc = subprocess.call(worker.attach_argv(["attach", job.id]))
    try:
        refresh(worker, job, store)
    except WorkerUnreachable:
        raise lost(worker, job) from None
    if rc == 255 and job.status == RUNNING:
        raise lost(worker, job)
    if rc != 0 and job.status == RUNNING:
        # tmux (or the agent) refused to attach, e.g. a TERM the worker has no terminfo for: its own
        # message is on the screen already. Not a detach, which tmux ends with status 0.
        raise PError(
            f"could not attach to job {job.short_id} on {worker.name} (attach exited {rc}); "
            f"it keeps running; retry with `p attach {job.short_id}` or see `p logs -f {job.short_id}`"
        )
    return conclude(job)


def conclude(job: Job) -> int:
    """After the terminal let go: a summary line and the job's exit code, or how to reattach."""
    if job.status == RUNNING:
        from .watch import ensure_watcher

        ensure_watcher(job.worker)
        print(f"p: detached from job {job.short_id}; it keeps running. "
              f"Reattach with `p attach {job.short_id}`", file=sys.stderr)
        return 0
    done = job.status == DONE and job.exit_code is not None
    # `done [exit N]` as in the banner (README, issue): `done [N]` is the `p ls` column's wording.
    state = f"done [exit {job.exit_code}]" if done else job.status_text()
    why = f": {job.failure()}" if job.failure() else ""
    print(f"job {job.short_id} {state} in {output.duration(job)}{why}", file=sys.stderr)
    return job.exit_status


def lost(worker: Worker, job: Job) -> PError:
    return PError(
        f"connection to {worker.name} lost; job {job.short_id} keeps running; "
        f"reattach with `p attach {job.short_id}`"
    )


def stream(worker: Worker, job: Job, store: Store) -> int:
    """Copy the job's output.log to stdout byte for byte until the job ends; return its exit code."""
    offset = agent.stream(worker, "follow", job.id, "0", "1").copied
    refresh(worker, job, store)
    if job.status == RUNNING:
        raise PError(
            f"output stream from {worker.name} ended after {offset} bytes but job {job.short_id} "
            f"is still running; follow it with `p logs -f {job.short_id}`"
        )
    if job.failure():
        print(f"p: job {job.short_id} {job.status}: {job.failure()}", file=sys.stderr)
    return job.exit_status


def pump(argv: list[str], marker: str, script: bytes) -> tuple[int, int, bytes]:
    """Run ``argv`` with ``script`` on its stdin and copy its stdout to ours unchanged, from the line
    ``marker`` on (what a worker's login shell printed at start-up is not the job's output).
    Return (bytes copied, exit status, stderr)."""
    sys.stdout.flush()
    out = sys.stdout.fileno()
    with tempfile.TemporaryFile() as errors, subprocess.Popen(
        argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=errors
    ) as proc:
        try:
            proc.stdin.write(script)  # read whole before any output: the script ends with an exec
            proc.stdin.close()
        except BrokenPipeError:
            pass  # it ended early; its exit status says why
        source = proc.stdout.fileno()
        widen_pipe(source)
        first = skip_marker(source, marker.encode() + b"\n")
        copied = write_all(out, first) + copy_rest(source, out)
        exited = proc.wait()
        errors.seek(0)
        return copied, exited, errors.read()


def widen_pipe(fd: int) -> None:
    """A 1 MiB pipe buffer (Linux) instead of 64 KiB: fewer wake-ups on a bulk stream."""
    try:
        import fcntl

        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, CHUNK)
    except (AttributeError, OSError):
        pass  # not Linux, or above /proc/sys/fs/pipe-max-size: the default works, only slower


def copy_rest(source: int, out: int) -> int:
    """Copy the pipe ``source`` to ``out`` until it ends, in the kernel (splice) where ``out`` allows
    it (a file, a pipe, /dev/null), else through a buffer (a terminal, an O_APPEND file)."""
    copied = 0
    try:
        while moved := os.splice(source, out, CHUNK):
            copied += moved
        return copied
    except (AttributeError, OSError) as exc:
        if isinstance(exc, BrokenPipeError) or copied and not isinstance(exc, AttributeError):
            raise
    while chunk := os.read(source, CHUNK):
        copied += write_all(out, chunk)
    return copied


def skip_marker(source: int, needle: bytes) -> bytes:
    """Read until ``needle``; return what follows it (b"" if the stream ended first)."""
    pending = b""
    while chunk := os.read(source, CHUNK):
        pending += chunk
        index = pending.find(needle)
        if index >= 0:
            return pending[index + len(needle) :]
        pending = pending[-len(needle) :]
    return b""


def write_all(fd: int, data: bytes) -> int:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
    return len(data)
