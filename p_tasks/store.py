"""The local job store: one JSON record per job, written atomically, with a cheap 'active' index.

``jobs/<uuid>.json`` holds the record; ``jobs/active/<uuid>`` exists while the job is starting, running
or unknown, so listing the running jobs never parses the finished ones.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from . import paths
from .exceptions import JobNotFound, UsageError
from .job import SCHEMA_VERSION, UUID_RE, Job


@dataclass
class BadRecord:
    path: Path
    reason: str


class Store:
    def __init__(self, root: Path | None = None) -> None:
        self.root = root or paths.jobs_dir()
        self.active_dir = self.root / "active"

    def path(self, job_id: str) -> Path:
        return self.root / f"{job_id}.json"

    def save(self, job: Job) -> None:
        if not UUID_RE.match(job.id):
            raise ValueError(f"refusing to store a job with a malformed id: {job.id!r}")
        data = json.dumps(job.to_dict(), indent=1, ensure_ascii=False).encode()
        paths.atomic_write(self.path(job.id), data + b"\n")
        marker = self.active_dir / job.id
        if job.active:
            paths.private_dir(self.active_dir)
            marker.touch(mode=0o600)
        else:
            marker.unlink(missing_ok=True)

    def _latest_path(self, worker: str, cwd: str) -> Path:
        key = hashlib.sha1(f"{worker}\0{cwd}".encode("utf-8", "surrogateescape")).hexdigest()
        return self.root / "latest" / key

    def latest_workdir(self, worker: str, cwd: str) -> str | None:
        """The newest synced job from ``cwd`` on ``worker``: the delta base for the next sync."""
        try:
            job_id = self._latest_path(worker, cwd).read_text().strip()
        except OSError:
            return None
        return job_id if UUID_RE.match(job_id) else None

    def remember_workdir(self, job: Job) -> None:
        paths.atomic_write(self._latest_path(job.worker, job.cwd), job.id.encode())

    def delete(self, job_id: str) -> None:
        (self.active_dir / job_id).unlink(missing_ok=True)
        self.path(job_id).unlink(missing_ok=True)

    def load(self, job_id: str) -> Job:
        job = self._read(self.path(job_id))
        if isinstance(job, BadRecord):
            raise JobNotFound(f"job record {job.path} is unreadable ({job.reason})")
        return job

    def _read(self, path: Path) -> Job | BadRecord:
        try:
            data = json.loads(path.read_bytes())
            if data.get("schema_version", 0) > SCHEMA_VERSION:
                return BadRecord(path, "written by a newer p; upgrade p")
            job = Job.from_dict(data)
        except FileNotFoundError:
            return BadRecord(path, "missing")
        except (OSError, ValueError, TypeError, AttributeError) as exc:
            return BadRecord(path, f"corrupt: {exc.__class__.__name__}")
        if job.id != path.stem or not UUID_RE.match(job.id):
            return BadRecord(path, "id does not match file name")
        return job

    def ids(self, active_only: bool = False) -> list[str]:
        folder = self.active_dir if active_only else self.root
        if not folder.is_dir():
            return []
        suffix = "" if active_only else ".json"
        names = (p.name for p in folder.iterdir())
        found = (n[: len(n) - len(suffix)] for n in names if n.endswith(suffix))
        return [i for i in found if UUID_RE.match(i)]

    def scan(self, active_only: bool = False) -> Iterator[Job | BadRecord]:
        for job_id in self.ids(active_only):
            record = self._read(self.path(job_id))
            if isinstance(record, BadRecord) and record.reason == "missing" and active_only:
                (self.active_dir / job_id).unlink(missing_ok=True)
                continue
            yield record

    def jobs(self, active_only: bool = False) -> list[Job]:
        return [j for j in self.scan(active_only) if isinstance(j, Job)]

    def resolve(self, prefix: str) -> Job:
        """Find one job by full id or unique prefix; errors list the candidates."""
        if not prefix or not all(c in "0123456789abcdef-" for c in prefix.lower()):
            raise UsageError(f"'{prefix}' is not a job id; see `p ls -a`")
        prefix = prefix.lower()
        matches = [i for i in self.ids() if i.startswith(prefix)]
        if not matches:
            raise JobNotFound(f"no job matches '{prefix}'; see `p ls -a`")
        if len(matches) > 1:
            jobs = [self._read(self.path(i)) for i in sorted(matches)]
            listed = "; ".join(
                f"{j.short_id} on {j.worker}: {j.command}" for j in jobs if isinstance(j, Job)
            )
            raise UsageError(f"job id '{prefix}' is ambiguous, it matches {listed}")
        return self.load(matches[0])
