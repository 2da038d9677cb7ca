"""The worker entry point: one serialised cell in, one `CellResult` out, in whatever process runs it.

Executors call `run_cell` (in-process, in a worker process, in a Ray task or a Slurm job); it loads the plugins
of its own process, trains, and never raises for a failing cell: every outcome becomes a result.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import traceback
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from mmbench import registry as registry_lib
from mmbench.contract.errors import DataError, Incompatible
from mmbench.running.memory import MemoryNeed
from mmbench.schema.cell import Cell
from mmbench.schema.results import CellProfile, CellResult, EpochRecord, ErrorInfo
from mmbench.training import profiling
from mmbench.training.engine import CellComponents, train


def components_of(cell: Cell, registry: registry_lib.Registry) -> CellComponents:
    """Resolve a cell's names and parameters through the registry of this process."""
    task = registry.resolve("tasks", cell.task.name, cell.task.params)
    instance = task.cls(task.params, root=Path(cell.data_root) if cell.data_root else None)
    if not cell.task.fake and instance.fingerprint() != cell.task.fingerprint:
        raise DataError(f"the prepared {cell.task.name!r} data at {cell.data_root} changed since the grid was "
                        f"expanded (fingerprint {instance.fingerprint()!r}, expected {cell.task.fingerprint!r})")

    def resolved(kind: str, spec) -> tuple[type, Any]:
        r = registry.resolve(kind, spec.name, spec.params)
        return r.cls, r.params

    return CellComponents(
        task=instance,
        encoders={m: resolved("encoders", spec) for m, spec in cell.encoders.items()},
        fusion=resolved("fusions", cell.fusion) if cell.fusion else None,
        balancer=resolved("balancers", cell.balancer),
        fake_data=bool(cell.task.fake),
    )


def _providers(cell: Cell, registry: registry_lib.Registry) -> dict[str, registry_lib.Component]:
    """Each component of the cell, by its place in the cell (`task`, `fusion`, `balancer`, `encoders.<modality>`)
    -> the registry's record of it: the plugin, distribution and version that provided it."""
    named = {"task": ("tasks", cell.task), "fusion": ("fusions", cell.fusion), "balancer": ("balancers", cell.balancer),
             **{f"encoders.{m}": ("encoders", spec) for m, spec in cell.encoders.items()}}
    return {place: registry.components[kind][spec.name] for place, (kind, spec) in named.items()
            if spec is not None and spec.name in registry.components[kind]}


def _environment(cell: Cell, registry: registry_lib.Registry) -> dict[str, Any]:
    """The cell's environment, with the distributions of its components: `plugins`, distribution -> version, and
    `providers`, each component's place -> its distribution, so that a board credits each to its own package."""
    providers = _providers(cell, registry)
    return {**profiling.environment({c.distribution: c.version for c in providers.values()}),
            "providers": {place: c.distribution for place, c in providers.items()}}


#: the first line of a balancer's module docstring that names its differences from (or departures from) the
#: official code or its reference implementation: "Differences from the official code, and why:" and the like
DEPARTURES = re.compile(r"^.*\b(differ(ences?|s)?|depart(ures?|s)?)\b.*$", re.IGNORECASE | re.MULTILINE)


def balancer_notes(cell: Cell, registry: registry_lib.Registry) -> str | None:
    """Where the cell's balancer departs from its official code: its module's docstring from the line that names
    the differences to the end (None when it names none), so the method pages need no plugin."""
    if cell.balancer.name not in registry.components["balancers"]:
        return None
    return departures(registry.get("balancers", cell.balancer.name).cls)


def departures(balancer: type) -> str | None:
    """The balancer module's docstring from the line that names its differences from the official code."""
    doc = inspect.getdoc(inspect.getmodule(balancer)) or ""
    found = DEPARTURES.search(doc)
    return doc[found.start():].strip() if found else None


def _error(exc: BaseException) -> ErrorInfo:
    return ErrorInfo(type=type(exc).__name__, message=str(exc), traceback=traceback.format_exc())


def run_cell(cell: Cell | Mapping[str, Any], registry: registry_lib.Registry | None = None,
             on_epoch: Callable[[EpochRecord], None] | None = None) -> CellResult:
    """Train one cell and return its result, whatever happens (a skip, a crash, out of memory, divergence)."""
    cell = cell if isinstance(cell, Cell) else Cell.model_validate(cell)
    registry = registry or registry_lib.default()
    base = {**cell.result_fields(), "env": _environment(cell, registry),
            "balancer_notes": balancer_notes(cell, registry)}
    if cell.skip_reason:
        return CellResult(**base, status="skipped", reason=cell.skip_reason)
    try:
        outcome = train(components_of(cell, registry), cell.train, cell.seed, on_epoch_end=on_epoch,
                        evaluate_test=not cell.is_trial)
    except Incompatible as exc:
        return CellResult(**base, status="skipped", reason=str(exc))
    except (torch.OutOfMemoryError, MemoryError) as exc:
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        return CellResult(**base, status="failed", reason=f"out of memory: {exc}".strip(), error=_error(exc))
    except Exception as exc:  # noqa: BLE001 -- a failing cell is a result, never the end of the grid
        return CellResult(**base, status="failed", reason=f"{type(exc).__name__}: {exc}", error=_error(exc))
    diverged = outcome.status == "diverged"
    return CellResult(
        **base,
        status=outcome.status,
        reason=f"non-finite {outcome.divergence} in epoch {outcome.diverged_epoch}" if diverged else None,
        error=ErrorInfo(type="NonFiniteLoss", message=f"non-finite {outcome.divergence}",
                        epoch=outcome.diverged_epoch) if diverged else None,
        best_epoch=outcome.best_epoch,
        selection=f"best validation {cell.scoring.primary_metric} over epochs",
        test=outcome.test,
        val=outcome.val,
        history=outcome.history,
        profile=CellProfile(**outcome.profile),
    )


def probe_cell(cell: Cell | Mapping[str, Any], registry: registry_lib.Registry | None = None) -> MemoryNeed:
    """The memory one training step of `cell` takes in this process: a step on generated inputs of the cell's
    shapes at its batch size, then a validation batch (what a worker's peak is made of). A cell that cannot be
    built needs nothing: its real run records why."""
    cell = cell if isinstance(cell, Cell) else Cell.model_validate(cell)
    registry = registry or registry_lib.default()
    if cell.skip_reason:
        return MemoryNeed(0)
    recipe = cell.train.model_copy(update={"epochs": 1})
    sizes = {"train": recipe.batch_size, "val": recipe.eval_batch_size or recipe.batch_size}
    try:
        components = dataclasses.replace(components_of(cell.model_copy(update={"task": cell.task.model_copy(
            update={"fake": True})}), registry), fake_data=True, fake_sizes=sizes)
        outcome = train(components, recipe, cell.seed, evaluate_test=False)
    except Exception:  # noqa: BLE001 - whatever the cell's real run will meet, it records itself
        return MemoryNeed(0)
    return MemoryNeed(outcome.profile["peak_host_rss_bytes"], outcome.profile["peak_accelerator_memory_bytes"])


def main(argv: list[str] | None = None) -> None:
    """`python -m mmbench.running.worker CELL.json RESULT.json`: run one serialised cell in a fresh process."""
    import sys

    from mmbench.files import atomic_write_json

    cell_path, result_path = argv if argv is not None else sys.argv[1:]
    cell = Cell.model_validate_json(Path(cell_path).read_text())
    atomic_write_json(Path(result_path), run_cell(cell).to_json())


if __name__ == "__main__":
    main()
