"""The Job record and its status vocabulary."""

from __future__ import annotations

import re
import shlex
import uuid
from dataclasses import asdict, dataclass, field

SCHEMA_VERSION = 1

STARTING = "starting"  # record written, start not yet confirmed by the worker
RUNNING = "running"
DONE = "done"  # finished by itself; exit_code holds its status
STOPPED = "stopped"  # ended by `p stop`
FAILED = "failed"  # could not start, or vanished from the worker with no exit code
UNKNOWN = "unknown"  # state not confirmed

ACTIVE = frozenset({STARTING, RUNNING, UNKNOWN})
FINISHED = frozenset({DONE, STOPPED, FAILED})

# The agent could not write the exit status when the job ended: nearly always a full disk.
UNRECORDED = ("the worker could not record the job's exit status, its disk is probably full "
              "(the end of output.log may be missing too)")

UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def new_id() -> str:
    return str(uuid.uuid4())


def newest_first(jobs: list[Job]) -> list[Job]:
    """`p ls`'s order, also `p prune --dry-run`'s."""
    return sorted(jobs, key=lambda j: (j.started_at or 0, j.id), reverse=True)


def display_command(argv: list[str]) -> str:
    """How a command is shown to humans: a single argument as typed, argv shell-quoted."""
    return argv[0] if len(argv) == 1 else shlex.join(argv)


@dataclass
class Job:
    id: str
    worker: str
    cwd: str
    argv: list[str]
    status: str = STARTING
    exit_code: int | None = None
    started_at: float | None = None  # worker clock, unix seconds
    ended_at: float | None = None  # worker clock, unix seconds
    synced: bool = True
    reason: str | None = None
    env_names: list[str] = field(default_factory=list)  # names only: values are never recorded
    command: str = field(default="")
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        if not self.command:
            self.command = display_command(self.argv)

    @property
    def short_id(self) -> str:
        return self.id[:8]

    @property
    def session(self) -> str:
        return f"p-{self.short_id}"

    @property
    def active(self) -> bool:
        return self.status in ACTIVE

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Job:
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        return cls(**known)

    @property
    def exit_status(self) -> int:
        """What `p -- cmd`, `p attach` and `p logs -f` exit with once the job has ended: the job's own
        exit code when the worker recorded one (done; stopped: 143 after SIGTERM, 137 after SIGKILL),
        else 1 (failed or unknown: no code)."""
        return self.exit_code if self.status in (DONE, STOPPED) and self.exit_code is not None else 1

    def failure(self) -> str | None:
        """Why a failed or unknown job is so, when known."""
        return self.reason if self.status in (FAILED, UNKNOWN) else None

    def status_text(self) -> str:
        """The STATUS column: `done [N]` for finished jobs, as in the spec's example."""
        if self.status == DONE:
            return f"done [{self.exit_code}]"
        return self.status


@dataclass
class RemoteState:
    """One line of the agent's `status` reply: `ID STATE EXIT STARTED ENDED` (`-` when absent)."""

    id: str
    state: str  # running | done | unrecorded | vanished | missing
    exit_code: int | None
    started_at: float | None
    ended_at: float | None
    session_open: bool = False

    @classmethod
    def parse(cls, line: str) -> RemoteState:
        job_id, state, code, started, ended, session = (line.split() + ["-"] * 6)[:6]
        num = lambda v: None if v == "-" else float(v)  # noqa: E731
        return cls(job_id, state, None if code == "-" else int(code), num(started), num(ended),
                   session == "open")


def apply_remote(job: Job, remote: RemoteState) -> None:
    """Fold what the worker says into the record; `stopped` stays stopped."""
    job.started_at = remote.started_at or job.started_at
    if remote.state == "running":
        job.status = RUNNING
    elif remote.state == "done":
        job.exit_code, job.ended_at = remote.exit_code, remote.ended_at
        job.status = job.status if job.status == STOPPED else DONE
    elif remote.state == "unrecorded" and job.status != STOPPED:
        job.status, job.ended_at = FAILED, remote.ended_at
        job.reason = UNRECORDED
    elif remote.state in ("vanished", "missing") and job.status != STOPPED:
        job.status = FAILED
        job.reason = f"{remote.state} from the worker without an exit code"
