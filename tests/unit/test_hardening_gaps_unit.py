"""Pure-logic hardening properties: job ids resolved through the real Program against a store that holds
records, and config.yaml cut at every byte (a partly written file)."""

from __future__ import annotations

import io
import json
import re
from contextlib import redirect_stderr, redirect_stdout

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from p_tasks import config
from p_tasks.config import Config, WorkerEntry
from p_tasks.exceptions import ConfigError
from p_tasks.job import DONE, RUNNING, Job
from p_tasks.main import PProgram, program_namespace
from p_tasks.store import Store

A = "a3f2b091-0000-4000-8000-000000000001"
B = "a3f2c000-0000-4000-8000-000000000002"  # shares "a3f2" with A
C = "7c91d302-0000-4000-8000-00000000000c"
BAD = "d00dfeed-0000-4000-8000-000000000004"  # its record is corrupt
IDS = [A, B, C, BAD]
HEX = "0123456789abcdef-"


class ResolveOnly(PProgram):
    """The real `p` Program; where the task would reach the worker, it only resolves the job id."""

    def execute(self) -> None:
        self.resolved = Store().resolve(self.tasks[0].args["job_id"].value).id


@pytest.fixture
def records(isolated_home):
    store = Store()
    for job_id, status in ((A, RUNNING), (B, DONE), (C, DONE)):
        store.save(Job(job_id, "beefy", "/src", ["make"], status=status, exit_code=0))
    store.path(BAD).write_text('{"id": "d00dfeed-0000-4000-8000-0000')  # cut short
    return store


def expected(prefix: str) -> str | list[str]:
    """What p must answer: the ids the prefix matches, or why it is no job id at all."""
    low = prefix.lower()
    if not low or any(c not in HEX for c in low):
        return "not an id"
    return [i for i in IDS if i.startswith(low)]


prefix_of_a_record = st.builds(lambda i, n, upper: i[:n].upper() if upper else i[:n],
                               st.sampled_from(IDS), st.integers(1, 36), st.booleans())
hexish = st.text(alphabet=st.sampled_from(HEX + "ABCDEF_gz./ "), max_size=40)
prefixes = st.one_of(prefix_of_a_record, hexish, st.text(max_size=12))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.sampled_from(["attach", "logs", "stop", "rm"]), prefixes)
def test_job_ids_of_existing_records_resolve_others_fail_cleanly(records, verb, prefix):
    program = ResolveOnly(name="p", binary="p", namespace=program_namespace(), version="0")
    err = io.StringIO()
    with redirect_stdout(io.StringIO()), redirect_stderr(err):
        program.run(["p", verb, prefix], exit=False)
    text = err.getvalue()
    assert "internal error" not in text and "Traceback" not in text, text
    if program.exit_code:
        assert program.exit_code in (1, 2) and text.startswith("p: ") and text.count("\n") == 1, text
    if prefix.startswith("-") or prefix == "--":
        return  # an option to the parser, not a job id: a clean error is all that is asked
    want = expected(prefix)
    event("resolved" if isinstance(want, list) and len(want) == 1 and want != [BAD] else "refused")
    if want == "not an id":
        assert program.exit_code == 2 and "is not a job id" in text, text
    elif not want:
        assert program.exit_code == 2 and "no job matches" in text, text
    elif len(want) > 1:
        assert program.exit_code == 2 and "ambiguous" in text, text
        assert all(i[:8] in text for i in want if i != BAD), text
    elif want == [BAD]:
        assert program.exit_code == 2 and f"{BAD}.json is unreadable" in text, text
    else:
        assert program.exit_code == 0 and program.resolved == want[0], (text, want)


# -- config.yaml cut at every byte -----------------------------------------------------------------

def test_config_cut_at_any_byte_loads_or_names_file_and_line(tmp_path):
    """A partly written config.yaml (the write stopped anywhere) either still parses, or gives one
    line that names the file and a line within what was written; the file is never changed."""
    path = tmp_path / "config.yaml"
    full = Config([WorkerEntry("beefy", "user@192.168.1.50"), WorkerEntry("v6", "me@[::1]:2222")],
                  "beefy", path, on_finish="notify-send 'job done'", sync_warn_mb=250).to_yaml()
    errors = 0
    for cut in range(len(full) + 1):
        data = full[:cut]
        path.write_bytes(data)
        try:
            config.load(path)
        except ConfigError as exc:
            errors += 1
            match = re.match(rf"config file {re.escape(str(path))} line (\d+): \S", exc.message)
            assert match and "\n" not in exc.message, (data, exc.message)
            assert 1 <= int(match[1]) <= data.count(b"\n") + 1, (data, exc.message)
        assert path.read_bytes() == data
    assert errors > len(full) // 4  # most cuts are errors: the loop did exercise them
    assert json.dumps([w.name for w in config.load(path).workers]) == '["beefy", "v6"]'
