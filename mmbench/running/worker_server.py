"""The process server that executors' worker processes are forked from (no torch here: the runner starts it
before importing torch, so that the server's imports overlap the runner's own; `mmbench run` starts it before it
knows the executor, and stops it when the executor does not use it, `Executor.uses_worker_server`).

multiprocessing's forkserver, preloaded with torch and mmbench, never touching CUDA: a worker forked from it
starts in a moment and may still pick its GPU. Where there is no forkserver, workers are spawned.
"""

from __future__ import annotations

import contextlib
import functools
import multiprocessing
import os
import signal
from typing import Any

#: what the server imports before it forks workers (torch, mmbench, the plugins; see that module)
PRELOAD = ["mmbench.running.worker_preload"]


@functools.cache
def context() -> multiprocessing.context.BaseContext:
    """The process context workers start from (one server per runner process)."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    forkserver = multiprocessing.get_context("forkserver")
    forkserver.set_forkserver_preload(PRELOAD)
    return forkserver


def warm_up() -> None:
    """Start the server now rather than with the first worker."""
    if context().get_start_method() == "forkserver":
        from multiprocessing import forkserver

        forkserver.ensure_running()


def stop() -> None:
    """Stop the server now, even in the middle of its imports (for a run whose executor does not fork workers
    from it); a later `warm_up` or worker starts a new one."""
    if context().get_start_method() != "forkserver":
        return
    from multiprocessing import forkserver

    server: Any = forkserver._forkserver  # multiprocessing's private server; only its tests stop one (`_stop`)
    if server._forkserver_pid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(server._forkserver_pid, signal.SIGTERM)  # `_stop` alone would wait for its imports to end
        server._stop()
