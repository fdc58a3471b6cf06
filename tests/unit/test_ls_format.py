"""`p ls` rendering, pure: `~` for the home dir, H:MM:SS durations, the command cut to the width,
colour only on rows with a non-zero exit, ISO 8601 UTC stamps."""

from __future__ import annotations

import re
import time

import pytest

from p_tasks.job import DONE, FAILED, RUNNING, STOPPED, Job, newest_first
from p_tasks.output import hms, iso, job_json, job_table, tilde

ANSI = re.compile(r"\x1b\[[0-9;]*m")
LONG = ["python3", "train.py", "--epochs", "100", "--data", "/datasets/imagenet/full/train", "--lr",
        "0.001", "--output", "/checkpoints/run-2024-very-long-name"]


def job(n: int, argv=None, status=DONE, exit_code=0, started=1000.0, ended=1059.0, cwd="/srv") -> Job:
    return Job(f"{n:08x}-0000-4000-8000-000000000000", "beefy", cwd, argv or ["make"], status=status,
               exit_code=exit_code, started_at=started, ended_at=ended)


@pytest.mark.parametrize(("path", "shown"), [
    ("/home/ann", "~"),
    ("/home/ann/projects/foo", "~/projects/foo"),
    ("/home/anna/x", "/home/anna/x"),  # shares the prefix, is not under the home dir
    ("/srv/home/ann", "/srv/home/ann"),
    ("/opt", "/opt"),
])
def test_tilde_only_for_the_home_dir_and_below(path, shown):
    assert tilde(path, "/home/ann") == shown
    assert tilde(path, "/home/ann/") == shown


@pytest.mark.parametrize(("seconds", "text"), [
    (0, "0:00:00"), (59.9, "0:00:59"), (63, "0:01:03"), (3723, "1:02:03"), (36000 + 61, "10:01:01"),
    (-4, "0:00:00"),
])
def test_duration_is_h_mm_ss(seconds, text):
    assert hms(seconds) == text


def test_duration_column_uses_both_worker_stamps_not_the_client_clock():
    finished = job(1, started=1000.0, ended=1000.0 + 3723)
    table = job_table([finished], width=0, now=10**9)
    assert table.splitlines()[2].endswith("1:02:03")


def test_command_is_cut_to_the_width_and_the_other_columns_stay():
    jobs = [job(1, LONG, exit_code=3), job(2, ["make"])]
    for width in (60, 80, 100):
        lines = job_table(jobs, width=width).splitlines()
        assert all(len(line) <= width for line in lines), (width, lines)
        assert lines[0].split() == ["ID", "WORKER", "CWD", "COMMAND", "STATUS", "DURATION"]
        assert re.match(r"00000001  beefy +/srv  python3 train", lines[2]), lines[2]
        assert "…" in lines[2] and lines[2].endswith("done [3]  0:00:59")
        assert lines[3].endswith("done [0]  0:00:59") and "…" not in lines[3]


def test_without_a_width_nothing_is_cut():
    line = job_table([job(1, LONG)], width=0).splitlines()[2]
    assert " ".join(LONG) in line and "…" not in line


def test_colour_marks_only_rows_that_did_not_succeed():
    jobs = [job(1, exit_code=0), job(2, exit_code=1), job(3, status=STOPPED, exit_code=143),
            job(4, status=FAILED, exit_code=None), job(5, status=RUNNING, exit_code=None, ended=None)]
    lines = job_table(jobs, width=0, color=True, now=2000.0).splitlines()
    coloured = [ANSI.sub("", line)[:8] for line in lines[2:]
                if line.startswith("\x1b[31m") and line.endswith("\x1b[0m")]
    assert coloured == ["00000002", "00000003", "00000004"]
    assert not any("\x1b[" in line for line in lines[:2])
    assert "\x1b[" not in job_table(jobs, width=0, color=False, now=2000.0)


def test_newest_first_by_start_not_by_id():
    jobs = [job(3, started=100.0), job(1, started=300.0), job(2, started=200.0)]
    assert [j.short_id for j in newest_first(jobs)] == ["00000001", "00000002", "00000003"]


def test_json_stamps_are_iso_utc_with_z_whatever_the_local_zone(monkeypatch):
    monkeypatch.setenv("TZ", "Asia/Kolkata")  # +05:30: a local-time rendering would show
    time.tzset()
    try:
        assert iso(0) == "1970-01-01T00:00:00Z"
        data = job_json(job(1, started=1_700_000_000.0, ended=1_700_003_723.5))
        assert data["started_at"] == "2023-11-14T22:13:20Z"
        assert data["ended_at"] == "2023-11-14T23:15:23Z"
        assert data["duration_s"] == 3723.5 and data["command"] == ["make"]
        assert iso(None) is None
    finally:
        monkeypatch.undo()
        time.tzset()
