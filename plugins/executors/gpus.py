"""`gpus`: every GPU of this machine busy — one worker process per GPU, or `cells_per_gpu` of them to pack
small cells (one ResNet18 cell uses about a tenth of an H100).

Each worker is a process forked from a server that has imported torch and mmbench but never touched CUDA
(multiprocessing's forkserver; spawned where there is none), so a new worker starts in a moment. It sees only
its GPU (`CUDA_VISIBLE_DEVICES`, set before CUDA starts, so a cell's `device: auto` or `cuda` is that GPU) and,
when the machine has a core per worker, its own slice of the CPUs, so data-loading workers sized to the machine
do not oversubscribe it. A worker trains one cell at a time and sends its start, epochs and result back to the
runner's process, which saves them. A worker that dies (a segfault, the kernel's out-of-memory killer) is
replaced and its cell retried up to `max_retries` times, then recorded failed with the exit signal. Choose the
GPUs with `CUDA_VISIBLE_DEVICES`.
"""

from __future__ import annotations

import contextlib
import functools
import multiprocessing
import os
import signal
import socket
from collections import Counter, deque
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection, wait
from pathlib import Path

from pydantic import Field

from mmbench.api import Cell, Event, Executor, ExecutorError, Params, Relay, hookimpl, run_cell


class GpusParams(Params):
    cells_per_gpu: int = Field(1, ge=1, le=64, description="cells trained at the same time on each GPU")
    max_retries: int = Field(1, ge=0, description="times a cell is re-run after its worker process died")


def visible_gpus() -> list[str]:
    """The GPUs this process may use, named as a child's `CUDA_VISIBLE_DEVICES` must name them."""
    import torch

    count = torch.cuda.device_count()
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is None:
        return [str(i) for i in range(count)]
    return [gpu.strip() for gpu in listed.split(",") if gpu.strip()][:count]


def cpu_slices(n: int) -> list[set[int] | None]:
    """Disjoint equal slices of this process's CPUs for `n` workers; no pinning when there are fewer CPUs."""
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if len(cpus) < n:
        return [None] * n
    size = len(cpus) // n
    return [set(cpus[i * size:(i + 1) * size]) for i in range(n)]


@functools.cache
def _start_method() -> multiprocessing.context.BaseContext:
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["mmbench.api"])  # imports torch, never initialises CUDA
    return context


def _worker(conn: Connection, gpu: str, cpus: set[int] | None) -> None:
    """A worker process: cells in, `Relay` messages out, until told to stop (None) or the runner is gone.

    Ctrl-C is left to the runner's process, which stops the workers itself.
    """
    os.environ["CUDA_VISIBLE_DEVICES"] = gpu  # before anything starts CUDA in this process
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if cpus:
        os.sched_setaffinity(0, cpus)
    where = f"{socket.gethostname()} pid {os.getpid()} gpu {os.environ['CUDA_VISIBLE_DEVICES']}"
    with contextlib.suppress(EOFError):
        while (cell := conn.recv()) is not None:
            cell_id = cell["cell_id"]
            conn.send(("started", cell_id, where))
            result = run_cell(cell, on_epoch=lambda stats: conn.send(("epoch", cell_id, stats.model_dump(mode="json"))))
            conn.send(("finished", cell_id, result.to_json()))


class _Slot:
    """One worker process on one GPU, and the cell it is training."""

    def __init__(self, gpu: str, cpus: set[int] | None) -> None:
        self.gpu, self.cpus = gpu, cpus
        self.cell: Cell | None = None
        self.start()

    def start(self) -> None:
        context = _start_method()
        self.conn, child = context.Pipe()
        # not a daemon: a cell's data loader starts processes of its own
        self.process = context.Process(target=_worker, args=(child, self.gpu, self.cpus), name=f"mmbench-gpu{self.gpu}")
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


class GpusExecutor(Executor):
    """One worker process per visible GPU (cells_per_gpu of them to pack small cells)."""

    name = "gpus"
    Params = GpusParams

    def __init__(self, params: GpusParams) -> None:
        super().__init__(params)
        self.gpus = visible_gpus()
        if not self.gpus:
            import torch

            raise ExecutorError(
                "executor 'gpus' found no GPU on this machine (torch.cuda.device_count() is 0; "
                f"CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', '(unset)')}; torch "
                f"{torch.__version__} built for CUDA {torch.version.cuda or '(none: a CPU-only build)'}). Run on "
                "a machine with NVIDIA GPUs, or use --executor local to train on this CPU")

    def run(self, cells: Sequence[Cell], report: Callable[[Event], None], registry, run_dir: Path) -> None:
        explicit = sorted({c.train.device for c in cells if c.train.device.startswith("cuda:")} - {"cuda:0"})
        if explicit:
            raise ExecutorError(f"executor 'gpus' shows each worker only its own GPU, as cuda:0; the grid asks for "
                                f"{', '.join(explicit)}: set train.device to auto or cuda")
        if not cells:
            return
        relay = Relay(cells, report)
        todo = deque(cells)
        deaths: Counter[str] = Counter()
        places = [gpu for gpu in self.gpus for _ in range(self.params.cells_per_gpu)][:len(cells)]
        slots = [_Slot(gpu, cpus) for gpu, cpus in zip(places, cpu_slices(len(places)))]
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
                        self._replace(slot, relay, todo, deaths)
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

    def _replace(self, slot: _Slot, relay: Relay, todo: deque[Cell], deaths: Counter[str]) -> None:
        """The slot's worker died: start a new one; its cell runs again, or is lost after `max_retries`."""
        cell, why = slot.cell, slot.death()
        slot.cell = None
        slot.restart()
        deaths[cell.cell_id] += 1
        if deaths[cell.cell_id] > self.params.max_retries:
            relay.lost(cell.cell_id, f"its worker process on GPU {slot.gpu} died {deaths[cell.cell_id]} time(s), "
                                     f"last {why}; a segfault or the out-of-memory killer (see the system log)")
        else:
            todo.appendleft(cell)


@hookimpl
def mmbench_executors():
    return [GpusExecutor]
