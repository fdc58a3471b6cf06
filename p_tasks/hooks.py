"""The optional `on_finish` command from config.yaml, run locally when a job's end is noticed."""

from __future__ import annotations

import os
import subprocess

from .job import Job
from .output import seconds


def on_finish(cfg, job: Job) -> None:
    command = getattr(cfg, "on_finish", None)
    if not command:
        return
    env = dict(os.environ)
    env.update(
        P_JOB_ID=job.id,
        P_JOB_WORKER=job.worker,
        P_JOB_COMMAND=job.command,
        P_JOB_STATUS=job.status,
        P_JOB_EXIT_CODE="" if job.exit_code is None else str(job.exit_code),
        P_JOB_DURATION=str(seconds(job) or 0),
    )
    subprocess.run(command, shell=True, env=env, stdin=subprocess.DEVNULL, check=False, timeout=60)
