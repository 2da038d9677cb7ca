"""The process server that executors' worker processes are forked from (no torch here: the runner starts it
before importing torch, so that the server's imports overlap the runner's own).

multiprocessing's forkserver, preloaded with torch and mmbench, never touching CUDA: a worker forked from it
starts in a moment and may still pick its GPU. Where there is no forkserver, workers are spawned.
"""

from __future__ import annotations

import functools
import multiprocessing

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
