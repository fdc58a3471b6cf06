"""Property: any argv gives a clean one-line error or a correct parse, never an exception."""

from __future__ import annotations

import io
from contextlib import redirect_stderr, redirect_stdout

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from p_tasks.job import UUID_RE
from p_tasks.main import PProgram
from p_tasks.store import Store

WORDS = ["--", "-n", "-d", "--detach", "-a", "--all", "--json", "-q", "-f", "--tail", "--force", "--dry-run",
         "--help", "-h", "ls", "attach", "logs", "stop", "pull", "rm", "prune", "worker", "register",
         "default", "help", "run", "local", "beefy", "a3f", "--timeout", "--dest", "-c", "--check"]
token = st.one_of(st.sampled_from(WORDS), st.text(max_size=12))


class ParseOnly(PProgram):
    """The real Program, stopping just before a task would run."""

    def execute(self) -> None:
        self.executed = [t.name for t in self.tasks]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(token, max_size=8))
def test_any_argv_parses_or_fails_cleanly(argv):
    from p_tasks import ns

    program = ParseOnly(name="p", binary="p", namespace=ns, version="0")
    err = io.StringIO()
    with redirect_stdout(io.StringIO()), redirect_stderr(err):
        program.run(["p", *argv], exit=False)
    text = err.getvalue()
    assert "internal error" not in text and "Traceback" not in text
    if program.exit_code:
        assert program.exit_code in (1, 2)
        assert text.startswith("p: ") and text.count("\n") == 1, text
    if "--" in argv and getattr(program, "executed", None) == ["run"]:
        assert program.job_argv == argv[argv.index("--") + 1 :]


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=40))
def test_any_job_id_is_resolved_or_refused(prefix):
    store = Store()
    try:
        job = store.resolve(prefix)
    except Exception as exc:  # noqa: BLE001 - the property: only p's own errors
        from p_tasks.exceptions import PError

        assert isinstance(exc, PError), repr(exc)
    else:
        assert UUID_RE.match(job.id)
