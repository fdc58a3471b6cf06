"""Rendering for humans and scripts: durations, tables, JSON."""

from __future__ import annotations

import time
from datetime import datetime, timezone
from pathlib import Path

from .job import Job


def hms(seconds: float) -> str:
    seconds = max(0, int(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def duration(job: Job, now: float | None = None) -> str:
    """H:MM:SS on the worker's clock at both ends when the job has ended."""
    if job.started_at is None:
        return "-"
    end = job.ended_at if job.ended_at is not None else (now or time.time())
    return hms(end - job.started_at)


def tilde(path: str, home: str | None = None) -> str:
    home = (home or str(Path.home())).rstrip("/")
    if path == home or path.startswith(home + "/"):
        return "~" + path[len(home) :]
    return path


def columns(rows: list[list[str]], headers: list[str], flex: int | None = None, width: int = 0) -> str:
    """A docker-ps-like table; column ``flex`` is truncated so each line fits in ``width``."""
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)]
    if flex is not None and width:
        spare = width - (sum(widths) + 2 * (len(widths) - 1))
        if spare < 0:
            widths[flex] = max(len(headers[flex]), widths[flex] + spare)
    cut = [[_fit(cell, widths[i]) for i, cell in enumerate(row)] for row in rows]
    lines = [headers, ["-" * w for w in widths], *cut]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in lines)


def _fit(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: max(0, width - 1)] + "…"


def job_table(jobs: list[Job], width: int, color: bool = False, now: float | None = None) -> str:
    now = now or time.time()
    home = str(Path.home())
    rows = [
        [j.short_id, j.worker, tilde(j.cwd, home), j.command, j.status_text(), duration(j, now)]
        for j in jobs
    ]
    text = columns(rows, ["ID", "WORKER", "CWD", "COMMAND", "STATUS", "DURATION"], flex=3, width=width)
    if not color:
        return text
    lines = text.split("\n")
    for index, job in enumerate(jobs, 2):
        if job.status in ("failed", "unknown") or (job.exit_code not in (None, 0)):
            lines[index] = f"\033[31m{lines[index]}\033[0m"
    return "\n".join(lines)


def job_json(job: Job) -> dict:
    return {
        "id": job.id,
        "worker": job.worker,
        "cwd": job.cwd,
        "command": job.argv,
        "env": job.env_names,
        "status": job.status,
        "exit_code": job.exit_code,
        "started_at": iso(job.started_at),
        "ended_at": iso(job.ended_at),
        "duration_s": seconds(job),
        "reason": job.failure(),
    }


def seconds(job: Job) -> float | None:
    if job.started_at is None:
        return None
    return round((job.ended_at if job.ended_at is not None else time.time()) - job.started_at, 3)


def iso(stamp: float | None) -> str | None:
    if stamp is None:
        return None
    return datetime.fromtimestamp(stamp, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def table(rows: list[list[str]], headers: list[str]) -> str:
    from tabulate import tabulate

    return tabulate(rows, headers=headers, tablefmt="simple", disable_numparse=True)


def worker_table(healths: list) -> str:
    """`p worker ls`: name, connection, default; with the probe's results (`-c`), the worker's facts,
    and below the table one line per worker that is not ok, saying why."""
    checked = any(h.checked for h in healths)
    rows = [[h.name, _connection(h), "*" if h.default else "", *(_facts(h) if checked else [])]
            for h in healths]
    headers = ["NAME", "CONNECTION", "DEFAULT"]
    if checked:
        headers += ["STATE", "AGENT", "ARCH", "OS", "TMUX", "RSYNC", "PYTHON3", "FREE", "JOBS"]
    notes = [f"{h.name}: {h.error or h.problem}" for h in healths if h.error or h.problem]
    return "\n".join([table(rows, headers), *notes])


def _connection(health) -> str:
    from .config import LOCAL

    return "(this machine, built in)" if health.name == LOCAL == health.connection else health.connection


def _facts(health) -> list[str]:
    from .jobctl import human_kb
    from .probe import arch_text

    if not health.reachable:
        return [health.state, *["-"] * 8]
    python3 = {True: "yes", False: "no"}.get(health.python3, "-")
    free = "-" if health.free_kb is None else human_kb(health.free_kb)
    jobs = "-" if health.jobs_running is None else str(health.jobs_running)
    return [health.state, health.agent_version or "-", arch_text(health.arch, health.arch_raw),
            health.os or "-", health.tmux or "-", health.rsync or "-", python3, free, jobs]
