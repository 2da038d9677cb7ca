"""The face for executor authors: where a grid's cells run.

An `Executor` receives the cells still to run and reports `CellStarted`, `EpochEnded` and `CellFinished` events;
`run_cell` trains one cell wherever it is called (in this process, a worker process, a cluster node), and a
`Relay` passes on what remote workers send. `worker_context` is the process context workers are started from
(forked from a server preloaded with torch and mmbench), `usable_cpus` the CPUs this process may use, and
`end_with_parent` what a process an executor starts calls first, so that it never outlives the run. Executors
that train cells side by side place them by memory (`memory_key`, `stored_needs`, `probe_cell`, `host_budget`).
"""

from mmbench.cpus import usable_cpus
from mmbench.lifetime import end_with_parent
from mmbench.registry import PLUGINS_DIR_VARIABLE, Registry
from mmbench.running.executors import (
    CellFinished,
    CellStarted,
    EpochEnded,
    Event,
    Executor,
    ExecutorError,
    Notice,
    Relay,
)
from mmbench.running.memory import (
    MemoryNeed,
    gigabytes,
    host_budget,
    larger,
    memory_key,
    oom_kills,
    process_tree_rss,
    stored_needs,
)
from mmbench.running.worker import probe_cell, run_cell
from mmbench.running.worker_server import context as worker_context
from mmbench.schema.cell import Cell

__all__ = [
    "PLUGINS_DIR_VARIABLE", "Cell", "CellFinished", "CellStarted", "EpochEnded", "Event", "Executor",
    "ExecutorError", "MemoryNeed", "Notice", "Registry", "Relay", "end_with_parent", "gigabytes", "host_budget",
    "larger", "memory_key", "oom_kills", "probe_cell", "process_tree_rss", "run_cell", "stored_needs",
    "usable_cpus", "worker_context",
]
