"""Where a task's prepared data lives: the one place that resolves a data root.

Order: an explicit argument (the command line's `--data-root`), the grid task's `root` (that task's own
folder), the grid's `data_root`, the `MMBENCH_DATA` environment variable, then the per-user cache
(`$XDG_CACHE_HOME/mmbench/data`, default `~/.cache/mmbench/data`). Every source but a task's own `root`
names a parent folder that holds each task under its name.
"""

from __future__ import annotations

import os
from pathlib import Path

ENVIRONMENT_VARIABLE = "MMBENCH_DATA"


def default_data_root() -> Path:
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "mmbench" / "data"


def data_parent(explicit: str | Path | None = None, grid_data_root: str | None = None) -> Path:
    """The folder holding every prepared task, from the first source that names one."""
    for source in (explicit, grid_data_root, os.environ.get(ENVIRONMENT_VARIABLE)):
        if source:
            return Path(source).expanduser()
    return default_data_root()


def resolve_data_root(task: str, explicit: str | Path | None = None, task_root: str | None = None,
                      grid_data_root: str | None = None) -> Path:
    """The prepared-data folder of `task`."""
    if task_root and not explicit:
        return Path(task_root).expanduser()
    return data_parent(explicit, grid_data_root) / task
