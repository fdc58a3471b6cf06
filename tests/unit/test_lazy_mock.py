"""p_tasks.lazy_mock: importing p does not load unittest.mock/asyncio, and invoke's MockContext and a
later `import unittest.mock` still get the real thing. In a fresh interpreter: pytest has loaded
unittest.mock in this one."""

from __future__ import annotations

import subprocess
import sys

PROGRAM = """
import sys
import p_tasks
assert "unittest.mock" not in sys.modules and "asyncio" not in sys.modules, "mock loaded"
from invoke import MockContext, Result
c = MockContext(run=Result("hi"))
assert c.run("make") .stdout == "hi"
c.run.assert_called_once_with("make")
import unittest.mock
assert unittest.mock is sys.modules["unittest.mock"] and hasattr(unittest.mock, "patch")
assert isinstance(c.run, unittest.mock.Mock)
print("ok")
"""


def test_p_imports_without_unittest_mock_and_mock_context_still_works():
    done = subprocess.run([sys.executable, "-c", PROGRAM], capture_output=True, text=True, check=False)
    assert (done.returncode, done.stdout) == (0, "ok\n"), done.stderr


def test_an_earlier_unittest_mock_is_used_as_is():
    program = "import unittest.mock, sys; real = unittest.mock.Mock; import p_tasks, invoke.context\n" \
              "assert invoke.context.Mock is real; print('ok')"
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, check=False)
    assert (done.returncode, done.stdout) == (0, "ok\n"), done.stderr
