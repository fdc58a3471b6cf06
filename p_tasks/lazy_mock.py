"""Import invoke without paying for `unittest.mock` (and the asyncio it pulls in): ~50-65 ms of every
`p` command, a third of what `p ls` costs.

invoke.context does `from unittest.mock import Mock` at import time, for ``MockContext`` alone (a test
helper p never uses). :func:`import_invoke` lets that line bind a stand-in that imports the real
``Mock`` the first time it is called, then takes the stand-in out of ``sys.modules``, so any later
`import unittest.mock` (yours, or pytest's) gets the real module. Nothing changes when unittest.mock is
already loaded (under pytest, say): then invoke gets the real one directly.
"""

from __future__ import annotations

import sys
import types


class DeferredMock:
    """Stands for ``unittest.mock.Mock`` in invoke.context; calling it builds a real Mock."""

    def __new__(cls, *args, **kwargs):
        from unittest.mock import Mock

        return Mock(*args, **kwargs)


def import_invoke() -> None:
    if "invoke.context" in sys.modules or "unittest.mock" in sys.modules:
        return
    stand_in = types.ModuleType("unittest.mock", "stand-in while invoke is imported (p_tasks.lazy_mock)")
    stand_in.Mock = DeferredMock
    sys.modules["unittest.mock"] = stand_in
    try:
        import invoke  # noqa: F401
    finally:
        if sys.modules.get("unittest.mock") is stand_in:
            del sys.modules["unittest.mock"]
