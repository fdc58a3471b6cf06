"""Rendering for humans and scripts: durations, tables, JSON."""

from __future__ import annotations

import time

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


def table(rows: list[list[str]], headers: list[str]) -> str:
    from tabulate import tabulate

    return tabulate(rows, headers=headers, tablefmt="simple", disable_numparse=True)


def worker_table(cfg) -> str:
    from .config import LOCAL

    rows = [[w.name, w.connection, "*" if w.name == cfg.default else ""] for w in cfg.workers]
    if not cfg.find(LOCAL):
        rows.insert(0, [LOCAL, "(this machine, built in)", "*" if cfg.default == LOCAL else ""])
    return table(rows, ["NAME", "CONNECTION", "DEFAULT"])
