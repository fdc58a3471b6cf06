"""Environment variables for a job: `-e NAME=value`, `-e NAME` (from here), `--env-file FILE`.

Only the names are kept in records and shown; the values travel to the worker in the environment of
the agent call (never on a command line) and are stored there in the job's `env` file, mode 0600.
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Mapping
from pathlib import Path

from .exceptions import UsageError

NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
RESERVED = frozenset({"P_JOB_ID", "P_PAYLOAD_FILE", "P_CMDLINE", "P_HOME", "P_START_ENV", "SHELL"})


def resolve(items: list[str], env_file: str | None, environ: Mapping[str, str]) -> dict[str, str]:
    """The file first, then each -e in order; a later setting of a name wins."""
    values: dict[str, str] = {}
    for item in (read_file(env_file) if env_file else []) + list(items):
        name, value = parse_item(item, environ)
        values[name] = value
    return values


def read_file(path: str) -> list[str]:
    """docker's --env-file format: NAME=value taken literally, NAME alone, # comments, blank lines."""
    try:
        text = Path(path).read_text(encoding="utf-8", errors="surrogateescape")
    except OSError as exc:
        raise UsageError(f"cannot read env file {path}: {exc.strerror}") from None
    return [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def parse_item(item: str, environ: Mapping[str, str]) -> tuple[str, str]:
    name, sep, value = item.partition("=")
    if not NAME_RE.match(name):
        raise UsageError(f"bad environment variable name '{name}'; use letters, digits and _")
    if name in RESERVED:
        raise UsageError(f"environment variable {name} is p's own; pick another name")
    if not sep:
        if name not in environ:
            raise UsageError(f"-e {name}: {name} is not set here; use -e {name}=value")
        value = environ[name]
    return name, value


def shell_lines(values: dict[str, str]) -> str:
    """NAME='value' lines for the worker's sh (`set -a; . env`)."""
    return "".join(f"{name}={shlex.quote(value)}\n" for name, value in values.items())


def from_cli(items: list[str], env_file: str | None) -> dict[str, str]:
    return resolve(items, env_file, os.environ)
