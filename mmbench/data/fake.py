"""`--fake-data`: generated tensors of a task's prepared shapes, so any grid runs without its data.

A fake run is a smoke test of the whole path (plugins, shapes, the engine, every balancer's hooks) and never a
result, so it does the least the engine allows: each cell of the grid's first seed trains one epoch of one
step on `FAKE_SIZES` samples drawn by `Task.fake_sample` (batches of `FAKE_BATCH`), with every encoder built
from its `Encoder.fake_params` (small and randomly initialised where the grid's would download weights or be
too large for a CPU smoke run).
Cells carry `task.fake = true`, so their ids and benchmark versions differ from real ones; leaderboards say so
and `mmbench publish` refuses them.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch.utils.data import Dataset

from mmbench.contract.task import Task

#: two training samples: batch normalisation of a vector (e.g. in the gmu fusion) needs more than one
FAKE_SIZES = {"train": 2, "val": 1, "test": 1}
FAKE_BATCH = 2
FAKE_EPOCHS = 1


class FakeSamples(Dataset):
    """`size` samples of `task.fake_sample`, fixed at construction."""

    def __init__(self, task: Task, size: int, generator: torch.Generator) -> None:
        self.samples = [task.fake_sample(generator) for _ in range(size)]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict:
        return self.samples[index]


def fake_splits(task: Task, seed: int, sizes: Mapping[str, int] = FAKE_SIZES) -> dict[str, Dataset]:
    generator = torch.Generator().manual_seed(seed)
    return {split: FakeSamples(task, size, generator) for split, size in sizes.items()}
