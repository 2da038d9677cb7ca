"""From a task's splits to the batches the engine trains and evaluates on.

The training split is read through `TrainSamples`: the balancer's composition of each epoch (which samples, how
often, with which tag: `Balancer.epoch_data`) and the task's augmented views for balancers that need them, drawn
anew every epoch from the cell's seed. Every pass over it is in an order drawn from the cell's generator, so the
order (and with it the results) does not depend on how many processes load the data. `Prefetcher` hands the
engine each batch on the device, with the task's device-side work done (`Task.on_device`), the next batch copied
while the current one trains.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence, Sized
from typing import Any, NamedTuple

import torch
from torch.utils.data import DataLoader, Dataset, Sampler, default_collate

from mmbench.contract.balancer import EpochData
from mmbench.contract.batch import Batch
from mmbench.contract.task import Task


class Sampled(NamedTuple):
    """One training sample as the engine reads it (or, from a dataset that fetches whole batches, one batch):
    the sample `{modality: inputs, ..., "label": y}`, its augmented views and its `Batch.meta`."""

    sample: Mapping[str, Any]
    views: Mapping[str, Any]
    meta: Mapping[str, torch.Tensor]


def collate(samples: Sequence[Any] | Mapping[str, Any] | Sampled) -> Batch:
    """Samples (`{modality: inputs, ..., "label": y}`, or `Sampled`) -> one `Batch`.

    A dataset that fetches whole batches (`__getitems__`, e.g. `TensorDictDataset`) hands over one mapping (or
    one `Sampled`) of stacked tensors instead of a list; it becomes the batch as it is.
    """
    if isinstance(samples, Sampled):
        inputs = dict(samples.sample)
        return Batch(inputs, inputs.pop("label"), dict(samples.views), dict(samples.meta))
    if isinstance(samples, Mapping):
        inputs = dict(samples)
        return Batch(inputs, inputs.pop("label"))
    rows: list[Any] = list(samples)
    if isinstance(rows[0], Sampled):
        sample = default_collate([s.sample for s in rows])
        label = sample.pop("label")
        return Batch(sample, label, default_collate([s.views for s in rows]), default_collate([s.meta for s in rows]))
    stacked = default_collate(rows)
    label = stacked.pop("label")
    return Batch(stacked, label)


def reseed(dataset: Dataset, seed: int, epoch: int) -> None:
    """Tell a split the cell's seed and the epoch, when it draws random choices per sample (`reseed`)."""
    hook = getattr(dataset, "reseed", None)
    if callable(hook):
        hook(seed, epoch)


class TrainSamples(Dataset):
    """The training split as one epoch reads it (see the module docstring)."""

    def __init__(self, base: Dataset, task: Task, seed: int, views: bool) -> None:
        self.base, self.task, self.seed, self.views = base, task, seed, views
        self.epoch = 0
        self.plan: EpochData | None = None

    def start_epoch(self, epoch: int, plan: EpochData | None) -> None:
        self.epoch, self.plan = epoch, plan
        reseed(self.base, self.seed, epoch)

    def __len__(self) -> int:
        return len(self.plan.indices) if self.plan is not None else len(self.base)  # type: ignore[arg-type]

    def _meta(self, position: int) -> dict[str, torch.Tensor]:
        if self.plan is None:
            return {}
        meta = {"index": torch.tensor(self.plan.indices[position])}
        if self.plan.tags is not None:
            meta["tag"] = torch.tensor(self.plan.tags[position])
        return meta

    def __getitem__(self, position: int) -> Sampled:
        index = self.plan.indices[position] if self.plan is not None else position
        sample = self.base[index]
        views = {}
        if self.views:
            generator = torch.Generator().manual_seed(hash((self.seed, self.epoch, position)) & 0x7FFFFFFF)
            views = {m: self.task.augment(m, sample[m], generator) for m in self.task.modalities}
        return Sampled(sample, views, self._meta(position))

    @property
    def fetches_batches(self) -> bool:
        return not self.views and callable(getattr(self.base, "__getitems__", None))

    def __getitems__(self, positions: list[int]) -> Sampled | list[Sampled]:
        """A whole batch at once from a split that fetches batches (one indexing, not a stack of samples)."""
        if not self.fetches_batches:
            return [self[p] for p in positions]
        indices = [self.plan.indices[p] for p in positions] if self.plan is not None else positions
        metas = [self._meta(p) for p in positions]
        fetched = self.base.__getitems__(indices)  # type: ignore[attr-defined]
        if not isinstance(fetched, Mapping):  # a list of samples (e.g. a Subset's), not one stacked batch
            return [Sampled(sample, {}, meta) for sample, meta in zip(fetched, metas, strict=True)]
        return Sampled(fetched, {}, {k: torch.stack([m[k] for m in metas]) for k in (metas[0] if metas else {})})


class Shuffle(Sampler[int]):
    """A fresh order of the training split each epoch: one permutation drawn from the cell's generator per pass.

    torch's `RandomSampler` draws a second, empty permutation when a pass is read past its last batch, which a
    loader with worker processes does (it fetches ahead) and the engine's own loop does not; the next epoch's
    order would then depend on the worker count. This draws exactly one, the same one `RandomSampler` draws first.
    """

    def __init__(self, samples: Sized, generator: torch.Generator) -> None:
        self.samples, self.generator = samples, generator

    def __len__(self) -> int:
        return len(self.samples)

    def __iter__(self) -> Iterator[int]:
        yield from torch.randperm(len(self.samples), generator=self.generator).tolist()


class TagBatches(Sampler[list[int]]):
    """Batches of one tag each (`EpochData.group_by_tag`): each tag's samples shuffled and cut into batches, the
    batches of all tags shuffled together; all from the cell's generator."""

    def __init__(self, samples: TrainSamples, batch_size: int, generator: torch.Generator) -> None:
        self.samples, self.batch_size, self.generator = samples, batch_size, generator

    def _batches(self) -> list[list[int]]:
        plan = self.samples.plan
        tags = plan.tags if plan is not None and plan.tags is not None else [0] * len(self.samples)
        batches = []
        for tag in sorted(set(tags)):
            members = [p for p, t in enumerate(tags) if t == tag]
            order = torch.randperm(len(members), generator=self.generator).tolist()
            members = [members[i] for i in order]
            batches += [members[i:i + self.batch_size] for i in range(0, len(members), self.batch_size)]
        return [batches[i] for i in torch.randperm(len(batches), generator=self.generator).tolist()]

    def __len__(self) -> int:
        plan = self.samples.plan
        tags = plan.tags if plan is not None and plan.tags is not None else [0] * len(self.samples)
        return sum(-(-list(tags).count(t) // self.batch_size) for t in set(tags))

    def __iter__(self) -> Iterator[list[int]]:
        yield from self._batches()


class Prefetcher:
    """The batches of a loader on the device, each finished by the task (`Task.on_device`).

    On CUDA the next batch is copied (from pinned memory, non-blocking) and finished on a side stream while the
    current one trains, and the training stream waits for it only when it takes it; on the CPU each batch is
    finished when it is taken.
    """

    def __init__(self, loader: DataLoader, device: torch.device, finish: Callable[[Batch], Batch]) -> None:
        self.loader, self.device, self.finish = loader, device, finish

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[Batch]:
        if self.device.type != "cuda":
            for raw in self.loader:
                yield self.finish(raw.to(self.device))
            return
        side = torch.cuda.Stream(self.device)
        pending = None
        for raw in self.loader:
            with torch.cuda.stream(side):
                ready = self.finish(raw.to(self.device))
            if pending is not None:
                yield self._take(pending, side)
            pending = ready
        if pending is not None:
            yield self._take(pending, side)

    @staticmethod
    def _take(batch: Batch, side: torch.cuda.Stream) -> Batch:
        current = torch.cuda.current_stream()
        current.wait_stream(side)

        def used_here(tensor: torch.Tensor) -> torch.Tensor:
            tensor.record_stream(current)  # the side stream's allocator keeps it while this stream reads it
            return tensor

        return batch.apply(used_here)


def train_loader(samples: TrainSamples, batch_size: int, generator: torch.Generator,
                 options: Mapping[str, Any]) -> DataLoader:
    """The loader of one epoch over `samples` (rebuilt when a balancer composes the epoch)."""
    common = {"collate_fn": collate, "generator": generator, **options}
    plan = samples.plan
    if plan is not None and plan.group_by_tag:
        return DataLoader(samples, batch_sampler=TagBatches(samples, batch_size, generator), **common)
    return DataLoader(samples, batch_size=batch_size, sampler=Shuffle(samples, generator), **common)


class Listed(Dataset):
    """Listed positions of a split, in the listed order, each sample with its position (`Batch.meta["index"]`)."""

    def __init__(self, base: Dataset, indices: Sequence[int]) -> None:
        self.base, self.indices = base, indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, position: int) -> Sampled:
        index = self.indices[position]
        return Sampled(self.base[index], {}, {"index": torch.tensor(index)})


class CellData:
    """A cell's splits as the engine and the balancer read them: each training epoch (composed by the balancer or
    not), evaluation passes, and a balancer's own passes; every batch on the device, finished by the task."""

    def __init__(self, task: Task, splits: Mapping[str, Dataset], batch_size: int, eval_batch_size: int,
                 generator: torch.Generator, seed: int, device: torch.device, views: bool,
                 options: Mapping[str, Any]) -> None:
        self.task, self.splits, self.device, self.options = task, splits, device, options
        self.batch_size, self.eval_batch_size, self.generator = batch_size, eval_batch_size, generator
        self.train = TrainSamples(splits["train"], task, seed, views)
        self._loader = train_loader(self.train, batch_size, generator, options)
        self._composed = False

    def epoch(self, epoch: int, plan: EpochData | None) -> Prefetcher:
        """The training batches of `epoch`, as `plan` composes it (None: every sample once)."""
        self.train.start_epoch(epoch, plan)
        if plan is not None or self._composed:  # a composed epoch has its own length and sampler
            self._loader = train_loader(self.train, self.batch_size, self.generator, self.options)
        self._composed = plan is not None
        return Prefetcher(self._loader, self.device, lambda batch: self.task.on_device(batch, True))

    def evaluation(self, split: str) -> Prefetcher:
        """A split as evaluation reads it: in order, at the evaluation batch size."""
        loader = DataLoader(self.splits[split], batch_size=self.eval_batch_size, shuffle=False, collate_fn=collate,
                            **self.options)
        return self._finished(loader)

    def split_batches(self, split: str, indices: Sequence[int] | None = None,
                      batch_size: int | None = None) -> Prefetcher:
        """A balancer's own pass over a split (`TrainContext.split_batches`)."""
        base = self.splits[split]
        listed = Listed(base, range(len(base)) if indices is None else indices)  # type: ignore[arg-type]
        loader = DataLoader(listed, batch_size=batch_size or self.eval_batch_size, shuffle=False, collate_fn=collate,
                            **self.options)
        return self._finished(loader, training=split == "train")

    def _finished(self, loader: DataLoader, training: bool = False) -> Prefetcher:
        return Prefetcher(loader, self.device, lambda batch: self.task.on_device(batch, training))
