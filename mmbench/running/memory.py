"""How much memory a cell needs, how much the machine has, and whether the kernel's out-of-memory killer struck.

Executors that train cells side by side place them by memory as well as by cores: a cell's need is known from an
earlier run of a cell of the same shape (its stored profile) or measured by a probe, one training step on
generated inputs of the cell's shapes and batch size (`mmbench.running.worker.probe_cell`). Cells that would not
fit side by side then run one after another, and a worker the kernel killed for memory is named as such.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import psutil

from mmbench.rundir import RunStore
from mmbench.schema.cell import Cell, content_hash
from mmbench.schema.results import CellResult

#: the share of the free memory cells may take together (the rest: the runner, the page cache, other users)
USABLE_SHARE = 0.9


@dataclass(frozen=True)
class MemoryNeed:
    """The peak memory of a worker process training a cell: its resident host memory and, on an accelerator,
    the device memory it allocated."""

    host: int
    accelerator: int = 0


def memory_key(cell: Cell) -> str:
    """What a cell's memory depends on: its task, encoders, fusion and balancer, and the batch sizes and device.
    Seeds, learning rates and a balancer's coefficients do not change it, so tuned grids probe once a shape."""
    recipe = cell.train
    return content_hash({
        "task": cell.task.model_dump(mode="json"), "encoders": {m: e.model_dump(mode="json")
                                                                for m, e in cell.encoders.items()},
        "fusion": cell.fusion.model_dump(mode="json") if cell.fusion else None, "balancer": cell.balancer.name,
        "batch": [recipe.batch_size, recipe.eval_batch_size], "device": recipe.device, "bf16": recipe.bf16,
    })


def need_of(result: CellResult) -> MemoryNeed | None:
    """The memory a finished cell used, from its profile (None when it has none)."""
    if result.profile is None:
        return None
    return MemoryNeed(result.profile.peak_host_rss_bytes, result.profile.peak_accelerator_memory_bytes)


def stored_needs(cells: Iterable[Cell], run_dir: Path | None) -> dict[str, MemoryNeed]:
    """Memory key -> the largest need of the finished cells of that shape in the run directory."""
    if run_dir is None or not (Path(run_dir) / "cells").is_dir():
        return {}
    store, needs = RunStore(run_dir), dict[str, MemoryNeed]()
    for cell in cells:
        result = store.load(cell.cell_id)
        need = need_of(result) if result is not None else None
        if need is not None:
            needs[memory_key(cell)] = larger(needs.get(memory_key(cell)), need)
    return needs


def larger(a: MemoryNeed | None, b: MemoryNeed) -> MemoryNeed:
    return b if a is None else MemoryNeed(max(a.host, b.host), max(a.accelerator, b.accelerator))


def host_budget() -> int:
    """The host memory cells may take together: a share of what is free now, within this process's cgroup
    limit where it has one (a container, a Slurm job)."""
    free = psutil.virtual_memory().available
    limit, used = _cgroup_value("memory.max", "memory.limit_in_bytes"), _cgroup_value("memory.current",
                                                                                      "memory.usage_in_bytes")
    if limit is not None and used is not None and limit < psutil.virtual_memory().total:
        free = min(free, limit - used)
    return int(max(0, free) * USABLE_SHARE)


def process_tree_rss(pid: int) -> int:
    """Resident memory of a process and its children (a cell's data-loading workers); 0 once it is gone."""
    try:
        root = psutil.Process(pid)
        return sum(p.memory_info().rss for p in [root, *root.children(recursive=True)])
    except psutil.Error:
        return 0


def oom_kills() -> int | None:
    """How many processes the kernel's out-of-memory killer has ended in this process's cgroup (None where the
    kernel does not say)."""
    for name in ("memory.events", "memory.oom_control"):  # cgroup v2, v1
        for folder in _cgroup_folders():
            try:
                lines = (folder / name).read_text().splitlines()
            except OSError:
                continue
            for line in lines:
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    return int(value)
    return None


def gigabytes(n: int) -> str:
    return f"{n / 1e9:.1f} GB"


def _cgroup_folders() -> list[Path]:
    """This process's memory cgroup folder(s), innermost first (v2's unified tree, else v1's memory tree)."""
    folders: list[Path] = []
    try:
        entries = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return folders
    for entry in entries:
        _, controllers, path = entry.split(":", 2)
        base = Path("/sys/fs/cgroup") if controllers == "" else Path("/sys/fs/cgroup/memory")
        if controllers in ("", "memory") or "memory" in controllers.split(","):
            folders += [base / path.lstrip("/"), base]
    return [f for f in folders if f.is_dir()]


def _cgroup_value(v2: str, v1: str) -> int | None:
    for folder in _cgroup_folders():
        for name in (v2, v1):
            try:
                text = (folder / name).read_text().strip()
            except OSError:
                continue
            if text.isdigit():
                return int(text)
    return None
