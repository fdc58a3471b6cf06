"""Where p keeps its files on the client, following the XDG base directory spec."""

from __future__ import annotations

import os
from pathlib import Path
from typing import IO


def _xdg(var: str, fallback: str) -> Path:
    value = os.environ.get(var, "")
    return Path(value) if os.path.isabs(value) else Path.home() / fallback


def config_file() -> Path:
    return _xdg("XDG_CONFIG_HOME", ".config") / "p" / "config.yaml"


def jobs_dir() -> Path:
    return _xdg("XDG_DATA_HOME", ".local/share") / "p" / "jobs"


def control_dir() -> Path:
    """Directory for OpenSSH ControlMaster sockets (unix socket paths must stay short)."""
    runtime = os.environ.get("XDG_RUNTIME_DIR", "")
    base = Path(runtime) / "p" if os.path.isabs(runtime) else _xdg("XDG_CACHE_HOME", ".cache") / "p"
    path = base / "ssh"
    if len(str(path)) > 60:
        path = Path("/tmp") / f"p-ssh-{os.getuid()}"
    return path


def own_dirs() -> list[Path]:
    """Directories holding p's own state on this machine, never worth syncing (and, for the `local`
    worker, ~/.p holds every earlier job's workdir: a job from $HOME would copy them all again)."""
    return [Path.home() / ".p", jobs_dir().parent, _xdg("XDG_CACHE_HOME", ".cache") / "p", control_dir()]


def private_dir(path: Path) -> Path:
    """Create ``path`` readable only by the owner; return it. Missing parents (an XDG base dir
    such as ~/.local/share) are made 0700 too, as the XDG spec asks (mkdir -p would make them 0755)."""
    for missing in reversed([p for p in (path, *path.parents) if not p.exists()]):
        missing.mkdir(exist_ok=True, mode=0o700)
    return path


def open_lock(path: Path) -> IO[str]:
    """Open (creating it readable only by the owner) a lock file for fcntl.flock."""
    return os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), "a")


def atomic_write(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Write ``data`` to ``path`` via a temp file in the same directory and a rename."""
    private_dir(path.parent)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
