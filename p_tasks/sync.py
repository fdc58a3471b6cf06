"""The rsync of the client's CWD into a job's fresh workdir on a worker.

What is sent is git's view of the directory, computed locally and handed to rsync as an explicit,
NUL-separated ``--files-from`` list (plus ``-r`` so that ``.git`` directories travel whole):

* ``git`` mode (CWD inside a git work tree): every path ``git ls-files -co --exclude-standard`` lists,
  i.e. tracked files (tracked-but-ignored ones too) plus untracked files that no ignore rule matches;
  git itself applies nested .gitignore, ``!``, anchoring, ``**``, .git/info/exclude and
  core.excludesFile. Then the ``.git`` directory, whole, if the CWD is the top of the work tree. When the
  CWD is a subdirectory of a repository, only that subdirectory is sent (paths relative to the CWD) and
  no ``.git`` at all: a ``.git`` inside it would describe a different tree. Nested repositories and
  submodules are listed by their own git, and their ``.git`` is sent too.
* ``gitignore`` mode (no git work tree, but .gitignore files in the tree): a walk applying every
  .gitignore with git's rules (``pathspec``); an ignored directory is not entered, as in git.
* ``plain`` mode: the same walk found no .gitignore; everything is sent.

Then ``.pignore`` files (gitignore syntax and semantics; one at the top, more in any directory) adjust
that list for the worker: a path a .pignore excludes is not sent even if git tracks it (a ``.git``
directory too: ``/.git/``), and a path .gitignore excluded is sent when a .pignore re-includes it with
``!`` (``!.env``, ``!data/``: a directory brings everything below it). The deepest .pignore with a
matching pattern decides, and in it the last matching pattern; once a directory is excluded nothing
below it comes back. Only the .pignore files of the directory sent (and below) count, not a parent's.
Git is asked for the ignored files (``git ls-files -oi``) only when some .pignore has a ``!``.
``gitignore=False`` (``p --no-gitignore``) drops git's ignore rules for one run: every file is listed
(.git included) and only .pignore excludes.

In every mode only files and symlinks are listed, never directories, so directories that hold nothing
sent (empty ones included) do not appear on the worker: the same tree a ``git clone`` would give.
Symlinks are sent as symlinks (``-a``) and never followed. File names never reach a command line.

Why not ``rsync --filter=':- .gitignore'`` (the spec's hint): it drops ``!`` re-includes and
tracked-but-ignored files, does not anchor middle-slash patterns and ignores info/exclude and
core.excludesFile. Why not an exclude list built from ``git ls-files --ignored``: rsync patterns
treat a backslash as literal unless the pattern holds a wildcard, and the list grows with the ignored
files while rsync checks every rule against every file. An explicit list is exact by construction and
linear in size.
"""

from __future__ import annotations

import logging
import os
import re
import shlex
import shutil
import stat
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import paths
from .exceptions import SyncError

if TYPE_CHECKING:
    from invoke import Context

    from .progress import Progress

log = logging.getLogger(__name__)

# (directory relative to the walk's root, its parsed .gitignore), shallowest first.
_Rules = list[tuple[bytes, Any]]

# Git variables that would point git at another repository than the one holding the directory.
_GIT_LOCATION_VARS = ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_COMMON_DIR")
# Characters rsync's -e splitter leaves alone outside quotes.
_RSH_SAFE = re.compile(r"[A-Za-z0-9_@%+=:,./-]+")


@dataclass(frozen=True)
class SyncPlan:
    """What to send from ``src``.

    ``files_from`` is rsync's ``--files-from`` input: NUL-terminated paths relative to ``src``, each
    written ``./name`` so that names starting with ``#`` or ``;`` are not read as comments. ``count``
    counts the entries (a ``.git`` directory is one entry); ``nbytes`` sums the sizes of everything
    sent (regular files, symlinks as their own size, ``.git`` directories whole); ``sizes`` holds
    ``(entry, bytes, files)`` per entry, in ``files_from`` order, for the size report.
    """

    src: Path
    mode: str  # 'git' | 'gitignore' | 'plain'
    files_from: bytes
    count: int
    nbytes: int = 0
    sizes: tuple[tuple[bytes, int, int], ...] = ()
    pignore: bool = False  # a .pignore took part
    gitignore: bool = True  # git's ignore rules applied (False: --no-gitignore)


# ---------------------------------------------------------------------------------------------------
# plan: what to send

PIGNORE = b".pignore"
_EXCLUDE, _INCLUDE = "exclude", "include"


def plan(src: Path, *, gitignore: bool = True) -> SyncPlan:
    """Compute the list of paths under ``src`` to send (see the module docstring for the rules)."""
    src = Path(os.path.abspath(src))
    root = os.fsencode(src)
    mode, entries = _collect(root, gitignore)
    rules = _Pignore.find(root, entries)
    if rules is not None:
        ignored = _ignored_entries(root, mode) if gitignore and rules.negates else []
        rules.read(p for p in ignored if os.path.basename(p) == PIGNORE)
        entries = rules.apply(entries, ignored)
    entries = sorted(set(entries) - set(_own_state(root, entries)))
    sizes = tuple((e, *_size(os.path.join(root, e))) for e in entries)
    files_from = b"".join(b"./" + e + b"\0" for e in entries)
    return SyncPlan(src=src, mode=mode, files_from=files_from, count=len(entries),
                    nbytes=sum(s[1] for s in sizes), sizes=sizes, pignore=rules is not None,
                    gitignore=gitignore)


def _own_state(root: bytes, entries: list[bytes]) -> list[bytes]:
    """Entries inside p's own directories (paths.own_dirs) when ``root`` holds one: $HOME, say."""
    inside = []
    for own in paths.own_dirs():
        rel = os.path.relpath(os.fsencode(own), root)
        if rel != b"." and not rel.startswith(b".."):
            inside.append(rel)
    return [e for e in entries for rel in inside if e == rel or e.startswith(rel + b"/")]


def _collect(root: bytes, gitignore: bool = True) -> tuple[str, list[bytes]]:
    """The mode and the entries (relative byte paths) of the directory ``root``."""
    prefix = _git_prefix(root)
    if prefix is None:
        entries: list[bytes] = []
        used = _walk(root, b"", [], entries, gitignore)
        return ("gitignore" if used else "plain"), entries
    return "git", _git_entries(root, top=prefix == b"", gitignore=gitignore)


def _ignored_entries(root: bytes, mode: str) -> list[bytes]:
    """What git's ignore rules keep out of ``root`` (the files a .pignore ``!`` can bring back)."""
    if mode != "git":
        skipped: list[bytes] = []
        _walk(root, b"", [], [], True, skipped)
        return skipped
    out = _git(root, "ls-files", "-z", "--others", "--ignored", "--exclude-standard")
    if out is None:
        raise SyncError(f"`git ls-files` failed in {os.fsdecode(root)}; run it there to see why")
    names = dict.fromkeys(n.rstrip(b"/") for n in out.split(b"\0") if n)
    return [e for name in names for e in _git_entry(root, name)]


def _git(root: bytes, *args: str) -> bytes | None:
    """Stdout of ``git -C root args``, or None when git is missing or fails."""
    env = {k: v for k, v in os.environ.items() if k not in _GIT_LOCATION_VARS}
    try:
        proc = subprocess.run(
            ["git", "-C", os.fsdecode(root), *args],
            capture_output=True, env=env, stdin=subprocess.DEVNULL, check=False,
        )
    except OSError:
        return None
    return proc.stdout if proc.returncode == 0 else None


def _git_prefix(root: bytes) -> bytes | None:
    """``root``'s path inside its git work tree (b"" at the top), or None outside any work tree."""
    out = _git(root, "rev-parse", "--is-inside-work-tree", "--show-prefix")
    if out is None or not out.startswith(b"true\n"):
        return None
    return out[len(b"true\n"):].rstrip(b"\n")


def _git_entries(root: bytes, top: bool, gitignore: bool = True) -> list[bytes]:
    """Git's view of ``root``: listed files that exist, nested repositories expanded, and .git."""
    standard = ["--exclude-standard"] if gitignore else []
    out = _git(root, "ls-files", "-z", "--cached", "--others", *standard)
    if out is None:
        raise SyncError(f"`git ls-files` failed in {os.fsdecode(root)}; run it there to see why")
    entries = [b".git"] if top and os.path.lexists(os.path.join(root, b".git")) else []
    for name in dict.fromkeys(n.rstrip(b"/") for n in out.split(b"\0") if n):
        entries.extend(_git_entry(root, name, gitignore))
    return entries


def _git_entry(root: bytes, name: bytes, gitignore: bool = True) -> list[bytes]:
    """One ``ls-files`` name as entries: gone (deleted, sparse) → none; a repository → its view."""
    path = os.path.join(root, name)
    try:
        st = os.lstat(path)
    except OSError:
        return []
    if not stat.S_ISDIR(st.st_mode):
        return [name]
    if not os.path.lexists(os.path.join(path, b".git")):
        return []  # a tracked file turned directory: ls-files lists what is inside separately
    return [os.path.join(name, e) for e in _collect(path, gitignore)[1]]


def _walk(
    root: bytes, rel: bytes, rules: _Rules, out: list[bytes], gitignore: bool = True,
    skipped: list[bytes] | None = None,
) -> bool:
    """Append to ``out`` the non-ignored files under ``root/rel`` (and to ``skipped``, if given, the
    ignored ones); True if anything was filtered (a .gitignore read here or below, or a nested
    repository listed by git)."""
    here = os.path.join(root, rel) if rel else root
    spec = _read_ignore_file(os.path.join(here, b".gitignore")) if gitignore else None
    if spec is not None:
        rules = [*rules, (rel, spec)]
    used = spec is not None
    for name, is_dir in _children(here, must=not rel):
        path = os.path.join(rel, name) if rel else name
        if name == b".git":
            out.append(path)  # a repository git could not read: send it whole
        elif _ignored(rules, path, is_dir):
            if skipped is not None and is_dir:
                _walk(root, path, [], skipped, False)  # everything below an ignored directory
            elif skipped is not None:
                skipped.append(path)
        elif not is_dir:
            out.append(path)
        elif os.path.lexists(os.path.join(root, path, b".git")):
            mode, entries = _collect(os.path.join(root, path), gitignore)  # its own rules, as in git
            out.extend(os.path.join(path, e) for e in entries)
            used = used or mode != "plain"
        else:
            used = _walk(root, path, rules, out, gitignore, skipped) or used
    return used


def _children(here: bytes, must: bool) -> list[tuple[bytes, bool]]:
    """(name, is a real directory) of each entry; an unreadable subdirectory is skipped, as git does."""
    try:
        with os.scandir(here) as it:
            return [(e.name, e.is_dir(follow_symlinks=False)) for e in it]
    except OSError:
        if must:
            raise
        log.debug("sync: cannot read %s, skipped", os.fsdecode(here))
        return []


def _read_ignore_file(path: bytes):
    """The patterns of a .gitignore (or .pignore) that is a regular file (git does not follow
    symlinks), or None."""
    try:
        if not stat.S_ISREG(os.lstat(path).st_mode):
            return None
        with open(path, "rb") as f:
            text = f.read().decode("utf-8", "surrogateescape")
    except OSError:
        return None
    import pathspec

    return pathspec.GitIgnoreSpec.from_lines(text.split("\n"))


def _ignored(rules: _Rules, path: bytes, is_dir: bool) -> bool:
    """Git's verdict for ``path``: the deepest .gitignore with a matching pattern decides, and in it
    the last matching pattern. Ancestors were checked on the way down, so only ``path`` is tested."""
    for base, spec in reversed(rules):
        relpath = os.fsdecode(path[len(base) + 1:] if base else path) + ("/" if is_dir else "")
        for pattern in reversed(spec.patterns):
            if pattern.include is not None and pattern.match_file(relpath):
                return bool(pattern.include)
    return False


class _Pignore:
    """The .pignore files of one tree, and their verdict on each path (see the module docstring)."""

    def __init__(self, root: bytes) -> None:
        self.root = root
        self.specs: dict[bytes, Any] = {}  # directory (relative, b"" for the top) → its patterns
        self.negates = False  # some pattern re-includes (`!`): the ignored files must be listed
        self._dirs: dict[bytes, str | None] = {}

    @classmethod
    def find(cls, root: bytes, entries: list[bytes]) -> _Pignore | None:
        """The rules of the .pignore files at the top and among ``entries``, None if there are none."""
        rules = cls(root)
        rules.read([PIGNORE, *(e for e in entries if os.path.basename(e) == PIGNORE)])
        return rules if rules.specs else None

    def read(self, names) -> None:
        for name in names:
            spec = _read_ignore_file(os.path.join(self.root, name))
            if spec is not None:
                self.specs[os.path.dirname(name)] = spec
                self.negates = self.negates or any(p.include is False for p in spec.patterns)

    def apply(self, entries: list[bytes], ignored: list[bytes]) -> list[bytes]:
        """``entries`` minus what a .pignore excludes, plus the ``ignored`` paths it re-includes."""
        kept = [e for e in entries if self.state(e, _is_dir(self.root, e)) != _EXCLUDE]
        return kept + [e for e in ignored if self.state(e, _is_dir(self.root, e)) == _INCLUDE]

    def state(self, path: bytes, is_dir: bool) -> str | None:
        """Exclude if ``path`` or a directory above it is excluded, else include if it or a directory
        above it is re-included, else None (git's verdict stands)."""
        parent = os.path.dirname(path)
        inherited = self._dir_state(parent) if parent else None
        if inherited == _EXCLUDE:
            return _EXCLUDE
        return self._verdict(path, is_dir) or inherited

    def _dir_state(self, path: bytes) -> str | None:
        if path not in self._dirs:
            self._dirs[path] = self.state(path, True)
        return self._dirs[path]

    def _verdict(self, path: bytes, is_dir: bool) -> str | None:
        """The deepest .pignore with a pattern matching ``path`` decides, by its last such pattern."""
        base = path
        while base:
            base = os.path.dirname(base)
            spec = self.specs.get(base)
            if spec is None:
                continue
            relpath = os.fsdecode(path[len(base) + 1:] if base else path) + ("/" if is_dir else "")
            for pattern in reversed(spec.patterns):
                if pattern.include is not None and pattern.match_file(relpath):
                    return _EXCLUDE if pattern.include else _INCLUDE
        return None


def _is_dir(root: bytes, rel: bytes) -> bool:
    """Entries are files and symlinks, except ``.git`` directories (sent whole)."""
    return os.path.basename(rel) == b".git" and os.path.isdir(os.path.join(root, rel))


def _size(path: bytes) -> tuple[int, int]:
    """(bytes, files) of one entry: a file or symlink by lstat, a directory (``.git``) walked."""
    try:
        st = os.lstat(path)
    except OSError:
        return 0, 0
    if not stat.S_ISDIR(st.st_mode):
        return st.st_size, 1
    total, files = 0, 0
    for here, dirs, names in os.walk(path):
        for name in names + [d for d in dirs if os.path.islink(os.path.join(here, d))]:
            try:
                total, files = total + os.lstat(os.path.join(here, name)).st_size, files + 1
            except OSError:
                continue
    return total, files


# ---------------------------------------------------------------------------------------------------
# rsync_argv: how to send it


def rsync_argv(
    plan: SyncPlan,
    dest: str,
    rsh: list[str] | None,
    *,
    files_from: str = "-",
    secluded: bool = True,
    copy_dest: str | None = None,
    progress: bool = False,
) -> list[str]:
    """The rsync command line sending ``plan`` to ``dest`` (a local path or rsync's ``host:path``).

    ``rsh`` is the ssh argv for ``-e``, quoted for rsync's own splitter. ``files_from`` is where rsync
    reads the list (``-`` = stdin). ``secluded`` adds ``-s`` (``--protect-args``, called
    ``--secluded-args`` since 3.2.6; off by default, rsync >= 3.2.4 backslash-escapes instead):
    remote paths travel inside the protocol, never through the remote shell. It needs rsync >= 3.0.0
    on the worker, and it stops the remote shell from expanding ``~``, so a leading ``~/`` in the
    remote path is dropped (ssh starts in the home directory, where a relative path begins).
    ``progress`` adds ``--info=progress2`` (rsync >= 3.1): one running total on stdout.
    """
    argv = ["rsync", "-a", "-r", "--no-owner", "--no-group", "--ignore-missing-args"]
    argv += ["--from0", f"--files-from={files_from}"]
    if progress:
        argv.append("--info=progress2")
    if copy_dest:
        # Delta into a fresh workdir: unchanged files are copied on the worker from an earlier
        # workdir, not sent. A copy, never a hard link: a job rewriting a file in place must not
        # change another job's workdir.
        argv.append(f"--copy-dest={copy_dest}")
    if secluded:
        argv.append("-s")
        dest = _strip_remote_tilde(dest)
    if rsh:
        argv.append("--rsh=" + " ".join(_rsh_quote(a) for a in rsh))
    return [*argv, "--", os.path.join(os.fspath(plan.src), ""), dest]


def pull_argv(src: str, dest: str, rsh: list[str] | None, is_dir: bool) -> list[str]:
    """rsync command line copying ``src`` (``host:path`` or a local path) to the local ``dest``.

    Symlinks arrive as symlinks (``-a``), never followed; ``--safe-links`` drops links that point
    out of the copied tree, so the destination cannot be used to reach outside it.
    """
    argv = ["rsync", "-a", "--no-owner", "--no-group", "--safe-links", "-s"]
    if rsh:
        argv.append("--rsh=" + " ".join(_rsh_quote(a) for a in rsh))
    slash = "/" if is_dir else ""
    return [*argv, "--", src.rstrip("/") + slash, dest.rstrip("/") + slash]


def _rsh_quote(arg: str) -> str:
    """Quote one word for rsync's -e splitter: spaces separate words, and inside '…' everything is
    literal except a doubled '' which stands for one quote (rsync main.c do_cmd)."""
    if _RSH_SAFE.fullmatch(arg):
        return arg
    return "'" + arg.replace("'", "''") + "'"


def _strip_remote_tilde(dest: str) -> str:
    """``host:~/x`` → ``host:x``; local paths (a ``/`` before the first ``:``) are left alone."""
    i = dest.find(":~/")
    if i > 0 and "/" not in dest[:i]:
        return dest[: i + 1] + dest[i + 3:]
    return dest


# ---------------------------------------------------------------------------------------------------
# run: send it


def run(
    plan: SyncPlan,
    dest: str,
    rsh: list[str] | None,
    ctx: Context,
    *,
    secluded: bool = True,
    copy_dest: str | None = None,
    progress: Progress | None = None,
) -> None:
    """Send ``plan`` to ``dest`` with rsync run through ``ctx``; raise SyncError on failure.

    The list goes through a temporary file: Invoke's ``in_stream`` is text, and the list is bytes.
    Exit 24 (a file vanished while being sent) counts as success. ``secluded``: see rsync_argv.
    ``progress``: rsync's stdout goes there (see progress.py); its line is cleared at the end.
    """
    if shutil.which("rsync") is None:
        raise SyncError("rsync is not installed on this machine; install it (e.g. apt install rsync)")
    with tempfile.NamedTemporaryFile(prefix="p-sync-", suffix=".list") as f:
        f.write(plan.files_from)
        f.flush()
        argv = rsync_argv(plan, dest, rsh, files_from=f.name, secluded=secluded, copy_dest=copy_dest,
                          progress=progress is not None)
        log.debug("sync: %s", shlex.join(argv))
        shown = {"hide": "err", "out_stream": progress} if progress else {"hide": True}
        try:
            result = ctx.run(shlex.join(argv), warn=True, in_stream=False, **shown)
        finally:
            if progress:
                progress.clear()
    if result.exited not in (0, VANISHED):
        raise SyncError(error_message(result.exited, result.stderr), code=result.exited,
                        transient=transient(result.exited, result.stderr))


_TRANSIENT = re.compile(r"Connection (reset|closed) by|kex_exchange_identification|Session open refused")


def transient(code: int, stderr: str) -> bool:
    """An SSH connection dropped before any work (e.g. sshd's MaxStartups under load): worth a retry."""
    return code in (12, 255) and bool(_TRANSIENT.search(stderr))


def error_message(code: int, stderr: str) -> str:
    """One line for a failed rsync: its most telling stderr line and what to do about it."""
    if code == 127 or _NO_REMOTE_RSYNC.search(stderr):
        return "rsync is not installed on the worker; install it there (e.g. apt install rsync)"
    noise = _SHELL_NOISE.search(stderr)
    if noise:
        printed = (noise.group(1) or "").strip()
        return (
            f"the worker's shell prints output at login ({printed!r}), which breaks rsync's "
            "protocol; make ~/.bashrc (or your shell's start-up file) print only on interactive logins"
        )
    line = _last_meaningful(stderr)
    return f"sync failed (rsync exit {code}): {line or 'no message'}; {_hint(code, line)}"


def _hint(code: int, line: str) -> str:
    """What to do next. ssh dying shows as exit 255 or 12 (a race in rsync), so its line decides."""
    if code == 255 or line.startswith(("ssh:", "ssh_", "kex_", "Host key", "Permission denied (")):
        return "check that `ssh <worker>` works"
    return _HINTS.get(code, "run the rsync by hand with -v to see more")


# How sh/dash, bash, zsh and fish say it; rsync exits 127 for it, or 12 when it loses a race.
_NO_REMOTE_RSYNC = re.compile(
    r"\brsync: (command )?not found|command not found: rsync|Unknown command:? '?rsync\b"
)
# rsync's own diagnosis when a login script prints: "protocol version mismatch -- is your shell clean?"
# and, on newer rsync, "server sent 'TEXT' rather than ...". The first group is what the shell printed.
_SHELL_NOISE = re.compile(
    r"(?:invalid message .*?\(|server sent \"?'?)(.*?)['\")]|(is your shell clean)", re.S
)
PARTIAL = 23  # rsync: some files/attrs were not transferred
VANISHED = 24  # rsync: some source files vanished while being sent

_HINTS = {
    11: "check the free space and permissions of ~/.p/workdirs on the worker",
    12: "check that rsync works on the worker (`ssh <worker> rsync --version`)",
    PARTIAL: "some files could not be read; check their permissions",
    255: "check that `ssh <worker>` works",
}


def _last_meaningful(stderr: str) -> str:
    """The last stderr line that is not rsync's generic epilogue."""
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    generic = ("rsync error:", "rsync: connection unexpectedly closed", "rsync: [sender] write error")
    specific = [ln for ln in lines if not ln.startswith(generic)]
    return (specific or lines or [""])[-1]
