"""`p pull`: copy a file or directory from a job's workdir back to this machine with rsync."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from urllib.parse import unquote_to_bytes

from . import agent
from .exceptions import AgentError, PError, UsageError
from .jobctl import open_job
from .sync import error_message, pull_argv


def pull(prefix: str, remote_path: str, local_dest: str | None) -> str:
    if not remote_path:
        raise UsageError("p pull needs a path inside the job's workdir")
    job, worker, store = open_job(prefix)
    try:
        try:
            facts = agent.call(worker, "resolve", job.id, remote_path).fields()
        except AgentError as exc:
            raise UsageError(f"cannot pull '{remote_path}' from job {job.short_id}: {exc.detail}") from None
        dest = Path(local_dest or os.path.basename(remote_path.rstrip("/")) or "pulled")
        path = os.fsdecode(unquote_to_bytes(facts["path"]))
        src, rsh = worker.rsync_dest(path)
        if rsh and re.search(r"[*?\[]", path):
            # the remote rsync still expands wildcards in a source path, even with -s; a backslash
            # escapes only in a path that has wildcards
            src, rsh = worker.rsync_dest(re.sub(r"([*?\[\\])", r"\\\1", path))
        argv = pull_argv(src, str(dest), rsh, facts.get("kind") == "dir")
        done = subprocess.run(argv, capture_output=True, text=True, errors="replace", check=False)
        if done.returncode not in (0, 24):
            why = error_message(done.returncode, done.stderr)
            raise PError(f"pull from job {job.short_id} failed: {why}")
        return f"pulled {remote_path} from job {job.short_id} to {dest}"
    finally:
        worker.close()
