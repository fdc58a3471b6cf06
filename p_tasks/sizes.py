"""How big a sync is: the largest paths of a plan, the report before a big sync, and the question.

The report names at most five paths, each the most telling place to exclude: a directory is shown
as itself, unless most of its bytes (80 %) sit in one child, which is then shown instead (so a single
huge file deep in ``data/raw/`` appears by name). Each line can be pasted into ``.pignore``.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field

from .exceptions import PError
from .progress import human

TOP = 5
DRILL_SHARE = 0.8
DEFAULT_WARN_MB = 100


@dataclass
class Node:
    """A path in the plan's tree: bytes and files at and below it."""

    nbytes: int = 0
    files: int = 0
    is_dir: bool = False
    children: dict[bytes, Node] = field(default_factory=dict)


def tree(sizes) -> Node:
    """The plan's ``(entry, bytes, files)`` rows as a tree; a ``.git`` entry stays one leaf."""
    root = Node(is_dir=True)
    for entry, nbytes, files in sizes:
        node = root
        node.nbytes, node.files = node.nbytes + nbytes, node.files + files
        parts = entry.split(b"/")
        for depth, part in enumerate(parts):
            node = node.children.setdefault(part, Node())
            node.nbytes, node.files = node.nbytes + nbytes, node.files + files
            node.is_dir = node.is_dir or depth < len(parts) - 1 or files != 1 or part == b".git"
    return root


def largest(sizes, top: int = TOP) -> list[tuple[bytes, Node]]:
    """The ``top`` largest paths holding at least 1 % of the bytes, each drilled down while one child
    holds most of its bytes."""
    root = tree(sizes)
    items = sorted(root.children.items(), key=lambda item: item[1].nbytes, reverse=True)
    big = [item for item in items[:top] if item[1].nbytes and item[1].nbytes * 100 >= root.nbytes]
    return [_drill(name, node) for name, node in big]


def _drill(path: bytes, node: Node) -> tuple[bytes, Node]:
    while node.children:
        name, child = max(node.children.items(), key=lambda item: item[1].nbytes)
        if child.nbytes < DRILL_SHARE * node.nbytes:
            break
        path, node = path + b"/" + name, child
    return path, node


def pignore_line(path: bytes, is_dir: bool) -> str:
    """The .pignore line excluding exactly ``path`` (anchored at the top; specials escaped)."""
    text = os.fsdecode(path)
    for char in "\\*?[":
        text = text.replace(char, "\\" + char)
    if text.endswith(" "):
        text = text[:-1] + "\\ "
    return "/" + text + ("/" if is_dir else "")


def listing(plan) -> list[str]:
    """One line per largest path: size, the .pignore-ready path, and the file count of directories."""
    lines = []
    for path, node in largest(plan.sizes):
        files = f"  ({node.files:,} files)" if node.is_dir and node.files > 1 else ""
        lines.append(f"  {human(node.nbytes):>9}  {pignore_line(path, node.is_dir)}{files}")
    return lines


def summary(plan) -> str:
    files = sum(row[2] for row in plan.sizes)
    return f"{files:,} file{'s' if files != 1 else ''}, {human(plan.nbytes)}"


def dry_run_text(plan, worker: str) -> str:
    """What `p --dry-run -- …` prints."""
    rules = "git's view" if plan.mode == "git" and plan.gitignore else (
        "every file (--no-gitignore)" if not plan.gitignore else "every file not in a .gitignore")
    rules += ", .pignore applied" if plan.pignore else ""
    lines = [f"would send {summary(plan)} from {plan.src} to worker '{worker}' ({rules}); nothing started"]
    top = listing(plan)
    if top:
        lines += ["largest:", *top]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------
# the question before a big sync


class SyncTooBig(PError):
    """A big sync was not confirmed (refused without a terminal, or answered no)."""


def guard(plan, worker: str, warn_mb: float | None, yes: bool) -> None:
    """Above ``warn_mb`` (default 100; 0 = never): report the largest paths on stderr, then ask on a
    terminal unless ``yes``; without a terminal and without ``yes``, refuse (nothing was sent)."""
    limit = DEFAULT_WARN_MB if warn_mb is None else warn_mb
    if not limit or plan.nbytes <= limit * 1_000_000:
        return
    if not yes and not sys.stdin.isatty():
        biggest = "".join(f" (largest: {pignore_line(path, node.is_dir)}, {human(node.nbytes)})"
                          for path, node in largest(plan.sizes, 1))
        raise SyncTooBig(
            f"this sync would send {human(plan.nbytes)}{biggest}, more than sync_warn_mb "
            f"({human(limit * 1_000_000)}); pass --yes to send it, or exclude paths in .pignore "
            "(`p --dry-run -- <command>` lists the largest); no job started"
        )
    print(report(plan, limit), file=sys.stderr)
    if not yes and not ask(f"Send {human(plan.nbytes)} to worker '{worker}'? [y/N] "):
        raise SyncTooBig("nothing sent, no job started")


def report(plan, limit_mb: float) -> str:
    lines = [f"p: this sync sends {summary(plan)} (over sync_warn_mb, {human(limit_mb * 1_000_000)}); "
             "the largest:", *listing(plan),
             "p: to leave one out, put its path as shown above in .pignore (gitignore syntax)"]
    return "\n".join(lines)


def ask(question: str) -> bool:
    """Ask on the terminal; only y/yes goes on (EOF and anything else: no)."""
    sys.stderr.write(question)
    sys.stderr.flush()
    answer = sys.stdin.readline()
    if not answer.endswith("\n"):
        sys.stderr.write("\n")
    return answer.strip().lower() in ("y", "yes")
