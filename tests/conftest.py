"""Shared fixtures: a tiny synthetic grid, helpers to run it through the real CLI code paths, and a spy on executors."""

from __future__ import annotations

import json
import os
import re
import signal
import textwrap
from pathlib import Path

import pytest

from mmbench import registry as registry_lib
from mmbench.running.executors import CellFinished, CellStarted, EpochEnded, Executor
from mmbench.schema.params import NoParams

TINY_GRID = textwrap.dedent("""\
    name: tiny
    tasks:
      - name: synthetic
        params: {train_size: 128, val_size: 64, test_size: 64}
    encoders:
      - "*": {name: mlp, params: {hidden: 16, layers: 2, out_dim: 8}}
    fusions: [concat, sum]
    balancers: [joint]
    train:
      epochs: 2
      batch_size: 32
      optimizer: {name: sgd, lr: 0.05}
      device: cpu
    seeds: [0, 1]
    """)


@pytest.fixture(scope="session")
def registry() -> registry_lib.Registry:
    return registry_lib.default()


@pytest.fixture
def tiny_grid_file(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY_GRID)
    return path


def results_without_timings(run_dir: Path) -> dict[str, dict]:
    """Each result file of a run directory as JSON, without what two runs of one cell never share: its
    timings and memory (`profile`) and its creation time."""
    out = {}
    for path in sorted((Path(run_dir) / "cells").glob("*.json")):
        data = json.loads(path.read_text())
        del data["profile"], data["created_at"]
        out[path.stem] = data
    return out


class Spy(Executor):
    """Wraps an executor, recording the events it reports. With `kill_at_epoch`, SIGKILLs the worker of the first
    cell that reports that epoch (its pid read from the cell's `CellStarted.where`)."""

    name = "spy"

    def __init__(self, inner: Executor, kill_at_epoch: int | None = None) -> None:
        super().__init__(NoParams())
        self.inner, self.kill_at_epoch = inner, kill_at_epoch
        self.events: list = []
        self.killed: list[tuple[str, int]] = []
        self._pids: dict[str, int] = {}

    def run(self, cells, report, registry, run_dir) -> None:
        def spy(event) -> None:
            self.events.append(event)
            self.observe(event)
            report(event)

        self.inner.run(cells, spy, registry, run_dir)

    def observe(self, event) -> None:
        if self.kill_at_epoch is None:
            return
        if isinstance(event, CellStarted):
            self._pids[event.cell.cell_id] = int(re.search(r"pid (\d+)", event.where)[1])
        if isinstance(event, EpochEnded) and event.stats.epoch == self.kill_at_epoch and not self.killed:
            pid = self._pids[event.cell.cell_id]
            os.kill(pid, signal.SIGKILL)
            self.killed.append((event.cell.cell_id, pid))

    def story(self, cell_id: str) -> list[str]:
        """One cell's events in order, e.g. ['started', 'epoch 0', 'epoch 1', 'finished ok']."""
        words = {CellStarted: lambda e: "started", EpochEnded: lambda e: f"epoch {e.stats.epoch}",
                 CellFinished: lambda e: f"finished {e.result.status}"}
        return [words[type(e)](e) for e in self.events if e.cell.cell_id == cell_id]


def assert_failed_mid_cell(story: list[str], epochs: int) -> None:
    """A cell killed after its first epoch ended failed before its last. Epochs the worker sent before the kill
    landed may still arrive after epoch 0 (the runner reads its workers while they train), so more than one
    epoch may be told."""
    told = len(story) - 2
    assert story == ["started"] + [f"epoch {i}" for i in range(told)] + ["finished failed"]
    assert 1 <= told < epochs
