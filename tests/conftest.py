"""Shared fixtures: a tiny synthetic grid and helpers to run it through the real CLI code paths."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from mmbench import registry as registry_lib

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
