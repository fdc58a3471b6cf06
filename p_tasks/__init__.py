"""p: push jobs to remote worker machines.

``ns`` is the Invoke Collection holding every p subcommand as a task. Embed it in your own tasks.py or
fabfile::

    from invoke import Collection
    from p_tasks import ns as p_ns

    ns = Collection()
    ns.add_collection(p_ns, name="p")
"""

from __future__ import annotations

__version__ = "0.1.0"

from .lazy_mock import import_invoke  # noqa: E402

import_invoke()

from .tasks import ns  # noqa: E402

__all__ = ["ns", "__version__"]
