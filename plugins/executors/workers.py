"""Worker processes that train cells for the `local` (CPU) and `gpus` executors.

Each worker is a process forked from mmbench's worker server (`worker_context`), so it starts in a moment. A
worker trains one cell at a time and sends its start, epochs and result back to the runner's process, which
saves them. Cells are placed by memory as well as by cores (`placement.py`): before any cell trains, one worker
probes each shape of cell whose need no earlier run recorded. A worker that dies (a segfault, the kernel's
out-of-memory killer) is replaced and its cell retried up to `max_retries` times, then recorded failed with the
exit signal and the memory it had reached.
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

from mmbench.api import EpochRecord
from mmbench.api.running import (
    PLUGINS_DIR_VARIABLE,
    Cell,
    Event,
    MemoryNeed,
    Relay,
    end_with_parent,
    gigabytes,
    oom_kills,
    probe_cell,
    process_tree_rss,
    run_cell,
    worker_context,
)
from mmbench_plugins.executors.placement import Placement

#: how often the runner samples its workers' memory (seconds)
MONITOR_SECONDS = 0.5


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
    """A worker process: `("train", cell)` and `("probe", cell)` in, `Relay` messages (and `probed`) out, until
    told to stop (None) or the runner is gone.

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
        while (message := conn.recv()) is not None:
            kind, cell = message
            if kind == "probe":
                conn.send(("probed", cell["cell_id"], _probe(cell)))
                continue
            cell_id = cell["cell_id"]
            conn.send(("started", cell_id, where))

            def on_epoch(stats: EpochRecord, cell_id: str = cell_id) -> None:
                conn.send(("epoch", cell_id, stats.model_dump(mode="json")))

            result = run_cell(cell, on_epoch=on_epoch)
            conn.send(("finished", cell_id, result.to_json()))


def _probe(cell: dict) -> dict[str, int]:
    """A cell's memory need, measured in this worker, and the size of its GPU when it has one."""
    import torch

    need = probe_cell(cell)
    total = torch.cuda.mem_get_info()[1] if need.accelerator and torch.cuda.is_available() else 0
    return {"host": need.host, "accelerator": need.accelerator, "accelerator_total": total}


class Slot:
    """One worker process at one place, the cell it is training, and the most memory it reached with it."""

    def __init__(self, place: Place) -> None:
        self.place = place
        self.gpu = place.env.get("CUDA_VISIBLE_DEVICES")
        self.cell: Cell | None = None
        self.peak = 0
        self.oom_kills: int | None = None
        self.start()

    def start(self) -> None:
        self.conn, child = worker_context().Pipe()
        env = {PLUGINS_DIR_VARIABLE: os.environ.get(PLUGINS_DIR_VARIABLE, "")}
        # not a daemon: a cell's data loader starts processes of its own
        self.process = worker_context().Process(  # type: ignore[attr-defined]  # spawn and forkserver contexts have it
            target=_worker, args=(child, self.place, env), name=f"mmbench-{self.place.name.replace(' ', '')}")
        self.process.start()
        child.close()  # the worker holds the only other end, so its death reads as end-of-file here

    def restart(self) -> None:
        self.conn.close()
        self.process.join(timeout=10)
        self.start()

    def send(self, kind: str, cell: Cell) -> None:
        """Hand the worker a cell to train or to probe, watching its memory from now on."""
        self.cell, self.peak, self.oom_kills = cell, 0, oom_kills()
        try:
            self.conn.send((kind, cell.to_json()))
        except OSError:  # the worker died while idle: the cell had not started, so it goes to a new worker
            self.restart()
            self.conn.send((kind, cell.to_json()))

    def busy_cell(self) -> Cell:
        """The cell the worker is on (a message or a death is read from busy workers only)."""
        if self.cell is None:
            raise RuntimeError(f"the worker on {self.place.name} has no cell")
        return self.cell

    def sample(self) -> None:
        self.peak = max(self.peak, process_tree_rss(self.process.pid))

    def death(self) -> str:
        """Why the worker ended, once its pipe is closed, with the memory it had reached."""
        self.process.join(timeout=10)
        code = self.process.exitcode
        if code is None or code >= 0:
            return f"exit code {code}"
        if code == -signal.SIGKILL:
            after = oom_kills()
            by_oom = after is not None and self.oom_kills is not None and after > self.oom_kills
            cause = "by the out-of-memory killer" if by_oom else "by SIGKILL"
            return f"killed {cause} at {gigabytes(self.peak)} of memory"
        return f"killed by {signal.Signals(-code).name}"

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            self.conn.send(None)
        self.process.join(timeout=10)
        if self.process.is_alive():
            self.process.kill()
        self.conn.close()


def run_pool(cells: Sequence[Cell], report: Callable[[Event], None], places: Sequence[Place],
             max_retries: int, known: dict[str, MemoryNeed] | None = None) -> None:
    """Train `cells` on one worker per place (at most one per cell), each taking the next cell when it is free
    and the cell's memory fits beside the running ones (`known`: needs from earlier runs, by memory key)."""
    if not cells:
        return
    relay = Relay(cells, report)
    todo = deque(cells)
    deaths: Counter[str] = Counter()
    placement = Placement(known or {}, report)
    slots = [Slot(place) for place in places[:len(cells)]]
    try:
        if len(slots) > 1:
            for cell in placement.unknown(todo):
                _probe_on(slots[0], cell, placement)
        while relay.pending:
            _fill(slots, todo, placement)
            busy = {slot.conn: slot for slot in slots if slot.cell is not None}
            ready = wait(list(busy), timeout=MONITOR_SECONDS)
            for slot in busy.values():
                slot.sample()
            for conn in ready:
                slot = busy[conn]  # type: ignore[index]  # `wait` returns the connections it was given
                _receive(slot, relay, todo, deaths, max_retries, placement)
    finally:
        for slot in slots:
            slot.stop()


def _probe_on(slot: Slot, cell: Cell, placement: Placement) -> None:
    """Measure one shape's need on `slot`'s worker while nothing else trains (a worker the probe's memory
    killed leaves what it reached as the need)."""
    slot.send("probe", cell)
    while not wait([slot.conn], timeout=MONITOR_SECONDS):
        slot.sample()
    try:
        _, _, payload = slot.conn.recv()
    except (EOFError, OSError):
        placement.learn(cell, MemoryNeed(slot.peak))
        slot.restart()
    else:
        placement.learn(cell, MemoryNeed(payload["host"], payload["accelerator"]), payload["accelerator_total"])
    slot.cell = None


def _fill(slots: list[Slot], todo: deque[Cell], placement: Placement) -> None:
    """Give each idle worker the next cell, while the cells' memory fits."""
    running = [(slot.cell, slot.gpu) for slot in slots if slot.cell is not None]
    for slot in slots:
        if slot.cell is not None or not todo:
            continue
        cell = placement.next_for(todo, slot.gpu, running)
        if cell is None:
            return
        slot.send("train", cell)
        running.append((cell, slot.gpu))


def _receive(slot: Slot, relay: Relay, todo: deque[Cell], deaths: Counter[str], max_retries: int,
             placement: Placement) -> None:
    """One message from a busy worker, or its death."""
    try:
        kind, cell_id, payload = slot.conn.recv()
    except (EOFError, OSError):
        _replace(slot, relay, todo, deaths, max_retries, placement)
        return
    getattr(relay, kind)(cell_id, payload)
    if kind == "finished":
        profile = payload.get("profile") or {}
        if profile:
            placement.learn(slot.busy_cell(), MemoryNeed(profile["peak_host_rss_bytes"],
                                                  profile["peak_accelerator_memory_bytes"]))
        slot.cell = None


def _replace(slot: Slot, relay: Relay, todo: deque[Cell], deaths: Counter[str], max_retries: int,
             placement: Placement) -> None:
    """The slot's worker died: start a new one; its cell runs again (placed with the memory it reached), or is
    lost after `max_retries`."""
    cell, why = slot.busy_cell(), slot.death()
    placement.learn(cell, MemoryNeed(slot.peak))
    slot.cell = None
    slot.restart()
    deaths[cell.cell_id] += 1
    if deaths[cell.cell_id] > max_retries:
        hint = "" if "out-of-memory" in why else "; a segfault or the out-of-memory killer (see the system log)"
        relay.lost(cell.cell_id, f"its worker process on {slot.place.name} died {deaths[cell.cell_id]} time(s), "
                                 f"last {why}{hint}")
    else:
        todo.appendleft(cell)
