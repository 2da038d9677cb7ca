"""`gpus`: every GPU of this machine busy — one worker process per GPU, or `cells_per_gpu` of them to pack
small cells (one ResNet18 cell uses about a tenth of an H100).

Workers (`workers.py`: forked from a server that imported torch, replaced and retried when they die) each see
only their GPU (`CUDA_VISIBLE_DEVICES`, set before CUDA starts, so a cell's `device: auto` or `cuda` is that GPU)
and, when the machine has a core per worker, their own slice of the CPUs, so data-loading workers sized to the
machine do not oversubscribe it. Choose the GPUs with `CUDA_VISIBLE_DEVICES`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

from pydantic import Field

from mmbench.api import Params, hookimpl
from mmbench.api.running import Cell, Event, Executor, ExecutorError, stored_needs
from mmbench_plugins.executors.workers import Place, cpu_slices, run_pool


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


class GpusExecutor(Executor):
    """One worker process per visible GPU (cells_per_gpu of them to pack small cells)."""

    name = "gpus"
    Params = GpusParams
    params: GpusParams
    uses_worker_server = True  # workers.py forks its workers from it

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
        gpus = [gpu for gpu in self.gpus for _ in range(self.params.cells_per_gpu)][:len(cells)]
        places = [Place(f"gpu {gpu}", {"CUDA_VISIBLE_DEVICES": gpu}, cpus)
                  for gpu, cpus in zip(gpus, cpu_slices(len(gpus)), strict=True)]
        run_pool(cells, report, places, self.params.max_retries, stored_needs(cells, run_dir))


@hookimpl
def mmbench_executors():
    return [GpusExecutor]
