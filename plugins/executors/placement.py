"""Which queued cell a free worker takes: cells are placed by memory as well as by cores.

Each cell's need (the peak memory of a worker training it) is known from an earlier run of a cell of the same shape,
or probed before any cell trains. The next cell in the queue starts only when its need fits beside the needs of
the cells already running (host memory, and its GPU's memory on a GPU); otherwise it waits for them, so cells
that would not fit side by side run one after another. The queue is never reordered, so a large cell is never
starved by small ones behind it; a cell that fits nowhere runs alone, with a line saying so.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable

from mmbench.api.running import Cell, Event, MemoryNeed, Notice, gigabytes, host_budget, larger, memory_key

#: the share of a GPU's memory that cells on it may take together
GPU_SHARE = 0.9


class Placement:
    """The memory each cell needs and the budget cells share (host memory, and per GPU)."""

    def __init__(self, known: dict[str, MemoryNeed], report: Callable[[Event], None],
                 budget: int | None = None) -> None:
        self.known = dict(known)
        self.report = report
        self.budget = host_budget() if budget is None else budget
        #: bytes the cells on one GPU may allocate together, once a probe on a GPU has told its size
        self.gpu_budget: int | None = None
        self._told: set[str] = set()

    def unknown(self, cells: Iterable[Cell]) -> list[Cell]:
        """One cell of each shape whose need is not known yet, in queue order (the cells to probe)."""
        found: dict[str, Cell] = {}
        for cell in cells:
            if not cell.skip_reason and memory_key(cell) not in self.known:
                found.setdefault(memory_key(cell), cell)
        return list(found.values())

    def learn(self, cell: Cell, need: MemoryNeed, gpu_total: int | None = None) -> None:
        """Record what a cell (a probe, a finished run, a worker that died) showed it needs."""
        key = memory_key(cell)
        self.known[key] = larger(self.known.get(key), need)
        if gpu_total:
            self.gpu_budget = int(gpu_total * GPU_SHARE)

    def need(self, cell: Cell) -> MemoryNeed:
        return self.known.get(memory_key(cell), MemoryNeed(0))

    def next_for(self, todo: deque[Cell], gpu: str | None, running: list[tuple[Cell, str | None]]) -> Cell | None:
        """The head of the queue if it fits beside `running` (cell, GPU) on a worker at `gpu`, else None (the
        worker waits). With nothing running it always starts, whatever it needs."""
        head = todo[0]
        need = self.need(head)
        host = sum(self.need(c).host for c, _ in running) + need.host
        device = sum(self.need(c).accelerator for c, g in running if g == gpu) + need.accelerator
        fits = host <= self.budget and (gpu is None or self.gpu_budget is None or device <= self.gpu_budget)
        if fits or not running:
            if not fits:
                self._tell(head, f"memory: {head.label()} needs about {gigabytes(need.host)}, more than the "
                                 f"{gigabytes(self.budget)} free for cells: it runs alone")
            return todo.popleft()
        beside = len(running)
        self._tell(head, f"memory: {head.label()} needs about {gigabytes(need.host)}"
                         + (f" and {gigabytes(need.accelerator)} of its GPU" if gpu is not None else "")
                         + f"; beside {beside} running cell(s) that is more than the {gigabytes(self.budget)} free "
                           "for cells, so cells of this shape wait and run one after another")
        return None

    def _tell(self, cell: Cell, text: str) -> None:
        """Say it once per shape of cell."""
        if memory_key(cell) not in self._told:
            self._told.add(memory_key(cell))
            self.report(Notice(text, cell))
