"""What flows through a training step: a `Batch` of inputs and labels, and a forward pass's `ModelOutput`."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

#: a modality's input for one sample or batch: a tensor, or a small mapping of tensors (e.g. ids and a mask)
Inputs = Tensor | Mapping[str, Tensor]


@dataclass
class Batch(Mapping):
    """One batch as the engine hands it to the model and the balancer hooks.

    `inputs` holds each modality's inputs, `label` the targets, and `views` the task's augmented views of the
    inputs, only for balancers that require them (`Requirements.augmented_views`). `meta` holds per-sample
    tensors `(B, ...)` about where the samples come from: `index` (their position in the split) in a training
    epoch that a balancer composed (`Balancer.epoch_data`) and in `TrainContext.split_batches`, and `tag`, the
    tag the balancer gave each sample. A batch also reads as the mapping `{modality: inputs, ..., "label": label}`
    that datasets yield, so `batch["label"]` and `ctx.model(batch)` work as well as `batch.label` and
    `ctx.model(batch.inputs)`.
    """

    inputs: dict[str, Inputs]
    label: Tensor
    views: dict[str, Inputs] = field(default_factory=dict)
    meta: dict[str, Tensor] = field(default_factory=dict)

    def __getitem__(self, key: str) -> Inputs:
        return self.label if key == "label" else self.inputs[key]

    def __iter__(self) -> Iterator[str]:
        return iter((*self.inputs, "label"))

    def __len__(self) -> int:
        return len(self.inputs) + 1

    def to(self, device: torch.device) -> Batch:
        return self.apply(lambda t: t.to(device, non_blocking=True))

    def pin_memory(self) -> Batch:
        """Page-locked copies, so `to(device)` copies asynchronously (the DataLoader calls this on CUDA)."""
        return self.apply(Tensor.pin_memory)

    def apply(self, fn: Callable[[Tensor], Tensor]) -> Batch:
        """This batch with `fn` applied to every tensor it holds."""
        return Batch(_map(self.inputs, fn), fn(self.label), _map(self.views, fn), _map(self.meta, fn))


def _map(value: Any, fn: Callable[[Tensor], Tensor]) -> Any:
    if isinstance(value, Mapping):
        return {k: _map(v, fn) for k, v in value.items()}
    return fn(value)


@dataclass
class ModelOutput:
    """Everything one forward pass offers the engine and the balancers; `dropped` names the modalities the
    pass was run without (missing-modality and unimodal evaluation)."""

    logits: Tensor | None  # None without a fusion (a balancer that forms its own predictions)
    features: dict[str, Tensor]
    contributions: dict[str, Tensor] = field(default_factory=dict)
    unimodal: dict[str, Tensor] = field(default_factory=dict)
    dropped: frozenset[str] = frozenset()
    #: what the fusion read (pooled features, or token sequences for a fusion over tokens)
    fusion_inputs: dict[str, Tensor] = field(default_factory=dict)

    def fused_logits(self) -> Tensor:
        """The fused logits, or an error that names the fix when the cell has no fusion."""
        if self.logits is None:
            raise RuntimeError("this forward pass has no fused logits: a balancer that forms its own predictions "
                               "(Requirements.ignores_fusion) overrides loss() and eval_logits()")
        return self.logits
