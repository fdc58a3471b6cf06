"""p_tasks.sync against real git and real rsync, into local destinations (no sshd needed).

The remote-shell path is exercised with a fake ``ssh`` script that runs the remote command locally,
the way sshd would: ``sh -c "<words joined by spaces>"`` in a fake home directory.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import invoke
import pytest

from p_tasks import sync

pytestmark = pytest.mark.skipif(
    shutil.which("rsync") is None or shutil.which("git") is None, reason="needs rsync and git"
)

NOTES_IGNORE = "*.log\n!keep.log\n/build\nsub/**/tmp\ndoc/frotz\n**/cache\nlogs/\n!logs/important.txt\n"
NOTES_FILES = [
    "main.py", "a.log", "keep.log", "deep/keep.log", "deep/b.log", "build/o", "sub/build/o",
    "sub/tmp/f", "sub/a/tmp/f", "sub/a/b/tmp/f", "x/sub/a/tmp/f", "doc/frotz/f", "x/doc/frotz/f",
    "cache/f", "a/cache/f", "a/cachex/f", "logs/important.txt", "logs/other", "x/logs/y",
    "sub/local/f", "sub/x/local/f", "sub/special.log", "sub/other.log", "sub/deeper/special.log",
    "secret.txt", "excluded-globally.txt", "forced.log", "build/tracked", "empty-after-ignore/z.log",
]
AWKWARD = [
    "a b.txt", "new\nline", "-rf", "--rsh=touch PWNED", "*star", "[x]", "q?", "back\\slash",
    "é漢字.txt", "#hash", ";semi", " lead", "trail ", "tab\there", "it's \"q\"",
]


# ---------------------------------------------------------------------------------------------------
# helpers


@pytest.fixture(autouse=True)
def isolated_git(tmp_path_factory, monkeypatch):
    """git never reads the real ~/.gitconfig or /etc/gitconfig, and commits without asking."""
    home = tmp_path_factory.mktemp("home")
    gitconfig = home / "gitconfig"
    gitconfig.write_text("")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(gitconfig))
    for var in ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "XDG_CONFIG_HOME"):
        monkeypatch.delenv(var, raising=False)
    for who in ("AUTHOR", "COMMITTER"):
        monkeypatch.setenv(f"GIT_{who}_NAME", "t")
        monkeypatch.setenv(f"GIT_{who}_EMAIL", "t@example.com")


def git(cwd: Path, *args: str) -> bytes:
    return subprocess.run(["git", "-C", str(cwd), *args], check=True, capture_output=True).stdout


def git_view(cwd: Path) -> set[bytes]:
    """What git says should be sent from cwd (existing paths only)."""
    out = git(cwd, "ls-files", "-z", "-co", "--exclude-standard")
    names = {n for n in out.split(b"\0") if n}
    return {n for n in names if os.path.lexists(os.path.join(os.fsencode(cwd), n))}


def tree(root: Path, skip_git: bool = True) -> set[bytes]:
    """Every non-directory (symlinks included) under root, as relative byte paths."""
    found: set[bytes] = set()
    broot = os.fsencode(root)
    for here, dirs, files in os.walk(broot):
        rel = os.path.relpath(here, broot)
        if skip_git:
            dirs[:] = [d for d in dirs if d != b".git"]
        for name in files + [d for d in dirs if os.path.islink(os.path.join(here, d))]:
            found.add(os.path.normpath(os.path.join(rel, name)))
    return found


def all_dirs(root: Path) -> set[bytes]:
    broot = os.fsencode(root)
    return {
        os.path.normpath(os.path.relpath(os.path.join(h, d), broot))
        for h, dirs, _ in os.walk(broot)
        for d in dirs
        if not os.path.islink(os.path.join(h, d))
    }


def write(root: Path, rel: str, text: str | None = None) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(rel if text is None else text)


def notes_tree(root: Path) -> None:
    """The tree of shared/notes/fabric-invoke.md, "gitignore semantics vs rsync"."""
    for rel in NOTES_FILES:
        write(root, rel)
    write(root, ".gitignore", NOTES_IGNORE)
    write(root, "sub/.gitignore", "/local\n!special.log\n")


def notes_repo(root: Path, tmp_path: Path) -> None:
    notes_tree(root)
    git(root, "init", "-q")
    (root / ".git/info/exclude").write_text("secret.txt\n")
    excludes = tmp_path / "global-excludes"
    excludes.write_text("excluded-globally.txt\n")
    git(root, "config", "core.excludesFile", str(excludes))
    git(root, "add", ".")
    git(root, "add", "-f", "forced.log", "build/tracked")
    git(root, "commit", "-qm", "init")


def do_sync(src: Path, dest: Path) -> sync.SyncPlan:
    the_plan = sync.plan(src)
    sync.run(the_plan, str(dest), None, invoke.Context())
    return the_plan


# ---------------------------------------------------------------------------------------------------
# git mode


def test_git_repo_sends_exactly_git_ls_files_and_the_git_dir(tmp_path):
    src, dest = tmp_path / "src", tmp_path / "dest"
    notes_repo(src, tmp_path)
    the_plan = do_sync(src, dest)
    assert the_plan.mode == "git"
    assert tree(dest) == git_view(src)
    assert git(dest, "rev-parse", "HEAD") == git(src, "rev-parse", "HEAD")
    assert git(dest, "status", "--porcelain", "-z") == git(src, "status", "--porcelain", "-z")


def test_git_repo_result_matches_the_rules_one_by_one(tmp_path):
    """The notes' list of what rsync's own filter gets wrong, checked by name."""
    src, dest = tmp_path / "src", tmp_path / "dest"
    notes_repo(src, tmp_path)
    do_sync(src, dest)
    got = {os.fsdecode(p) for p in tree(dest)}
    for sent in ["keep.log", "deep/keep.log", "sub/special.log", "sub/deeper/special.log",
                 "forced.log", "build/tracked", "sub/build/o", "x/doc/frotz/f", "x/sub/a/tmp/f",
                 "sub/x/local/f", "a/cachex/f", "main.py", ".gitignore", "sub/.gitignore"]:
        assert sent in got, sent
    for dropped in ["a.log", "deep/b.log", "build/o", "sub/tmp/f", "sub/a/tmp/f", "doc/frotz/f",
                    "cache/f", "a/cache/f", "logs/important.txt", "x/logs/y", "sub/local/f",
                    "sub/other.log", "secret.txt", "excluded-globally.txt"]:
        assert dropped not in got, dropped


def test_tracked_file_deleted_from_the_work_tree_is_skipped(tmp_path):
    src, dest = tmp_path / "src", tmp_path / "dest"
    notes_repo(src, tmp_path)
    (src / "main.py").unlink()
    the_plan = do_sync(src, dest)
    assert b"./main.py\0" not in the_plan.files_from
    assert tree(dest) == git_view(src)


def test_subdirectory_of_a_repo_sends_that_subdirectory_without_git(tmp_path):
    src, dest = tmp_path / "src", tmp_path / "dest"
    notes_repo(src, tmp_path)
    the_plan = do_sync(src / "sub", dest)
    assert the_plan.mode == "git"
    assert tree(dest) == git_view(src / "sub")
    assert {b"special.log", b"build/o", b"x/local/f", b".gitignore"} <= tree(dest)
    assert b"tmp/f" not in tree(dest)  # the parent's sub/**/tmp still applies
    assert not (dest / ".git").exists()


def test_nested_repository_and_submodule_are_sent_as_their_own_git_sees_them(tmp_path):
    src, dest, lib = tmp_path / "src", tmp_path / "dest", tmp_path / "lib"
    notes_repo(src, tmp_path)
    write(lib, "lib.c")
    write(lib, ".gitignore", "*.o\n")
    git(lib, "init", "-q")
    git(lib, "add", ".")
    git(lib, "commit", "-qm", "lib")
    write(lib, "lib.o")
    git(src, "-c", "protocol.file.allow=always", "submodule", "add", "-q", str(lib), "ext/lib")
    git(src, "commit", "-qm", "submodule")
    write(src / "ext/lib", "built.o")
    write(src, "vendored/x.c")
    write(src, "vendored/.gitignore", "*.tmp\n")
    write(src, "vendored/junk.tmp")
    git(src / "vendored", "init", "-q")
    do_sync(src, dest)
    got = tree(dest)
    assert {b"ext/lib/lib.c", b"ext/lib/.git", b"vendored/x.c", b"vendored/.gitignore"} <= got
    assert not {b"ext/lib/built.o", b"vendored/junk.tmp"} & got
    assert (dest / "vendored/.git/HEAD").is_file()
    assert git(dest / "ext/lib", "rev-parse", "HEAD") == git(lib, "rev-parse", "HEAD")


# ---------------------------------------------------------------------------------------------------
# outside git


def test_plain_directory_honours_gitignore_files_like_git(tmp_path):
    src, dest, copy = tmp_path / "src", tmp_path / "dest", tmp_path / "copy"
    notes_tree(src)
    shutil.copytree(src, copy, symlinks=True)
    git(copy, "init", "-q")
    the_plan = do_sync(src, dest)
    assert the_plan.mode == "gitignore"
    assert tree(dest) == git_view(copy)
    assert the_plan.count == len(git_view(copy))


def test_plain_directory_without_gitignore_sends_every_file(tmp_path):
    src, dest = tmp_path / "src", tmp_path / "dest"
    for rel in NOTES_FILES:
        write(src, rel)
    the_plan = do_sync(src, dest)
    assert the_plan.mode == "plain"
    assert tree(dest) == tree(src)


def test_repository_inside_a_plain_directory_is_listed_by_its_own_git(tmp_path):
    src, dest = tmp_path / "src", tmp_path / "dest"
    write(src, ".gitignore", "*.tmp\n")
    write(src, "top.tmp")
    write(src, "proj/.gitignore", "build/\n")
    write(src, "proj/a.tmp")  # the outer rules do not reach into another repository
    write(src, "proj/build/out")
    write(src, "proj/secret")
    git(src / "proj", "init", "-q")
    (src / "proj/.git/info/exclude").write_text("secret\n")
    the_plan = do_sync(src, dest)
    assert the_plan.mode == "gitignore"
    assert tree(dest) == {b".gitignore", b"proj/.gitignore", b"proj/a.tmp"}
    assert (dest / "proj/.git/HEAD").is_file()


def test_without_a_working_git_a_repository_is_walked_and_its_git_dir_sent(tmp_path, monkeypatch):
    src, dest = tmp_path / "src", tmp_path / "dest"
    notes_repo(src, tmp_path)
    expected = git_view(src) | {b"secret.txt", b"excluded-globally.txt"}  # git-only rules are lost
    expected -= {b"forced.log", b"build/tracked"}  # and the index does not count any more
    monkeypatch.setattr(sync, "_git", lambda *args: None)
    the_plan = do_sync(src, dest)
    assert the_plan.mode == "gitignore"
    assert tree(dest) == expected
    assert git(dest, "rev-parse", "HEAD") == git(src, "rev-parse", "HEAD")


def test_gitignore_that_is_a_symlink_is_not_read(tmp_path):
    """As git >= 2.32: an in-tree .gitignore symlink is ignored."""
    src, dest = tmp_path / "src", tmp_path / "dest"
    write(src, "a.log")
    write(tmp_path, "rules", "*.log\n")
    (src / ".gitignore").symlink_to(tmp_path / "rules")
    do_sync(src, dest)
    assert b"a.log" in tree(dest)


# ---------------------------------------------------------------------------------------------------
# names, symlinks, directories


def make_awkward(src: Path) -> set[bytes]:
    for name in AWKWARD:
        write(src, name)
        write(src, "dir with space/" + name)
    raw = os.fsencode(src) + b"/latin1-\xe9.bin"  # not valid UTF-8
    with open(raw, "wb") as f:
        f.write(b"x")
    write(src, ".gitignore", "ignored.tmp\n")
    write(src, "ignored.tmp")
    expected = {os.fsencode(n) for n in AWKWARD}
    expected |= {b"dir with space/" + os.fsencode(n) for n in AWKWARD}
    return expected | {b"latin1-\xe9.bin", b".gitignore"}


@pytest.mark.parametrize("use_git", [True, False], ids=["git", "gitignore"])
def test_awkward_file_names_arrive_and_never_become_options(tmp_path, monkeypatch, use_git):
    src, dest = tmp_path / "src", tmp_path / "dest"
    expected = make_awkward(src)
    if use_git:
        git(src, "init", "-q")
        git(src, "add", ".")
        git(src, "commit", "-qm", "names")
    monkeypatch.chdir(src)  # where a `touch PWNED` would land
    do_sync(src, dest)
    assert tree(dest) == expected
    assert (dest / "--rsh=touch PWNED").read_text() == "--rsh=touch PWNED"
    assert not list(tmp_path.rglob("PWNED"))


@pytest.mark.parametrize("use_git", [True, False], ids=["git", "gitignore"])
def test_symlinks_are_sent_as_symlinks_and_never_followed(tmp_path, use_git):
    src, dest, outside = tmp_path / "src", tmp_path / "dest", tmp_path / "outside"
    write(outside, "secret")
    write(src, "real/file")
    write(src, ".gitignore", "")
    (src / "to-file").symlink_to("real/file")
    (src / "to-dir").symlink_to("real")
    (src / "to-outside").symlink_to(outside)
    (src / "to-outside-abs").symlink_to(outside / "secret")
    (src / "dangling").symlink_to("nowhere")
    if use_git:
        git(src, "init", "-q")
    do_sync(src, dest)
    for link in ["to-file", "to-dir", "to-outside", "to-outside-abs", "dangling"]:
        assert (dest / link).is_symlink(), link
        assert os.readlink(dest / link) == os.readlink(src / link)
    assert tree(dest) == {b"real/file", b".gitignore", b"to-file", b"to-dir", b"to-outside",
                          b"to-outside-abs", b"dangling"}
    assert not list(dest.rglob("secret"))


@pytest.mark.parametrize("use_git", [True, False], ids=["git", "gitignore"])
def test_empty_directories_are_not_sent(tmp_path, use_git):
    """Documented choice: only files and symlinks travel, as in a git clone."""
    src, dest = tmp_path / "src", tmp_path / "dest"
    write(src, "kept/f")
    write(src, "only-ignored/x.log")
    write(src, ".gitignore", "*.log\n")
    (src / "empty/deeper").mkdir(parents=True)
    if use_git:
        git(src, "init", "-q")
    do_sync(src, dest)
    assert all_dirs(dest) - {b".git"} - {d for d in all_dirs(dest) if d.startswith(b".git/")} == {
        b"kept"
    }


def test_source_named_like_an_option_with_relative_path(tmp_path, monkeypatch):
    src, dest = tmp_path / "-rf", tmp_path / "-dest"
    write(src, "f")
    monkeypatch.chdir(tmp_path)
    the_plan = sync.plan(Path("-rf"))
    sync.run(the_plan, "-dest", None, invoke.Context())
    assert tree(dest) == {b"f"}


def test_source_and_destination_with_spaces_and_unicode(tmp_path):
    src = tmp_path / "my project é漢字" / "work dir"
    dest = tmp_path / "dest with space" / "job 1"
    notes_repo(src, tmp_path)
    dest.parent.mkdir()
    do_sync(src, dest)
    assert tree(dest) == git_view(src)
    assert git(dest, "rev-parse", "HEAD") == git(src, "rev-parse", "HEAD")


# ---------------------------------------------------------------------------------------------------
# the plan and the argv


def test_plan_lists_nul_terminated_dot_slash_entries(tmp_path):
    write(tmp_path, "#hash", "12345")
    write(tmp_path, "b")
    the_plan = sync.plan(tmp_path)
    assert the_plan.files_from == b"./#hash\0./b\0"
    assert (the_plan.count, the_plan.nbytes, the_plan.src) == (2, 6, tmp_path)


def test_rsync_argv_puts_every_path_after_double_dash(tmp_path):
    the_plan = sync.SyncPlan(src=Path("/w/-rf"), mode="plain", files_from=b"", count=0)
    argv = sync.rsync_argv(the_plan, "-x", None, files_from="/tmp/l st")
    assert argv[-3:] == ["--", "/w/-rf/", "-x"]
    assert "--files-from=/tmp/l st" in argv and "--from0" in argv and "-s" in argv
    assert not any(a.startswith(("-e", "--rsh")) for a in argv)


def test_rsync_argv_quotes_rsh_for_rsyncs_own_splitter():
    the_plan = sync.SyncPlan(src=Path("/w"), mode="plain", files_from=b"", count=0)
    rsh = ["ssh", "-o", "ControlPath=/run/p/a b/%C", "-F", "/h/it's \"x\"", "-o", "User=me"]
    argv = sync.rsync_argv(the_plan, "h:x", rsh)
    assert (
        "--rsh=ssh -o 'ControlPath=/run/p/a b/%C' -F '/h/it''s \"x\"' -o User=me" in argv
    )


@pytest.mark.parametrize(
    ("dest", "secluded", "expected"),
    [
        ("host:~/.p/workdirs/u/", True, "host:.p/workdirs/u/"),
        ("me@[::1]:~/.p/w/", True, "me@[::1]:.p/w/"),
        ("host:~/.p/workdirs/u/", False, "host:~/.p/workdirs/u/"),
        ("/local/a:~/b", True, "/local/a:~/b"),
        ("host:/abs/", True, "host:/abs/"),
    ],
)
def test_rsync_argv_remote_tilde(dest, secluded, expected):
    the_plan = sync.SyncPlan(src=Path("/w"), mode="plain", files_from=b"", count=0)
    argv = sync.rsync_argv(the_plan, dest, None, secluded=secluded)
    assert argv[-1] == expected
    assert ("-s" in argv) is secluded


# ---------------------------------------------------------------------------------------------------
# through a (fake) remote shell


FAKE_SSH = r"""#!/bin/sh
# Records its argv (NUL-separated), skips ssh options and the host, then does what sshd does:
# runs the remaining words, joined by spaces, with the login shell, in the home directory.
for a in "$@"; do printf '%s\0' "$a"; done > "$FAKE_SSH_LOG"
while [ $# -gt 0 ]; do
  case "$1" in
    -o|-F|-p|-l|-i|-S) shift 2 ;;
    -*) shift ;;
    *) break ;;
  esac
done
shift
if [ -n "${FAKE_SSH_FAIL:-}" ]; then
  echo "ssh: connect to host fakehost port 22: Connection refused" >&2; exit 255
fi
HOME=$FAKE_HOME; export HOME
cd "$HOME" || exit 1
[ -n "${FAKE_NO_RSYNC:-}" ] && PATH=/nonexistent
exec /bin/sh -c "$*"
"""


@pytest.fixture
def fake_ssh(tmp_path, monkeypatch) -> list[str]:
    bindir = tmp_path / "bin dir"
    bindir.mkdir()
    script = bindir / "fake ssh"
    script.write_text(FAKE_SSH)
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    home = tmp_path / "worker home"
    (home / ".p/workdirs").mkdir(parents=True)
    monkeypatch.setenv("FAKE_HOME", str(home))
    monkeypatch.setenv("FAKE_SSH_LOG", str(tmp_path / "ssh argv"))
    return [str(script), "-o", "ControlPath=/run/p/a b/it's", "-o", "BatchMode=yes"]


@pytest.mark.parametrize("secluded", [True, False], ids=["secluded", "escaped"])
def test_sync_through_a_remote_shell_with_quoted_rsh(tmp_path, fake_ssh, secluded):
    src = tmp_path / "src"
    notes_repo(src, tmp_path)
    uuid = "0b9f0c3e-1a2b-4c3d-8e9f-0123456789ab"
    the_plan = sync.plan(src)
    sync.run(the_plan, f"fakehost:~/.p/workdirs/{uuid}/", fake_ssh, invoke.Context(),
             secluded=secluded)
    dest = tmp_path / "worker home/.p/workdirs" / uuid
    assert tree(dest) == git_view(src)
    logged = (tmp_path / "ssh argv").read_bytes().split(b"\0")
    assert logged[:5] == [b"-o", b"ControlPath=/run/p/a b/it's", b"-o", b"BatchMode=yes",
                          b"fakehost"]


def test_missing_rsync_on_the_worker_is_named(tmp_path, fake_ssh, monkeypatch):
    write(tmp_path / "src", "f")
    monkeypatch.setenv("FAKE_NO_RSYNC", "1")
    with pytest.raises(sync.SyncError, match="^rsync is not installed on the worker"):
        sync.run(sync.plan(tmp_path / "src"), "fakehost:.p/workdirs/x/", fake_ssh, invoke.Context())


def test_ssh_failure_reports_sshs_own_line(tmp_path, fake_ssh, monkeypatch):
    write(tmp_path / "src", "f")
    monkeypatch.setenv("FAKE_SSH_FAIL", "1")
    with pytest.raises(sync.SyncError) as info:
        sync.run(sync.plan(tmp_path / "src"), "fakehost:.p/workdirs/x/", fake_ssh, invoke.Context())
    # rsync reports exit 255 or 12 depending on a race; the message is the same either way
    message = str(info.value)
    assert message.startswith("sync failed (rsync exit ")
    assert message.endswith(
        "): ssh: connect to host fakehost port 22: Connection refused; "
        "check that `ssh <worker>` works"
    )


def test_missing_destination_parent_is_one_line(tmp_path):
    write(tmp_path / "src", "f")
    with pytest.raises(sync.SyncError) as info:
        do_sync(tmp_path / "src", tmp_path / "no/such/parent")
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("sync failed (rsync exit 11): rsync: ")
    assert "mkdir" in message
    assert message.endswith("check the free space and permissions of ~/.p/workdirs on the worker")


@pytest.mark.parametrize(
    "stderr",
    [
        "sh: 1: rsync: not found\n",
        "bash: line 1: rsync: command not found\n",
        "zsh:1: command not found: rsync\n",
        "fish: Unknown command: rsync\n",
    ],
)
def test_missing_rsync_on_the_worker_is_recognised_from_any_shell(stderr):
    tail = "rsync: connection unexpectedly closed (0 bytes received so far) [sender]\n"
    assert sync.error_message(12, stderr + tail).startswith("rsync is not installed on the worker")


def test_error_message_picks_the_specific_line():
    stderr = (
        'rsync: [sender] link_stat "/x" failed: Permission denied (13)\n'
        "rsync error: some files/attrs were not transferred (see previous errors) (code 23)\n"
    )
    assert sync.error_message(23, stderr) == (
        'sync failed (rsync exit 23): rsync: [sender] link_stat "/x" failed: Permission denied '
        "(13); some files could not be read; check their permissions"
    )
    assert sync.error_message(5, "") == (
        "sync failed (rsync exit 5): no message; run the rsync by hand with -v to see more"
    )
    assert sync.error_message(12, "Permission denied (publickey).\nrsync: connection "
                              "unexpectedly closed (0 bytes received so far) [sender]\n").endswith(
        ": Permission denied (publickey).; check that `ssh <worker>` works"
    )


# ---------------------------------------------------------------------------------------------------
# .pignore, --no-gitignore, sizes


def sent(src: Path, **kwargs) -> set[bytes]:
    """What a plan of src would send, as relative byte paths (entries as listed, .git one entry)."""
    return {e[2:] for e in sync.plan(src, **kwargs).files_from.split(b"\0") if e}


def project(root: Path, files: dict[str, str], commit: bool = True) -> Path:
    for rel, text in files.items():
        write(root, rel, text)
    git(root, "init", "-q")
    if commit:
        git(root, "add", ".")
        git(root, "commit", "-qm", "init")
    return root


def test_pignore_excludes_what_git_tracks(tmp_path):
    src = project(tmp_path / "src", {"main.py": "", "data/big.bin": "x" * 100, "docs/a.md": "",
                                     "docs/img/b.png": "", ".pignore": "data/\n/docs/img/\n"})
    assert sent(src) == {b".git", b".pignore", b"main.py", b"docs/a.md"}


def test_pignore_bang_re_includes_what_gitignore_excludes(tmp_path):
    src = project(tmp_path / "src", {
        ".gitignore": ".env\ndata/\nnode_modules/\n*.log\n", ".env": "SECRET=1", "data/raw/a.csv": "",
        "data/b.csv": "", "node_modules/x/y.js": "", "run.log": "", "main.py": "",
        ".pignore": "!.env\n!data/\n",
    })
    assert sent(src) == {b".git", b".gitignore", b".pignore", b"main.py", b".env", b"data/raw/a.csv",
                         b"data/b.csv"}


def test_pignore_can_bring_back_one_file_of_an_ignored_directory(tmp_path):
    src = project(tmp_path / "src", {".gitignore": "data/\n", "data/keep.csv": "", "data/drop.csv": "",
                                     ".pignore": "!data/keep.csv\n"})
    assert sent(src) == {b".git", b".gitignore", b".pignore", b"data/keep.csv"}


def test_pignore_excluded_directory_cannot_be_re_entered_below(tmp_path):
    """As in git: 'It is not possible to re-include a file if a parent directory of that file is
    excluded' — but `dir/*` then `!dir/keep` works."""
    src = project(tmp_path / "src", {"build/keep": "", "build/o": "", "out/keep": "", "out/o": "",
                                     ".pignore": "build/\n!build/keep\nout/*\n!out/keep\n"})
    assert sent(src) == {b".git", b".pignore", b"out/keep"}


def test_nested_pignore_the_deepest_match_decides(tmp_path):
    src = project(tmp_path / "src", {
        ".pignore": "*.csv\n", "a.csv": "", "sub/keep.csv": "", "sub/other.csv": "", "sub/x.tmp": "",
        "x.tmp": "", "sub/.pignore": "!keep.csv\n/x.tmp\n", "sub/deeper/x.tmp": "",
    })
    assert sent(src) == {b".git", b".pignore", b"sub/.pignore", b"sub/keep.csv", b"x.tmp",
                         b"sub/deeper/x.tmp"}


def test_nested_pignore_inside_a_directory_it_re_includes(tmp_path):
    src = project(tmp_path / "src", {".gitignore": "data/\n", ".pignore": "!data/\n", "data/a.csv": "",
                                     "data/cache/x": "", "data/.pignore": "cache/\n"})
    assert sent(src) == {b".git", b".gitignore", b".pignore", b"data/a.csv", b"data/.pignore"}


def test_pignore_follows_gitignore_semantics(tmp_path):
    """The notes' rule set as .pignore files excludes exactly what git excludes with them as .gitignore."""
    src, copy = tmp_path / "src", tmp_path / "copy"
    for root, name in ((src, ".pignore"), (copy, ".gitignore")):
        for rel in NOTES_FILES:
            write(root, rel)
        write(root, name, NOTES_IGNORE)
        write(root, f"sub/{name}", "/local\n!special.log\n")
        git(root, "init", "-q")
    expected = {n.replace(b".gitignore", b".pignore") for n in git_view(copy)}
    assert sent(src) == expected | {b".git"}


def test_pignore_can_leave_out_the_git_directory(tmp_path):
    src = project(tmp_path / "src", {"main.py": "", ".pignore": "/.git/\n"})
    assert sent(src) == {b".pignore", b"main.py"}


def test_pignore_ignored_by_git_is_still_read(tmp_path):
    src = project(tmp_path / "src", {".gitignore": ".pignore\n", ".pignore": "big.bin\n", "big.bin": "",
                                     "main.py": ""})
    assert sent(src) == {b".git", b".gitignore", b"main.py"}


def test_no_gitignore_sends_everything_but_what_pignore_excludes(tmp_path):
    src = project(tmp_path / "src", {".gitignore": "*.log\nbuild/\n", "a.log": "", "build/o": "",
                                     "main.py": "", ".pignore": "node_modules/\n", "node_modules/m.js": ""})
    (src / ".git/info/exclude").write_text("secret\n")
    write(src, "secret")
    assert sent(src) == {b".git", b".gitignore", b".pignore", b"main.py"}
    assert sent(src, gitignore=False) == {b".git", b".gitignore", b".pignore", b"main.py", b"a.log",
                                          b"build/o", b"secret"}
    assert sync.plan(src, gitignore=False).gitignore is False


def test_pignore_and_no_gitignore_outside_git(tmp_path):
    src = tmp_path / "src"
    for rel, text in {".gitignore": "data/\n*.log\n", ".pignore": "!data/\nhuge/\n", "data/a": "",
                      "x.log": "", "huge/h": "", "main.py": ""}.items():
        write(src, rel, text)
    assert sync.plan(src).mode == "gitignore"
    assert sent(src) == {b".gitignore", b".pignore", b"data/a", b"main.py"}
    assert sent(src, gitignore=False) == {b".gitignore", b".pignore", b"data/a", b"main.py", b"x.log"}


def test_pignore_reaches_the_worker(tmp_path):
    src, dest = tmp_path / "src", tmp_path / "dest"
    project(src, {".gitignore": ".env\n", ".env": "K=v", "main.py": "", "data/big": "x",
                  ".pignore": "!.env\ndata/\n"})
    do_sync(src, dest)
    assert tree(dest) == {b".gitignore", b".pignore", b".env", b"main.py"}
    assert (dest / ".git/HEAD").is_file()


def test_without_pignore_git_is_not_asked_for_ignored_files(tmp_path, monkeypatch):
    src = project(tmp_path / "src", {".gitignore": "x\n", "x": "", "main.py": ""})
    calls = []
    real = sync._git
    monkeypatch.setattr(sync, "_git", lambda root, *args: calls.append(args) or real(root, *args))
    sync.plan(src)
    assert not any("--ignored" in args for args in calls)


def test_plan_sizes_count_git_and_every_file(tmp_path):
    src = project(tmp_path / "src", {"a": "12345", "d/b": "xy"})
    (src / "link").symlink_to("a")
    the_plan = sync.plan(src)
    rows = {path: (size, files) for path, size, files in the_plan.sizes}
    git_size = sum(p.lstat().st_size for p in (src / ".git").rglob("*") if not p.is_dir() or p.is_symlink())
    assert rows[b"a"] == (5, 1) and rows[b"d/b"] == (2, 1) and rows[b"link"] == (1, 1)
    assert rows[b".git"][0] == git_size and rows[b".git"][1] > 5
    assert the_plan.nbytes == 5 + 2 + 1 + git_size


def test_progress_argv_and_output_reach_the_sink(tmp_path):
    from p_tasks.progress import Progress

    src, dest = tmp_path / "src", tmp_path / "dest"
    (src).mkdir()
    (src / "f").write_bytes(os.urandom(3_000_000))
    the_plan = sync.plan(src)
    assert "--info=progress2" in sync.rsync_argv(the_plan, "d", None, progress=True)
    assert "--info=progress2" not in sync.rsync_argv(the_plan, "d", None)
    seen = []

    class Sink(Progress):
        def feed(self, record):
            seen.append(record)
            super().feed(record)

    sink = Sink(the_plan.nbytes, stream=open(os.devnull, "w"), delay=0)
    sync.run(the_plan, str(dest), None, invoke.Context(), progress=sink)
    assert (dest / "f").stat().st_size == 3_000_000
    assert any("3,000,000" in r and "100%" in r for r in seen), seen


def test_progress_is_silent_for_the_first_second_then_draws_and_clears():
    import io

    from p_tasks.progress import Progress

    now = [100.0]
    out = io.StringIO()
    bar = Progress(40_000_000, stream=out, clock=lambda: now[0])
    bar.write("\r         32,768   0%    0.00kB/s    0:00:00  ")
    now[0] += 0.5
    bar.write("\r      5,000,000  12%    9.76MB/s    0:00:04  ")
    assert out.getvalue() == ""  # a sync shorter than a second shows nothing
    now[0] += 1.5
    bar.write("\r     20,000,")  # a record split across two writes
    bar.write("000  50%    9.77MB/s    0:00:02  ")
    assert out.getvalue() == "\r\033[Kp: sync  20 MB / 40 MB  50%  10 MB/s  ETA 0:02"
    bar.clear()
    assert out.getvalue().endswith("\r\033[K")
    bar.clear()
    assert out.getvalue().count("\r\033[K") == 2  # cleared once


def test_progress_without_a_total_uses_rsyncs_percent_and_eta():
    from p_tasks.progress import Progress

    bar = Progress(None, stream=None, delay=0)
    assert bar.line(1_500_000, 2.0, 30, "0:00:07") == "p: sync  1.5 MB  30%  750 kB/s  ETA 0:00:07"


def rows(*items):
    return tuple((os.fsencode(p), n, f) for p, n, f in items)


def test_largest_paths_drill_into_a_dominant_child():
    from p_tasks import sizes

    plan_rows = rows(("data/raw/huge.bin", 900, 1), ("data/raw/x", 10, 1), ("data/y", 5, 1),
                     ("src/a.py", 30, 1), ("src/b.py", 30, 1), (".git", 50, 40), ("tiny", 1, 1))
    got = [(p, n.nbytes, n.is_dir) for p, n in sizes.largest(plan_rows)]
    assert got == [(b"data/raw/huge.bin", 900, False), (b"src", 60, True), (b".git", 50, True)]
    assert len(sizes.largest(plan_rows, top=1)) == 1  # and `tiny`, under 1 %, is never shown


def test_pignore_line_matches_exactly_that_path(tmp_path):
    import pathspec

    from p_tasks import sizes

    for name in ["a b", "*star", "q?[x]", "back\\slash", "#hash", "!bang", "trail "]:
        line = sizes.pignore_line(os.fsencode(f"dir/{name}"), False)
        spec = pathspec.GitIgnoreSpec.from_lines([line])
        assert spec.match_file(f"dir/{name}") and not spec.match_file(f"other/dir/{name}"), line
        assert not spec.match_file("dir/zzz")
    assert sizes.pignore_line(b"data", True) == "/data/"


def test_big_sync_without_a_terminal_is_refused_in_one_line(monkeypatch):
    import io

    from p_tasks import sizes

    the_plan = sync.SyncPlan(src=Path("/w"), mode="git", files_from=b"", count=2, nbytes=250_000_000,
                             sizes=rows(("data/big", 240_000_000, 1), ("a", 10_000_000, 1)))
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    sizes.guard(the_plan, "w", 300, yes=False)  # under the threshold: nothing
    sizes.guard(the_plan, "w", 0, yes=False)  # 0: never ask
    with pytest.raises(sizes.SyncTooBig) as info:
        sizes.guard(the_plan, "w", None, yes=False)
    assert "\n" not in info.value.message
    assert "250 MB (largest: /data/big, 240 MB)" in info.value.message and "--yes" in info.value.message


@pytest.mark.parametrize("as_repo", [False, True])
def test_syncing_home_leaves_out_p_s_own_state(tmp_path, monkeypatch, as_repo):
    """From $HOME: ~/.p (on the `local` worker: every earlier job's workdir), the job records and the
    control sockets' directory are p's state, never the project's."""
    home = tmp_path / "home"
    monkeypatch.setenv("HOME", str(home))
    for var in ("XDG_DATA_HOME", "XDG_CACHE_HOME", "XDG_RUNTIME_DIR"):
        monkeypatch.delenv(var, raising=False)
    for rel in ("notes.txt", ".p/workdirs/0123/big.bin", ".p/jobs/x/output.log",
                ".local/share/p/jobs/a.json", ".local/share/other/keep.txt", ".cache/p/ssh/x", ".pi/y"):
        write(home, rel)
    if as_repo:
        git(home, "init", "-q")
    names = sent(home)
    assert {b"notes.txt", b".local/share/other/keep.txt", b".pi/y"} <= names, names
    assert not [n for n in names if n.startswith((b".p/", b".local/share/p/", b".cache/p/"))], names
