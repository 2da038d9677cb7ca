"""`EpochMeans`: per-epoch means of step values without a host sync per step."""

import pytest
import torch

from mmbench.testing import forbid_host_sync
from mmbench.training.accumulate import EpochMeans


def test_means_per_name_vectors_by_label_and_a_fresh_start_after_reading():
    stats = EpochMeans()
    with forbid_host_sync():
        stats.add("loss", torch.tensor(1.0))
        stats.add("loss", torch.tensor(4.0))
        stats.add("k", torch.tensor([1.0, 3.0]), labels=("fast", "slow"))
        stats.add("loss", torch.tensor(7.0))
    assert stats.read() == {"loss": 4.0, "k.fast": 1.0, "k.slow": 3.0}
    assert stats.read() == {}


def test_float64_values_keep_their_precision():
    stats = EpochMeans()
    tiny = torch.tensor(1e-12, dtype=torch.float64)
    for _ in range(3):
        stats.add("x", torch.tensor(1.0, dtype=torch.float64) + tiny)
    assert stats.read()["x"] == pytest.approx(1.0 + 1e-12, rel=0, abs=1e-15)


def test_a_value_added_is_not_aliased():
    stats, value = EpochMeans(), torch.tensor(2.0)
    stats.add("x", value)
    value.add_(10.0)
    stats.add("x", torch.tensor(4.0))
    assert stats.read() == {"x": 3.0}
