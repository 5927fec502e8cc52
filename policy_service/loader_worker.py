"""The hot-reload loader worker's first steps, run before it imports the policy runtime (stdlib only).

:class:`policy_service.loader.LoaderProcess` names :func:`init_worker` as its pool's initializer. A
``spawn`` worker unpickles the initializer, so it imports this module, before anything else of the project;
the worker's priority is lowered here, and the heavier imports that follow (numpy, safetensors, pydantic,
pulled in with the first task) already run at that priority and leave the CPU to the serving process.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time

__all__ = ["PARENT_POLL_S", "WORKER_NICE", "init_worker"]

#: How often the worker checks that the serving process still exists (it exits when not).
PARENT_POLL_S = 1.0
#: ``nice`` increment of the worker: on a small machine the serving process wins the CPU.
WORKER_NICE = 10


def _exit_with_parent(parent: int) -> None:
    """Ends the worker once the serving process is gone (killed without shutting the pool down)."""
    while True:
        time.sleep(PARENT_POLL_S)
        if os.getppid() != parent:
            os._exit(0)


def init_worker() -> None:
    """Runs first in the worker: lower the priority, watch the parent."""
    with contextlib.suppress(OSError):  # not permitted: run at normal priority
        os.nice(WORKER_NICE)
    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), daemon=True).start()
