"""Helpers for tests: polling without bare sleeps, and running the `p` console script.

Import them as `from helpers import retry_until, run_p` (tests/ is on sys.path, see conftest.py).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sysconfig
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


def retry_until(
    predicate: Callable[[], T],
    timeout: float = 10,
    interval: float = 0.05,
    message: str | Callable[[], str] | None = None,
    ignore: tuple[type[BaseException], ...] = (),
) -> T:
    """Call predicate until it returns something truthy, and return that.

    Raises AssertionError after `timeout` seconds, naming the predicate, its last value and `message`
    (a callable is called then, e.g. to show a terminal's screen). Exceptions of the types in `ignore`
    count as a falsy result; any other exception propagates at once.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = predicate()
        except ignore as exc:
            value = exc  # type: ignore[assignment]
        else:
            if value:
                return value
        if time.monotonic() >= deadline:
            text = message() if callable(message) else message
            name = getattr(predicate, "__qualname__", repr(predicate))
            raise AssertionError(
                f"{name} still false after {timeout}s (last value: {value!r})"
                + (f"\n{text}" if text else "")
            )
        time.sleep(interval)


def scripts_dir() -> str:
    """The bin/ directory where this interpreter's console scripts (`p`) are installed."""
    return sysconfig.get_path("scripts")


def p_executable(env: Mapping[str, str] | None = None) -> str:
    """Path of the installed `p` console script, found on env's PATH or next to this interpreter."""
    env = os.environ if env is None else env
    found = shutil.which("p", path=env.get("PATH")) or shutil.which("p", path=scripts_dir())
    if not found:
        raise AssertionError(
            f"no `p` console script on PATH or in {scripts_dir()}; install with `pip install -e .[test]`"
        )
    return found


def run_command(
    argv: Sequence[str | os.PathLike[str]],
    input: bytes | str | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = 60,
    cwd: str | os.PathLike[str] | None = None,
) -> tuple[int, bytes, bytes]:
    """Run argv with the (isolated) environment plus `env`, stdin from `input` or /dev/null.

    Returns (returncode, stdout, stderr). On timeout the whole process group is killed and an
    AssertionError carries what it printed so far.
    """
    full_env = {**os.environ, **(env or {})}
    data = input.encode() if isinstance(input, str) else input
    proc = subprocess.Popen(
        [os.fspath(a) for a in argv], env=full_env, cwd=cwd, start_new_session=True,
        stdin=subprocess.PIPE if data is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    try:
        out, err = proc.communicate(data, timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        raise AssertionError(
            f"{list(argv)} timed out after {timeout}s\nstdout: {out!r}\nstderr: {err!r}"
        ) from None
    return proc.returncode, out, err


def run_p(
    *args: str | os.PathLike[str],
    input: bytes | str | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = 60,
    cwd: str | os.PathLike[str] | None = None,
) -> tuple[int, bytes, bytes]:
    """Run the installed `p` console script as a real process: (returncode, stdout, stderr)."""
    full_env = {**os.environ, **(env or {})}
    return run_command([p_executable(full_env), *args], input=input, env=env, timeout=timeout, cwd=cwd)


def read_text_when_present(path: Path) -> str | None:
    """The file's text, or None while it does not exist yet (a retry_until predicate building block)."""
    try:
        return path.read_text()
    except FileNotFoundError:
        return None


def start_detached(worker_name: str, *command: str) -> str:
    """`p -d WORKER -- COMMAND`: the new job's id."""
    rc, out, err = run_p("-d", worker_name, "--", *command)
    assert rc == 0, err
    return out.decode().strip()


def ls_json(*flags: str) -> list[dict]:
    rc, out, err = run_p("ls", "--json", *flags)
    assert rc == 0, err
    return json.loads(out)


def status_of(job_id: str) -> dict:
    """The job as `p ls -a --json` shows it (which reconciles it first when its end is not known)."""
    return next(j for j in ls_json("-a") if j["id"] == job_id)
