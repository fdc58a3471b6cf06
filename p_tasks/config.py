"""config.yaml: the registered workers and the default one, in the spec's schema.

```yaml
default_worker: beefy
workers:
  - name: beefy
    connection: user@192.168.1.50
```
"""

from __future__ import annotations

import fcntl
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from . import paths
from .exceptions import ConfigError, UsageError, WorkerNotFound

LOCAL = "local"
KEYS = ("default_worker", "workers", "sync_warn_mb", "on_finish")  # config.yaml's top-level keys
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")


@dataclass
class WorkerEntry:
    name: str
    connection: str


@dataclass
class Config:
    workers: list[WorkerEntry] = field(default_factory=list)
    default_worker: str | None = None
    path: Path = field(default_factory=paths.config_file)
    on_finish: str | None = None  # local command run when a job's end is noticed (see hooks.py)
    sync_warn_mb: float | None = None  # ask before a sync bigger than this (default 100; 0: never ask)

    def find(self, name: str) -> WorkerEntry | None:
        return next((w for w in self.workers if w.name == name), None)

    def get(self, name: str) -> WorkerEntry:
        if name == LOCAL and not self.find(LOCAL):
            return WorkerEntry(LOCAL, LOCAL)
        entry = self.find(name)
        if entry is None:
            raise WorkerNotFound(name)
        return entry

    @property
    def default(self) -> str:
        return self.default_worker or LOCAL

    def to_yaml(self) -> bytes:
        data: dict = {}
        if self.default_worker:
            data["default_worker"] = self.default_worker
        data["workers"] = [{"name": w.name, "connection": w.connection} for w in self.workers]
        if self.on_finish:
            data["on_finish"] = self.on_finish
        if self.sync_warn_mb is not None:
            data["sync_warn_mb"] = self.sync_warn_mb
        return yaml.dump(data, Dumper=_IndentedDumper, sort_keys=False).encode()


class _IndentedDumper(yaml.SafeDumper):
    """Indent list items under their key, as in the spec's example."""

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        super().increase_indent(flow, False)


def check_name(name: str, reserved: frozenset[str] = frozenset()) -> None:
    """Refuse names that could not be told apart from options, paths or subcommands."""
    if not NAME_RE.match(name):
        raise UsageError(
            f"invalid worker name '{name}': use letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    if name == LOCAL:
        raise UsageError(f"worker name '{LOCAL}' is the built-in worker (this machine); "
                         "pick another with -n <name>")
    if name in reserved:
        raise UsageError(f"worker name '{name}' is a p subcommand; pick another with -n <name>")


def load(path: Path | None = None) -> Config:
    path = path or paths.config_file()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return Config(path=path)
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from None
    return parse(text, path)


def parse(text: str, path: Path) -> Config:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError(f"config file {path}{where}: {problem}; fix or remove the file") from None
    if data is None:
        return Config(path=path)
    bad = _Locator(text, path)
    if not isinstance(data, dict):
        raise bad.error("expected a mapping with 'workers'; fix the file")
    unknown = [key for key in data if key not in KEYS]
    if unknown:
        raise bad.error(f"unknown key '{unknown[0]}' (p reads {', '.join(KEYS)}); fix the file",
                        str(unknown[0]))
    on_finish = data.get("on_finish")
    if on_finish is not None and not isinstance(on_finish, str):
        raise bad.error("'on_finish' must be a command line (a string)", "on_finish")
    warn = data.get("sync_warn_mb")
    if warn is not None and (isinstance(warn, bool) or not isinstance(warn, (int, float)) or warn < 0):
        raise bad.error("'sync_warn_mb' must be a number of megabytes (0: never ask)", "sync_warn_mb")
    workers = _parse_workers(data.get("workers") or [], bad)
    return Config(workers, _parse_default(data, bad), path, on_finish, warn)


@dataclass
class _Locator:
    """Builds the errors of a file that is valid YAML but not p's schema, naming the line at fault
    (looked up in the YAML nodes only when there is an error: a partly written file, a typo)."""

    text: str
    path: Path

    def error(self, problem: str, key: str | None = None, index: int | None = None) -> ConfigError:
        return ConfigError(f"config file {self.path}{self.line(key, index)}: {problem}")

    def line(self, key: str | None, index: int | None) -> str:
        """' line N' of the top-level ``key``'s value (its ``index``-th item, from 1); '' if unknown."""
        try:
            node = yaml.compose(self.text, Loader=yaml.SafeLoader)
            if key is not None:
                node = next(value for name, value in node.value if name.value == key)
            if index is not None:
                node = node.value[index - 1]
            return f" line {node.start_mark.line + 1}"
        except Exception:  # noqa: BLE001 - the line is a courtesy; the error stands without it
            return ""


def _parse_workers(items: object, bad: _Locator) -> list[WorkerEntry]:
    if not isinstance(items, list):
        raise bad.error("'workers' must be a list; fix the file", "workers")
    workers: list[WorkerEntry] = []
    for index, item in enumerate(items, 1):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str) or not isinstance(
            item.get("connection"), str
        ):
            raise bad.error(f"worker #{index} needs string 'name' and 'connection'; fix the file",
                            "workers", index)
        if any(w.name == item["name"] for w in workers):
            raise bad.error(f"worker '{item['name']}' is listed twice", "workers", index)
        workers.append(WorkerEntry(item["name"], item["connection"]))
    return workers


def _parse_default(data: dict, bad: _Locator) -> str | None:
    default = data.get("default_worker")
    if default is not None and not isinstance(default, str):
        raise bad.error("'default_worker' must be a worker name", "default_worker")
    return default


def save(config: Config) -> None:
    paths.atomic_write(config.path, config.to_yaml())


@contextmanager
def editing(path: Path | None = None) -> Iterator[Config]:
    """Read-modify-write config.yaml under an exclusive lock; saved only if the block succeeds."""
    path = path or paths.config_file()
    paths.private_dir(path.parent)
    with paths.open_lock(path.with_name(".config.lock")) as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        config = load(path)
        yield config
        save(config)
