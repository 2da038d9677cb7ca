"""`ray`: each cell a Ray task with its resource request, on a Ray cluster or a Ray instance started here.

- Resources per cell: `num_cpus`, `num_gpus` (fractional packs cells on a GPU: 0.25 trains four per GPU; by
  default one GPU when the cluster has GPUs, else none) and `memory_gb` (Ray's logical memory, for scheduling).
- A cell whose worker died (the process killed, the node lost) is retried by Ray up to `max_retries` times,
  then recorded failed. An exception inside a cell is no death: `run_cell` turns it into a failed result.
- Each task sends its start and epochs through a small queue actor and returns its result; the runner saves
  every result as it arrives, so resume and publish read the run directory alone — Ray keeps nothing they need.
- Every node needs mmbench and the grid's plugins installed, and the prepared data at the same path (a shared
  filesystem).
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator

from mmbench.api import Params, hookimpl
from mmbench.api.running import Cell, Event, Executor, ExecutorError, Relay, run_cell


class RayParams(Params):
    address: str | None = Field(
        None, description="null: start a Ray instance on this machine (or reuse the one this process has "
                          "started); 'auto': the cluster this machine is part of (`ray start`); "
                          "'ray://HOST:10001': a remote cluster through Ray Client")
    num_cpus: float = Field(1.0, gt=0, description="CPUs per cell")
    num_gpus: float | None = Field(None, ge=0, description="GPUs per cell; below 1 packs cells on a GPU; "
                                                           "null: 1 when the cluster has GPUs, else 0")
    memory_gb: float | None = Field(None, gt=0, description="host memory per cell, for Ray's scheduling")
    max_retries: int = Field(3, ge=0, description="times a cell is re-run after its worker died")

    @field_validator("num_gpus")
    @classmethod
    def _whole_above_one(cls, value: float | None) -> float | None:
        if value is not None and value > 1 and not value.is_integer():
            raise ValueError(f"Ray takes fractions of one GPU or whole GPUs, not {value}")
        return value


def _train(cell: dict[str, Any], progress: Any) -> dict[str, Any]:
    """The Ray task: train one cell, sending its start and epochs to the runner's queue."""
    import ray

    def send(message: tuple) -> None:
        with contextlib.suppress(ray.exceptions.RayError):  # progress is best effort; the result is not
            progress.put(message)

    cell_id = cell["cell_id"]
    gpus = ",".join(map(str, ray.get_gpu_ids()))
    send(("started", cell_id, f"{socket.gethostname()} pid {os.getpid()}" + (f" gpu {gpus}" if gpus else "")))
    result = run_cell(cell, on_epoch=lambda stats: send(("epoch", cell_id, stats.model_dump(mode="json"))))
    return result.to_json()


class RayExecutor(Executor):
    """Each cell a Ray task (fractional GPUs, CPUs, memory); a cell whose worker died is retried."""

    name = "ray"
    Params = RayParams
    params: RayParams

    def run(self, cells: Sequence[Cell], report: Callable[[Event], None], registry, run_dir: Path) -> None:
        import ray

        if not cells:
            return
        started_here = not ray.is_initialized()
        if started_here:
            local = self.params.address is None
            try:
                ray.init(address=self.params.address, include_dashboard=False if local else None)
            except (ConnectionError, ValueError, RuntimeError) as exc:
                where = self.params.address or "a new instance on this machine"
                raise ExecutorError(f"executor 'ray' cannot start or reach Ray ({where}): {exc}") from None
        try:
            request = self._request(ray)
            if started_here and self.params.address is None:
                _check_fits(request, ray.cluster_resources())
            self._run(ray, cells, report, request)
        finally:
            if started_here:
                ray.shutdown()

    def _request(self, ray) -> dict[str, Any]:
        p = self.params
        gpus = p.num_gpus if p.num_gpus is not None else float(ray.cluster_resources().get("GPU", 0) > 0)
        request = {"num_cpus": p.num_cpus, "num_gpus": gpus}
        if p.memory_gb is not None:
            request["memory"] = int(p.memory_gb * 2**30)
        return request

    def _run(self, ray, cells: Sequence[Cell], report: Callable[[Event], None], request: dict[str, Any]) -> None:
        from ray.util.queue import Queue

        progress = Queue(actor_options={"num_cpus": 0})
        task = ray.remote(_train).options(**request, max_retries=self.params.max_retries, retry_exceptions=False)
        refs = {task.remote(cell.to_json(), progress): cell.cell_id for cell in cells}
        relay = Relay(cells, report)
        waiting = list(refs)
        try:
            while waiting:
                done, waiting = ray.wait(waiting, num_returns=len(waiting), timeout=0.25)
                for kind, cell_id, payload in progress.get_nowait_batch(progress.qsize()):
                    getattr(relay, kind)(cell_id, payload)
                for ref in done:
                    try:
                        relay.finished(refs[ref], ray.get(ref))
                    except ray.exceptions.RayError as exc:
                        relay.lost(refs[ref], f"its Ray task failed after {self.params.max_retries} retries: "
                                              f"{type(exc).__name__}: {str(exc).strip().splitlines()[0]}")
        finally:
            for ref in waiting:
                ray.cancel(ref, force=True)
            progress.shutdown(force=True)


#: a task option -> the name of its resource in `ray.cluster_resources()`
_RESOURCE = {"num_cpus": "CPU", "num_gpus": "GPU", "memory": "memory"}


def _check_fits(request: dict[str, Any], have: dict[str, float]) -> None:
    """On a Ray instance of this machine alone, a request larger than the machine would wait forever."""
    short = [f"{_RESOURCE[k]} {v:g} > {have.get(_RESOURCE[k], 0):g}" for k, v in request.items()
             if v > have.get(_RESOURCE[k], 0)]
    if short:
        raise ExecutorError(f"executor 'ray': each cell asks for more than this machine has ({'; '.join(short)}); "
                            "lower num_cpus, num_gpus or memory_gb")


@hookimpl
def mmbench_executors():
    return [RayExecutor]
