"""The project's own development tasks: `invoke test`, `invoke lint`, `invoke bench`."""

from invoke import task


@task(help={"k": "only tests matching this expression"})
def test(c, k=None):
    """Run the whole test suite (real sshd, tmux and rsync on loopback)."""
    c.run("python3 -m pytest -q" + (f" -k {k!r}" if k else ""), pty=False)


@task
def lint(c):
    """ruff on the Python code, shellcheck (as dash) on the agent."""
    c.run("ruff check p_tasks tests tasks.py bench")
    c.run("shellcheck -s dash agent_sh/p-agent")


@task
def bench(c):
    """Run the benchmark suite; results go to bench/results.json."""
    c.run("python3 -m bench")
