"""`python -m bench`: run under the interpreter that has p installed (the checkout's .venv)."""

import os
import sys
from pathlib import Path


def _ensure_p_importable() -> None:
    """`invoke bench` runs `python3 -m bench`, which may be a python without p: re-run under .venv's."""
    try:
        import p_tasks  # noqa: F401
    except ImportError:
        venv = Path(__file__).resolve().parent.parent / ".venv" / "bin" / "python"
        if venv.is_file() and Path(sys.executable).resolve() != venv.resolve():
            os.execv(str(venv), [str(venv), "-m", "bench", *sys.argv[1:]])
        sys.exit("p bench: p_tasks is not importable; install p (.ci/setup) and run "
                 ".venv/bin/python -m bench")


_ensure_p_importable()

from bench.runner import main  # noqa: E402

sys.exit(main())
