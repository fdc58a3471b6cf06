"""`p pull`: copy a file or directory from a job's workdir back to this machine with rsync.

On a terminal, a pull of more than about a second shows its progress on stderr (progress.py): the
total is not known up front, so the line carries rsync's own percentage and ETA.
"""

from __future__ import annotations

import codecs
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from urllib.parse import unquote_to_bytes

from . import agent
from .exceptions import AgentError, PError, UsageError
from .jobctl import open_job
from .progress import Progress, rsync_has_progress2
from .sync import VANISHED, error_message, pull_argv


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
        shown = Progress(None, label="pull") if sys.stderr.isatty() and rsync_has_progress2() else None
        code, stderr = run(argv, shown)
        if code not in (0, VANISHED):
            raise PError(f"pull from job {job.short_id} failed: {error_message(code, stderr)}")
        return f"pulled {remote_path} from job {job.short_id} to {dest}"
    finally:
        worker.close()


def run(argv: list[str], progress: Progress | None) -> tuple[int, str]:
    """Run rsync's ``argv``: (exit status, its stderr). With ``progress``, rsync also reports a
    running total (``--info=progress2``) on its stdout, which goes into ``progress``, cleared at the end."""
    if progress is None:
        done = subprocess.run(argv, capture_output=True, text=True, errors="replace", check=False)
        return done.returncode, done.stderr
    with tempfile.TemporaryFile() as err:  # a file, not a pipe: stderr cannot fill up and block rsync
        proc = subprocess.Popen([argv[0], "--info=progress2", *argv[1:]], stdout=subprocess.PIPE,
                                stderr=err)
        try:
            _feed(proc.stdout, progress)
        finally:
            code = proc.wait()
            progress.clear()
        err.seek(0)
        return code, err.read().decode(errors="replace")


def _feed(stream, progress: Progress) -> None:
    """Copy rsync's stdout into ``progress`` as it arrives (rsync ends its records with ``\\r``)."""
    decode = codecs.getincrementaldecoder("utf-8")(errors="replace").decode
    with stream:
        for chunk in iter(lambda: os.read(stream.fileno(), 65536), b""):
            progress.write(decode(chunk))
