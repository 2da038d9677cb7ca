"""`Task`: a dataset plus its task definition, and `ModalitySpec`, one of its input modalities."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor
from torch.utils.data import Dataset

from mmbench.contract.batch import Batch
from mmbench.schema.params import NoParams
from mmbench.schema.params import Params as AnyParams  # `Params` is each class's own attribute

#: The modality kinds of the built-in tasks and what one sample of each is. An encoder's `accepts` names the
#: kinds it reads (`mmbench list encoders` shows them); a task may declare a kind of its own, which only an
#: encoder that accepts it (or accepts any kind) can read.
MODALITY_KINDS: dict[str, str] = {
    "vector": "a feature vector (D,) of floats",
    "spectrogram": "a log-magnitude spectrogram (1, F, T)",
    "audio": "a raw waveform (S,), standardised",
    "frames": "an RGB clip (3, T, H, W), ImageNet-normalised",
    "visual": "an RGB clip (3, T, H, W) or precomputed per-frame CNN features (T, D)",
    "depth": "a depth clip (1, T, H, W) in [0, 1]",
    "flow": "an optical-flow clip (2, T, H, W) in [-1, 1]",
    "image": "an RGB image (3, H, W), normalised",
    "tokens": "word pieces {input_ids, attention_mask, token_type_ids}, each (L,)",
}


@dataclass(frozen=True)
class ModalitySpec:
    """One input modality: its name, what kind of signal it is (`MODALITY_KINDS`), and the shape of one
    sample's tensor."""

    name: str
    kind: str
    shape: tuple[int, ...]


class Task:
    """A dataset plus its task definition.

    Constructing a task must be cheap (no data is read) so grids can be validated before anything trains;
    `splits()` reads the data. Each split is a Dataset yielding `{modality: inputs, ..., "label": tensor}`,
    where a modality's inputs are a tensor or a small mapping of tensors (ids and a mask).

    A task that reads a dataset (`needs_data = True`) gets its prepared root (the runner resolves it), turns
    the official release into that root in `prepare`, validates it in `check`, and reports the root's
    `fingerprint`, which enters every cell's identity. `mmbench.api.data.PreparedTask` does all of that once;
    a dataset fills in its layout, its samples and their processing.
    """

    name: ClassVar[str]
    version: ClassVar[str]
    Params: ClassVar[type[AnyParams]] = NoParams
    metrics: ClassVar[tuple[str, ...]] = ("accuracy", "macro_f1")
    primary_metric: ClassVar[str] = "accuracy"
    multilabel: ClassVar[bool] = False
    #: reads a prepared dataset from a root (False: the data is generated, as for `synthetic`)
    needs_data: ClassVar[bool] = False
    #: where the official release is obtained, shown when the data is missing
    source: ClassVar[str] = ""

    def __init__(self, params: AnyParams, root: Path | None = None) -> None:
        self.params = params
        self.root = root

    @property
    def modalities(self) -> dict[str, ModalitySpec]:
        raise NotImplementedError

    @property
    def num_classes(self) -> int:
        raise NotImplementedError

    def splits(self) -> dict[str, Dataset]:
        """Return the `train`, `val` and `test` datasets.

        A split that draws random choices per sample (crops, flips, which frames) draws them from a generator
        seeded by the cell's seed, the epoch and the sample's index when it defines `reseed(seed, epoch)`, which
        the engine calls before each epoch: then the choices do not depend on how many processes load it."""
        raise NotImplementedError

    def on_device(self, batch: Batch, training: bool) -> Batch:
        """The batch as the model reads it, from what a split's loader gathered, once on the cell's device: the
        per-sample work that runs batched there (crops, resizing, flips, float conversion, normalisation; the
        random choices arrive drawn by the split). The same for augmented views and for generated smoke-run
        samples. Default: the batch as it is."""
        return batch

    def augment(self, modality: str, x: Tensor, generator: torch.Generator) -> Tensor:
        """An augmented view of one sample of `modality` (used by consistency-based balancers)."""
        raise NotImplementedError(f"task {self.name!r} defines no augmentation")

    @classmethod
    def has_augmentation(cls) -> bool:
        return cls.augment is not Task.augment

    @classmethod
    def fake_params(cls, params: AnyParams) -> AnyParams:
        """The parameters a `--fake-data` smoke run builds this task with (default: the grid's own). A task whose
        real inputs make a CPU smoke run take minutes a cell (long, large video clips) returns lighter ones that
        reach every code path the same way (fewer frames, a smaller crop); the run says so up front."""
        return params

    def fake_sample(self, generator: torch.Generator) -> dict[str, Any]:
        """One generated sample of the prepared shapes, for `--fake-data` smoke runs: standard-normal tensors of
        each modality's shape and a random label. A task whose inputs are not float tensors (token ids and a
        mask) overrides it."""
        sample: dict[str, Any] = {m: torch.randn(spec.shape, generator=generator)
                                  for m, spec in self.modalities.items()}
        if self.multilabel:
            sample["label"] = torch.randint(0, 2, (self.num_classes,), generator=generator).float()
        else:
            sample["label"] = torch.randint(0, self.num_classes, (), generator=generator)
        return sample

    def fingerprint(self) -> str | None:
        """The prepared data's fingerprint (None for generated data); raises `DataError` when the root is
        missing or not prepared."""
        if not self.needs_data:
            return None
        raise NotImplementedError(f"task {self.name!r} reads data but reports no fingerprint of it (subclass "
                                  "mmbench.api.data.PreparedTask)")

    def prepare(self, raw: Path, partial: bool = False, workers: int = 1) -> None:
        """Read the official release in `raw` and write the prepared form into `self.root`."""
        raise NotImplementedError(f"task {self.name!r} has nothing to prepare")

    def check(self) -> list[str]:
        """Problems of the prepared root (empty when it is sound)."""
        return []
