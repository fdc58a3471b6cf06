"""Generated inputs: source trees, job records in p's local store, finished jobs in the worker layout."""

from __future__ import annotations

import os
import random
import time
import uuid
from pathlib import Path
from unittest import mock

from p_tasks.job import DONE, RUNNING, UNKNOWN, Job  # the record format of the p under test
from p_tasks.store import Store


def make_tree(root: Path, files: int, total_bytes: int, big: int = 0, seed: int = 1) -> dict:
    """`files` regular files (one of them `big.bin` of `big` bytes if big) in 100-file directories,
    incompressible content, `total_bytes` in all. No .gitignore, no .git: p sends every file, like
    `rsync -a` of the directory. Returns {files, bytes}."""
    rng = random.Random(seed)
    root.mkdir(parents=True)
    small_count = files - (1 if big else 0)
    each = max(1, (total_bytes - big) // max(1, small_count))
    block = rng.randbytes(1 << 20)  # unique content per file: a random slice, then the file's index
    written = 0
    for i in range(small_count):
        d = root / f"d{i // 100:03d}"
        if i % 100 == 0:
            d.mkdir()
        off = rng.randrange(0, len(block) - each) if each < len(block) else 0
        data = f"{i}\n".encode() + block[off:off + each - len(f"{i}\n")]
        (d / f"f{i:05d}.dat").write_bytes(data)
        written += len(data)
    if big:
        (root / "big.bin").write_bytes(os.urandom(big))
        written += big
    return {"files": files, "bytes": written}


def tree_bytes(root: Path) -> int:
    total = 0
    for dirpath, _dirs, names in os.walk(root):
        for name in names:
            total += os.lstat(os.path.join(dirpath, name)).st_size
    return total


def edit_file(path: Path) -> None:
    """Rewrite the file with new random bytes of the same size (mtime changes too)."""
    size = path.stat().st_size
    path.write_bytes(os.urandom(size))


def job_record(job_id: str, worker: str, status: str, started: float, cwd: str = "/home/u/proj",
               exit_code: int | None = None, ended: float | None = None) -> Job:
    argv = ["make", "-j16", f"TARGET={job_id[:8]}"]
    return Job(id=job_id, worker=worker, cwd=cwd, argv=argv, status=status, exit_code=exit_code,
               started_at=started, ended_at=ended)


def write_records(jobs_dir: Path, jobs: list[Job]) -> None:
    """Write records with p's own Store.save (so any index or marker it keeps is kept), with fsync
    turned into a no-op while doing so: generating 10,000 records must not take a minute."""
    with mock.patch("os.fsync", lambda fd: None):
        store = Store(jobs_dir)
        for job in jobs:
            store.save(job)


def make_store(jobs_dir: Path, total: int, running: int, worker: str) -> list[str]:
    """`total` records, the newest `running` of them running on `worker`, the rest done (exit 0/1).
    Returns the running ids."""
    now = time.time()
    jobs, running_ids = [], []
    for i in range(total):
        job_id = str(uuid.UUID(int=random.Random(i).getrandbits(128), version=4))
        started = now - (total - i) * 60
        if i >= total - running:
            jobs.append(job_record(job_id, worker, RUNNING, started))
            running_ids.append(job_id)
        else:
            jobs.append(job_record(job_id, worker, DONE, started, exit_code=i % 2, ended=started + 30))
    write_records(jobs_dir, jobs)
    return running_ids


def unknown_jobs(worker_names: list[str], per_worker: int) -> list[Job]:
    now = time.time()
    return [job_record(str(uuid.uuid4()), w, UNKNOWN, now - 600)
            for w in worker_names for _ in range(per_worker)]


def worker_job(worker_home: Path, job: Job, log_bytes: int = 0, exit_code: int = 0) -> Path:
    """A finished job in the worker-side layout (docs/design.md), written directly on the worker's disk:
    ~/.p/jobs/<uuid>/{cmd,cwd,worker,started_at,ended_at,tmux_session,workdir,mode,payload,
    login_shell,output.log,exitcode}; exitcode last."""
    d = worker_home / ".p" / "jobs" / job.id
    d.mkdir(parents=True, mode=0o700)
    started = int(job.started_at or time.time())
    for name, value in (("cmd", job.command), ("cwd", job.cwd), ("worker", job.worker),
                        ("started_at", str(started)), ("ended_at", str(started + 60)),
                        ("tmux_session", f"p-{job.id[:8]}"), ("workdir", "home"), ("mode", "shell"),
                        ("login_shell", "/bin/sh")):
        (d / name).write_text(value + "\n")
    (d / "payload").write_text(job.command)
    with open(d / "output.log", "wb") as log:
        line = b"".join(b"step %06d: compiling module_%04d.c ... ok\n" % (i, i % 9973) for i in range(4096))
        block = (line * (1 + (1 << 22) // len(line)))[: 1 << 22]  # 4 MiB of log-like text
        left = log_bytes
        while left > 0:
            n = min(left, len(block))
            log.write(block[:n])
            left -= n
    (d / "exitcode").write_text(f"{exit_code}\n")
    return d
