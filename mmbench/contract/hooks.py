"""pluggy hook specifications: how a plugin contributes components and observes runs.

A plugin is a module (registered under the `mmbench` entry-point group) with functions marked
`@hookimpl` whose names match the specifications below.
"""

from __future__ import annotations

from typing import Any

import pluggy

PROJECT = "mmbench"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def mmbench_encoders() -> list[type]:
    """Encoder classes this plugin provides."""


@hookspec
def mmbench_fusions() -> list[type]:
    """Fusion classes this plugin provides."""


@hookspec
def mmbench_balancers() -> list[type]:
    """Balancer classes this plugin provides."""


@hookspec
def mmbench_tasks() -> list[type]:
    """Task classes this plugin provides."""


@hookspec
def mmbench_executors() -> list[type]:
    """Executor classes this plugin provides (where and how a grid's cells run; see `mmbench.running`)."""


@hookspec
def mmbench_cell_started(cell: dict[str, Any]) -> None:
    """A cell (one training run) is about to train; `cell` is its JSON-able description."""


@hookspec
def mmbench_epoch_end(cell: dict[str, Any], stats: dict[str, Any]) -> None:
    """A cell finished an epoch; `stats` holds losses, validation metrics and balancer coefficients."""


@hookspec
def mmbench_cell_finished(cell: dict[str, Any], result: dict[str, Any]) -> None:
    """A cell has a result (any status), already written to the run directory."""
