"""Per-epoch means of what a training step measures, kept on the device and read once per epoch."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


class EpochMeans:
    """Sums of named step values on the device (no host sync per step), read as means once per epoch.

        self.stats = EpochMeans()
        self.stats.add("loss", loss)                      # a scalar
        self.stats.add("k", k, labels=modalities)         # a vector: reported as k.<modality>
        return self.stats.read()                          # {"loss": ..., "k.fast": ..., ...}, then starts over

    Each name is averaged over the steps that added it. Float64 values stay float64; others are summed in
    float32.
    """

    def __init__(self) -> None:
        self._sums: dict[str, Tensor] = {}
        self._counts: dict[str, int] = {}
        self._labels: dict[str, tuple[str, ...] | None] = {}

    def add(self, name: str, value: Tensor, labels: Sequence[str] | None = None) -> None:
        value = value.detach()
        value = value if value.dtype == torch.float64 else value.float()
        if name in self._sums:
            self._sums[name] += value
        else:
            self._sums[name] = value.clone()
            self._labels[name] = tuple(labels) if labels is not None else None
        self._counts[name] = self._counts.get(name, 0) + 1

    def read(self) -> dict[str, float]:
        """The means since the last read (one host read for all of them), then an empty start."""
        if not self._sums:
            return {}
        means = [(total / self._counts[name]).double().reshape(-1) for name, total in self._sums.items()]
        device = means[0].device
        values = iter(torch.cat([m.to(device) for m in means]).tolist())
        out: dict[str, float] = {}
        for name in self._sums:
            labels = self._labels[name]
            if labels is None:
                out[name] = next(values)
            else:
                out.update({f"{name}.{label}": next(values) for label in labels})
        self._sums, self._counts, self._labels = {}, {}, {}
        return out
