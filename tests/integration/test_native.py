"""What users of docker, ssh, rsync and pueue reach for without thinking, typed as they would type it:
.pignore and --no-gitignore, the size report and --dry-run, sync progress on a terminal, --version and
`p help <subcommand>`. Runs on the built-in `local` worker, and over the loopback sshd where the
network path matters. Shell completion is in tests/unit/test_completion.py.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from helpers import run_p

GIT_ENV = {"GIT_CONFIG_NOSYSTEM": "1", "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com"}
LIST_FILES = ["find", ".", "-path", "./.git", "-prune", "-o", "-type", "f", "-print"]


def git(*args: str) -> None:
    subprocess.run(["git", *args], check=True, capture_output=True, env={**os.environ, **GIT_ENV})


@pytest.fixture
def repo(tmp_path, monkeypatch) -> Path:
    """The CWD: a git project with a secret .env and a data dir that .gitignore keeps out, a tracked
    docs/videos dir the worker does not need, and a build dir."""
    root = tmp_path / "proj"
    files = {".gitignore": ".env\ndata/\nbuild/\n", ".env": "TOKEN=abc\n", "data/train.csv": "1,2\n",
             "docs/videos/intro.mp4": "video", "docs/index.md": "# docs\n", "main.py": "print(1)\n",
             "build/out.o": "obj"}
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    monkeypatch.chdir(root)
    git("init", "-q")
    git("add", ".")
    git("commit", "-qm", "init")
    return root


def job_files(*words: str) -> set[str]:
    """Run `p [words] -- find …` and return the files the job saw in its workdir (.git left out)."""
    rc, out, err = run_p(*words, "--", *LIST_FILES)
    assert rc == 0, err
    return {line.removeprefix("./") for line in out.decode().replace("\r\n", "\n").splitlines()}


def records(home: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in (home / ".local/share/p/jobs").glob("*.json")]


def set_config(home: Path, text: str) -> None:
    path = home / ".config/p/config.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


# ---------------------------------------------------------------------------------------------------
# .pignore and --no-gitignore


def test_without_pignore_git_decides(repo):
    assert job_files() == {".gitignore", "docs/videos/intro.mp4", "docs/index.md", "main.py"}


def test_pignore_leaves_out_tracked_files_and_brings_back_ignored_ones(repo):
    (repo / ".pignore").write_text("# not needed on the worker\ndocs/videos/\n!.env\n!data/\n")
    assert job_files() == {".gitignore", ".pignore", "docs/index.md", "main.py", ".env",
                           "data/train.csv"}


def test_nested_pignore(repo):
    (repo / "docs/.pignore").write_text("*.mp4\n")
    assert job_files() == {".gitignore", "docs/.pignore", "docs/index.md", "main.py"}


def test_no_gitignore_sends_everything_but_pignore(repo):
    (repo / ".pignore").write_text("build/\n")
    files = job_files("--no-gitignore")
    assert files == {".gitignore", ".pignore", ".env", "data/train.csv", "docs/videos/intro.mp4",
                     "docs/index.md", "main.py"}
    rc, out, err = run_p("--no-gitignore", "--", "git", "rev-parse", "--is-inside-work-tree")
    assert (rc, out.strip()) == (0, b"true"), err  # .git/ still sent
    assert job_files() == {".gitignore", ".pignore", "docs/videos/intro.mp4", "docs/index.md", "main.py"}


def test_pignore_over_ssh(repo, ssh_client_config):
    assert run_p("worker", "register", ssh_client_config.alias, "-n", "tw")[0] == 0
    (repo / ".pignore").write_text("docs/\n!.env\n")
    assert job_files("tw") == {".gitignore", ".pignore", "main.py", ".env"}


# ---------------------------------------------------------------------------------------------------
# size report and --dry-run


def big_file(path: Path, nbytes: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.write(os.urandom(nbytes))


def test_dry_run_prints_what_would_be_sent_and_starts_nothing(repo, isolated_home):
    big_file(repo / "docs/videos/talk.mp4", 3_000_000)  # untracked, not ignored: sent
    rc, out, err = run_p("--dry-run", "--", "make")
    assert rc == 0, err
    text = out.decode()
    first, *rest = text.splitlines()
    assert re.fullmatch(r"would send \d+ files, 3\.\d+ MB from .*proj to worker 'local' \(git's view\); "
                        r"nothing started", first), first
    assert rest[0] == "largest:" and re.match(r"^ +3 MB  /docs/videos/talk\.mp4$", rest[1]), text
    assert len(rest) == 2  # paths under 1 % of the total are not worth naming
    assert not (isolated_home / ".p").exists() and not (isolated_home / ".local/share/p/jobs").exists()
    (repo / ".pignore").write_text("*.mp4\n")
    rc, out, err = run_p("--dry-run", "--", "make")
    assert "kB" in out.decode().splitlines()[0] and ".pignore applied" in out.decode()


def test_dry_run_with_no_sync(repo):
    rc, out, err = run_p("-n", "--dry-run", "--", "make")
    assert (rc, out.decode()) == (0, "would run in the home directory of worker 'local' (-n), nothing to "
                                     "send; nothing started\n"), err


def test_big_sync_without_a_terminal_needs_yes(repo, isolated_home):
    set_config(isolated_home, "sync_warn_mb: 1\n")
    big_file(repo / "data/weights.bin", 2_500_000)
    (repo / ".pignore").write_text("!data/\n")
    rc, out, err = run_p("--", "true")
    assert rc == 1 and out == b""
    assert err.decode().count("\n") == 1
    assert err.decode().startswith("p: this sync would send 2.5")
    assert "(largest: /data/weights.bin, 2.5 MB)" in err.decode() and "pass --yes" in err.decode()
    assert records(isolated_home) == [] and not (isolated_home / ".p").exists()
    rc, out, err = run_p("-y", "--", "sh", "-c", "wc -c < data/weights.bin")
    assert (rc, out.strip()) == (0, b"2500000"), err
    assert "/data/weights.bin" in err.decode() and "put its path as shown above in .pignore" in err.decode()


def test_big_sync_default_threshold_is_100_mb(repo, isolated_home):
    big_file(repo / "model.bin", 101_000_000)
    rc, out, err = run_p("--", "true")
    assert rc == 1 and "more than sync_warn_mb (100 MB)" in err.decode(), err
    set_config(isolated_home, "sync_warn_mb: 0\n")
    rc, out, err = run_p("--dry-run", "--", "true")
    assert rc == 0 and "/model.bin" in out.decode()


def test_bad_sync_warn_mb_is_named(repo, isolated_home):
    set_config(isolated_home, "sync_warn_mb: lots\n")
    rc, out, err = run_p("--", "true")
    assert rc == 1 and "'sync_warn_mb' must be a number" in err.decode()


def test_big_sync_on_a_terminal_asks(repo, isolated_home, terminal):
    set_config(isolated_home, "sync_warn_mb: 1\n")
    big_file(repo / "data/weights.bin", 2_000_000)
    (repo / ".pignore").write_text("!data/\n")
    t = terminal("p -d -- true; echo rc=$?", cwd=repo)
    screen = t.wait_for("Send 2.03 MB to worker 'local'? [y/N]")
    assert "/data/weights.bin" in screen and ".pignore" in screen
    t.send_keys("n", "Enter")
    t.wait_for("rc=1")
    assert "p: nothing sent, no job started" in t.capture()
    assert records(isolated_home) == []
    t = terminal("p -d -- true; echo rc=$?", cwd=repo)
    t.wait_for("[y/N]")
    t.send_keys("y", "Enter")
    t.wait_for("rc=0")
    assert [r["status"] for r in records(isolated_home)] in (["running"], ["done"])


# ---------------------------------------------------------------------------------------------------
# progress


@pytest.fixture
def slow_rsync(tmp_path) -> dict[str, str]:
    """PATH with an `rsync` that sends at 12 MB/s (--bwlimit) for a sync (--files-from) or a pull
    (--safe-links), so that a 40 MB one takes ~3 s."""
    bindir = tmp_path / "slow-bin"
    bindir.mkdir()
    real = shutil.which("rsync")
    (bindir / "rsync").write_text(
        f'#!/bin/sh\ncase "$*" in *--files-from*|*--safe-links*) exec {real} --bwlimit=12000 "$@";; esac\n'
        f'exec {real} "$@"\n'
    )
    (bindir / "rsync").chmod(0o755)
    return {"PATH": f"{bindir}{os.pathsep}{os.environ['PATH']}"}


def test_no_progress_when_stderr_is_not_a_terminal(repo, slow_rsync):
    big_file(repo / "blob", 30_000_000)
    rc, out, err = run_p("--", "true", env=slow_rsync)
    assert (rc, out, err) == (0, b"", b"")


@pytest.mark.parametrize("where", ["local", "ssh"])
def test_progress_on_a_terminal_then_cleared(repo, slow_rsync, terminal, request, where):
    words = []
    if where == "ssh":
        request.getfixturevalue("ssh_client_config")
        assert run_p("worker", "register", "testworker", "-n", "tw")[0] == 0
        words = ["tw"]
    big_file(repo / "blob", 40_000_000)
    t = terminal(" ".join(["p", "-d", *words, "--", "true"]), cwd=repo, env=slow_rsync)
    match = t.wait_for(re.compile(r"p: sync  (\S+) (k?MB) / 40(?:\.\d)? MB  (\d+)%  (\S+) MB/s  ETA 0:0\d"),
                       timeout=15)
    assert 0 < int(match.group(3)) < 100
    assert t.exit_status(timeout=30) == 0
    screen = t.capture()
    assert "p: sync" not in screen and "ETA" not in screen  # cleared when done
    assert re.search(r"^[0-9a-f-]{36}$", screen, re.M), screen  # the job id, on a clean line


def test_progress_follows_stderr_not_stdout(repo, slow_rsync, terminal, tmp_path):
    """In a terminal: stderr to a file draws nothing there; stdout piped with stderr on the terminal
    still shows the line, and the pipe gets only the job id."""
    big_file(repo / "blob", 40_000_000)
    err_file, out_file = tmp_path / "err.txt", tmp_path / "out.txt"
    t = terminal(f"p -d -- true 2>{err_file}", cwd=repo, env=slow_rsync)
    assert t.exit_status(timeout=30) == 0
    assert err_file.read_bytes() == b""
    assert re.fullmatch(r"[0-9a-f-]{36}", t.capture().strip()), t.capture()
    (repo / "blob").unlink()
    big_file(repo / "blob2", 40_000_000)  # a new name: the earlier workdir is no delta base for it
    t = terminal(f"p -d -- true | cat >{out_file}", cwd=repo, env=slow_rsync)
    t.wait_for(re.compile(r"p: sync  \S+ k?MB / 40(?:\.\d)? MB  \d+%"), timeout=15)
    assert t.exit_status(timeout=30) == 0
    assert t.capture().strip() == ""  # the line was cleared, and nothing else went to the terminal
    assert re.fullmatch(rb"[0-9a-f-]{36}\n", out_file.read_bytes()), out_file.read_bytes()


PULL_LINE = re.compile(r"p: pull  (\S+) (k?MB)  (\d+)%  (\S+) [kM]B/s  ETA \d+:\d\d:\d\d")


@pytest.fixture(params=["local", "ssh"])
def big_result(request, repo, isolated_home) -> tuple[list[str], str]:
    """(worker words, job id) of a finished job that left a 30 MB out.bin in its workdir."""
    words = []
    if request.param == "ssh":
        request.getfixturevalue("ssh_client_config")
        assert run_p("worker", "register", "testworker", "-n", "tw")[0] == 0
        words = ["tw"]
    rc, out, err = run_p(*words, "--", "sh", "-c", "head -c 30000000 /dev/urandom > out.bin")
    assert rc == 0, err
    [record] = records(isolated_home)
    return words, record["id"]


def test_no_pull_progress_when_stderr_is_not_a_terminal(big_result, slow_rsync, tmp_path):
    _, job_id = big_result
    rc, out, err = run_p("pull", job_id, "out.bin", str(tmp_path / "got.bin"), env=slow_rsync)
    assert (rc, err) == (0, b"")
    assert out == f"pulled out.bin from job {job_id[:8]} to {tmp_path / 'got.bin'}\n".encode()
    assert (tmp_path / "got.bin").stat().st_size == 30_000_000


def test_pull_progress_on_a_terminal_then_cleared(big_result, slow_rsync, terminal, tmp_path):
    _, job_id = big_result
    t = terminal(f"p pull {job_id[:8]} out.bin got.bin", cwd=tmp_path, env=slow_rsync)
    match = t.wait_for(PULL_LINE, timeout=15)
    assert 0 < int(match.group(3)) < 100  # rsync's own percentage: p does not know the total
    assert t.exit_status(timeout=30) == 0
    screen = t.capture()
    assert "p: pull" not in screen and "ETA" not in screen  # cleared when done
    assert re.search(rf"^pulled out\.bin from job {job_id[:8]} to got\.bin$", screen, re.M), screen
    assert (tmp_path / "got.bin").stat().st_size == 30_000_000


def test_failed_pull_on_a_terminal_clears_the_line_and_says_why(big_result, terminal, tmp_path):
    """rsync's stderr stays captured for p's one-line error, progress or not."""
    _, job_id = big_result
    (tmp_path / "a-file").write_text("")  # as a directory, it fails for root too
    t = terminal(f"p pull {job_id[:8]} out.bin a-file/got.bin", cwd=tmp_path)
    assert t.exit_status(timeout=30) == 1
    screen = t.capture()
    assert re.search(rf"^p: pull from job {job_id[:8]} failed: sync failed \(rsync exit \d+\): ", screen,
                     re.M), screen
    assert "p: pull " not in screen.replace("p: pull from", "")


# ---------------------------------------------------------------------------------------------------
# --version, help


def test_version():
    from p_tasks import __version__

    for flag in ("--version", "-V"):
        rc, out, err = run_p(flag)
        assert (rc, out.decode(), err) == (0, f"p {__version__}\n", b"")


@pytest.mark.parametrize("words", [["attach"], ["logs"], ["ls"], ["stop"], ["pull"], ["rm"], ["prune"],
                                   ["completion"], ["worker", "register"], ["worker", "ls"],
                                   ["worker", "rm"], ["worker", "default"], ["worker"]])
def test_help_subcommand_equals_subcommand_help(words):
    rc, via_help, err = run_p("help", *words)
    assert rc == 0 and err == b""
    assert via_help.startswith(f"usage: p {' '.join(words)} ".encode())
    assert run_p(*words, "--help") == (0, via_help, b"")
    assert run_p(*words, "-h") == (0, via_help, b"")


def test_help_run_is_the_main_help():
    rc, out, _ = run_p("help", "run")
    assert rc == 0 and out == run_p("--help")[1]
    assert b"--dry-run" in out and b"--no-gitignore" in out and b".pignore" in out
