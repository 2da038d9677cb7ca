"""What `validate` checks beyond the grid itself: each prepared root the grid reads is one its cells can train on.

`expand` already refuses a root that is missing or unprepared (its fingerprint); a root can still be prepared and
unusable, e.g. a partial copy whose stratified hold-out left the validation split empty. That is what the task's
own `check()` (the same one `mmbench data check` runs) finds, and it is cheaper to hear it before the first cell
than from every cell of the grid.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mmbench.data.roots import resolve_data_root
from mmbench.registry import Registry, plugin_code
from mmbench.running.grid import Grid


@dataclass(frozen=True)
class RootProblems:
    task: str
    root: Path
    problems: list[str]


def data_problems(grid: Grid, registry: Registry, data_root: str | Path | None = None) -> list[RootProblems]:
    """The problems `check()` reports for each prepared root the grid's tasks read (roots without any are left out)."""
    found = []
    for task_ref in grid.tasks:
        resolved = registry.resolve("tasks", task_ref.name, task_ref.params)
        if not resolved.cls.needs_data:
            continue
        root = resolve_data_root(task_ref.name, data_root, task_ref.root, grid.data_root)
        with plugin_code(resolved.component, "in check()"):
            problems = resolved.cls(resolved.params, root=root).check()
        if problems:
            found.append(RootProblems(task_ref.name, root, problems))
    return found
