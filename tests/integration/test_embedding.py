"""Power users: the same tasks through `invoke`, and embedded in another project's tasks.py."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def invoke(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    exe = shutil.which("invoke") or str(Path(sys.executable).with_name("invoke"))
    return subprocess.run([exe, *args], cwd=cwd, capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL)


def test_invoke_lists_the_same_tasks():
    done = invoke("--collection", "p_tasks", "--list", cwd=REPO)
    assert done.returncode == 0, done.stderr
    for name in ("run", "ls", "attach", "logs", "stop", "pull", "rm", "prune", "worker.register",
                 "worker.ls", "worker.rm", "worker.default"):
        assert f"  {name}" in done.stdout, (name, done.stdout)


def test_invoke_runs_a_job_on_the_local_worker(tmp_path):
    (tmp_path / "file.txt").write_text("x")
    done = invoke("--search-root", str(REPO), "--collection", "p_tasks", "run", "--command",
                  "ls; exit 3", cwd=tmp_path)
    assert done.returncode == 3, done.stderr
    assert "file.txt" in done.stdout


def test_embedded_in_another_projects_tasks_py(tmp_path):
    (tmp_path / "tasks.py").write_text(
        "from invoke import Collection, task\n"
        "from p_tasks import ns as p_ns\n\n"
        "@task\ndef build(c):\n    print('building')\n\n"
        "ns = Collection(build)\n"
        "ns.add_collection(p_ns, name='p')\n"
    )
    listed = invoke("--list", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert "p.run" in listed.stdout and "p.worker.register" in listed.stdout and "build" in listed.stdout
    workers = invoke("p.worker.ls", cwd=tmp_path)
    assert workers.returncode == 0 and "local" in workers.stdout, workers.stderr
