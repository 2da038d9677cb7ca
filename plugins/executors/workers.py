"""Worker processes that train cells for the `local` (CPU) and `gpus` executors.

Each worker is a process forked from mmbench's worker server (`worker_context`), so it starts in a moment. A
worker trains one cell at a time and sends its start, epochs and result back to the runner's process, which
saves them. A worker that dies (a segfault, the kernel's out-of-memory killer) is replaced and its cell retried up to
`max_retries` times, then recorded failed with the exit signal.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait

from mmbench.api.running import (
    PLUGINS_DIR_VARIABLE,
    Cell,
    Event,
    Relay,
    end_with_parent,
    run_cell,
    worker_context,
)


@dataclass(frozen=True)
class Place:
    """Where one worker runs: a name for the log, environment variables set before anything starts CUDA (a
    worker's own GPU), and the CPUs it may use (None: no pinning)."""

    name: str
    env: dict[str, str] = field(default_factory=dict)
    cpus: frozenset[int] | None = None


def cpu_slices(n: int) -> list[frozenset[int] | None]:
    """Disjoint equal slices of this process's CPUs for `n` workers; no pinning when there are fewer CPUs."""
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if not n or len(cpus) < n:
        return [None] * n
    size = len(cpus) // n
    return [frozenset(cpus[i * size:(i + 1) * size]) for i in range(n)]


def _worker(conn: Connection, place: Place, env: dict[str, str]) -> None:
    """A worker process: cells in, `Relay` messages out, until told to stop (None) or the runner is gone.

    `env` names the runner's plugin folders (the server's environment may predate them). Ctrl-C is left to the
    runner's process, which stops the workers itself.
    """
    end_with_parent()  # a worker never outlives the server it was forked from, which ends with the runner
    os.environ.update({**env, **place.env})  # before anything starts CUDA in this process
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if place.cpus:
        os.sched_setaffinity(0, place.cpus)
    where = f"{socket.gethostname()} pid {os.getpid()} {place.name}"
    with contextlib.suppress(EOFError):
        while (cell := conn.recv()) is not None:
            cell_id = cell["cell_id"]
            conn.send(("started", cell_id, where))
            result = run_cell(cell, on_epoch=lambda stats: conn.send(("epoch", cell_id, stats.model_dump(mode="json"))))
            conn.send(("finished", cell_id, result.to_json()))


class Slot:
    """One worker process at one place, and the cell it is training."""

    def __init__(self, place: Place) -> None:
        self.place = place
        self.cell: Cell | None = None
        self.start()

    def start(self) -> None:
        self.conn, child = worker_context().Pipe()
        env = {PLUGINS_DIR_VARIABLE: os.environ.get(PLUGINS_DIR_VARIABLE, "")}
        # not a daemon: a cell's data loader starts processes of its own
        self.process = worker_context().Process(target=_worker, args=(child, self.place, env),
                                       name=f"mmbench-{self.place.name.replace(' ', '')}")
        self.process.start()
        child.close()  # the worker holds the only other end, so its death reads as end-of-file here

    def restart(self) -> None:
        self.conn.close()
        self.process.join(timeout=10)
        self.start()

    def give(self, cell: Cell) -> None:
        self.cell = cell
        try:
            self.conn.send(cell.to_json())
        except OSError:  # the worker died while idle: the cell had not started, so it goes to a new worker
            self.restart()
            self.conn.send(cell.to_json())

    def death(self) -> str:
        """Why the worker ended, once its pipe is closed."""
        self.process.join(timeout=10)
        code = self.process.exitcode
        if code is not None and code < 0:
            return f"killed by {signal.Signals(-code).name}"
        return f"exit code {code}"

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            self.conn.send(None)
        self.process.join(timeout=10)
        if self.process.is_alive():
            self.process.kill()
        self.conn.close()


def run_pool(cells: Sequence[Cell], report: Callable[[Event], None], places: Sequence[Place],
             max_retries: int) -> None:
    """Train `cells` on one worker per place (at most one per cell), each taking the next cell when free."""
    if not cells:
        return
    relay = Relay(cells, report)
    todo = deque(cells)
    deaths: Counter[str] = Counter()
    slots = [Slot(place) for place in places[:len(cells)]]
    try:
        for slot in slots:
            slot.give(todo.popleft())
        while relay.pending:
            busy = {slot.conn: slot for slot in slots if slot.cell is not None}
            for conn in wait(list(busy)):
                slot = busy[conn]
                try:
                    kind, cell_id, payload = conn.recv()
                except (EOFError, OSError):
                    _replace(slot, relay, todo, deaths, max_retries)
                else:
                    getattr(relay, kind)(cell_id, payload)
                    if kind != "finished":
                        continue
                    slot.cell = None
                if todo:
                    slot.give(todo.popleft())
    finally:
        for slot in slots:
            slot.stop()


def _replace(slot: Slot, relay: Relay, todo: deque[Cell], deaths: Counter[str], max_retries: int) -> None:
    """The slot's worker died: start a new one; its cell runs again, or is lost after `max_retries`."""
    cell, why = slot.cell, slot.death()
    slot.cell = None
    slot.restart()
    deaths[cell.cell_id] += 1
    if deaths[cell.cell_id] > max_retries:
        relay.lost(cell.cell_id, f"its worker process on {slot.place.name} died {deaths[cell.cell_id]} time(s), "
                                 f"last {why}; a segfault or the out-of-memory killer (see the system log)")
    else:
        todo.appendleft(cell)
