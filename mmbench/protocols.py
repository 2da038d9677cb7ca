"""The four protocols that are the core's whole vocabulary: Task, Encoder, Fusion, Balancer.

Plugins subclass these. The core never names a concrete method, model or dataset; everything it knows
about a component comes from the class attributes declared here.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from mmbench.data.prepared import read_manifest
from mmbench.schema.params import EpochWindowParams, NoParams, Params

if TYPE_CHECKING:
    from mmbench.training.context import EpochStats, TrainContext

__all__ = ["Balancer", "Batch", "Encoder", "EpochWindowParams", "Fusion", "FusionOutput", "Incompatible",
           "ModalitySpec", "ModelOutput", "NoParams", "Params", "Requirements", "Task"]

#: a modality's input for one sample or batch: a tensor, or a small mapping of tensors (e.g. ids and a mask)
Inputs = Tensor | Mapping[str, Tensor]


class Incompatible(Exception):
    """Raised while building a cell whose parts cannot work together; the runner records it as skipped."""


def unknown_names(parameter: str, names: Iterable[str], known: Iterable[str], what: str = "modalities") -> list[str]:
    """A problem for each name in `parameter` that is not among `known` (with a close match when one exists)."""
    known = list(known)
    problems = []
    for name in sorted(set(names) - set(known)):
        match = difflib.get_close_matches(name, known, n=1, cutoff=0.5)
        hint = f"; did you mean {match[0]!r}?" if match else ""
        problems.append(f"{parameter} names {name!r}, which is not one of the task's {what} "
                        f"({', '.join(known)}){hint}")
    return problems


# --------------------------------------------------------------------------------------------- Task


@dataclass(frozen=True)
class ModalitySpec:
    """One input modality: its name, what kind of signal it is, and the shape of one sample's tensor."""

    name: str
    kind: str
    shape: tuple[int, ...]


class Task:
    """A dataset plus its task definition.

    Constructing a task must be cheap (no data is read) so grids can be validated before anything trains;
    `splits()` reads the data. Each split is a Dataset yielding `{modality: inputs, ..., "label": tensor}`,
    where a modality's inputs are a tensor or a small mapping of tensors (ids and a mask).

    A task that reads a dataset (`needs_data = True`) gets its prepared root (`mmbench.data.roots` resolves
    it), turns the official release into that root in `prepare`, validates it in `check`, and reports the
    root's `fingerprint`, which enters every cell's identity.
    """

    name: ClassVar[str]
    version: ClassVar[str]
    Params: ClassVar[type[Params]] = NoParams
    metrics: ClassVar[tuple[str, ...]] = ("accuracy", "macro_f1")
    primary_metric: ClassVar[str] = "accuracy"
    multilabel: ClassVar[bool] = False
    #: reads a prepared dataset from a root (False: the data is generated, as for `synthetic`)
    needs_data: ClassVar[bool] = False
    #: where the official release is obtained, shown when the data is missing
    source: ClassVar[str] = ""

    def __init__(self, params: Params, root: Path | None = None) -> None:
        self.params = params
        self.root = root

    @property
    def modalities(self) -> dict[str, ModalitySpec]:
        raise NotImplementedError

    @property
    def num_classes(self) -> int:
        raise NotImplementedError

    def splits(self) -> dict[str, Dataset]:
        """Return the `train`, `val` and `test` datasets."""
        raise NotImplementedError

    def augment(self, modality: str, x: Tensor, generator: torch.Generator) -> Tensor:
        """An augmented view of one sample of `modality` (used by consistency-based balancers)."""
        raise NotImplementedError(f"task {self.name!r} defines no augmentation")

    @classmethod
    def has_augmentation(cls) -> bool:
        return cls.augment is not Task.augment

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
        return read_manifest(self.root, self.name, self.source).fingerprint

    def prepare(self, raw: Path, partial: bool = False, workers: int = 1) -> None:
        """Read the official release in `raw` and write the prepared form into `self.root`."""
        raise NotImplementedError(f"task {self.name!r} has nothing to prepare")

    def check(self) -> list[str]:
        """Problems of the prepared root (empty when it is sound)."""
        return []


# ------------------------------------------------------------------------------------------ Encoder


class Encoder(nn.Module):
    """One modality's network: a batch of its inputs (a tensor `(B, *shape)` or a mapping of tensors) ->
    pooled features `(B, out_dim)`."""

    name: ClassVar[str]
    Params: ClassVar[type[Params]] = NoParams
    #: modality kinds this encoder accepts (None: any)
    accepts: ClassVar[frozenset[str] | None] = None

    def __init__(self, modality: ModalitySpec, params: Params) -> None:
        super().__init__()
        self.modality = modality
        self.params = params
        self.out_dim: int = 0

    @classmethod
    def weights_identity(cls, params: Params) -> str | None:
        """What identifies the pretrained weights these parameters load (a hub name and revision, or a hash of
        a local file); None for random initialisation. Part of a cell's identity."""
        return None

    @classmethod
    def fake_params(cls, params: Params) -> Params:
        """The parameters a `--fake-data` smoke run builds this encoder with (default: the grid's own). An
        encoder that loads pretrained weights, or is too large for a CPU smoke run, returns a small randomly
        initialised configuration that reads the same inputs: a fake run checks the wiring, never the model."""
        return params

    def absent_input(self, x: Inputs) -> Inputs:
        """The input that stands for a missing modality, shaped like the batch `x` (default: zeros). A text
        encoder, say, returns only the special tokens."""
        if isinstance(x, Mapping):
            return {k: torch.zeros_like(v) for k, v in x.items()}
        return torch.zeros_like(x)

    def blocks(self) -> list[nn.Module]:
        """The encoder as a sequence of blocks whose composition is `forward`, for fusions that work inside
        the encoders (intermediate fusion). Optional."""
        raise NotImplementedError(f"encoder {self.name!r} does not expose its blocks")

    # A sequence encoder (a transformer) may also expose its forward as embed_input -> every block -> readout, so a
    # joint fusion can act on the token sequences between blocks (insert, replace or exchange tokens).

    def embed_input(self, x: Inputs) -> tuple[Tensor, Tensor | None]:
        """The token sequence `(B, T, D)` the first block reads, and its padding mask `(B, T)` (True: a real
        token; None: no padding). Optional."""
        raise NotImplementedError(f"encoder {self.name!r} does not expose its embedding step")

    def run_block(self, index: int, hidden: Tensor, mask: Tensor | None) -> Tensor:
        """Block `index` of `blocks()` on a sequence `(B, T, D)` whose padding mask is `mask` (T may differ from
        the embedded length: a fusion may have added tokens). Optional."""
        raise NotImplementedError(f"encoder {self.name!r} does not run its blocks on token sequences")

    def readout(self, hidden: Tensor) -> Tensor:
        """The pooled feature `(B, out_dim)` from the last block's sequence; `readout(run_block(... embed_input(x)))`
        over every block is `forward(x)`. Optional."""
        raise NotImplementedError(f"encoder {self.name!r} does not expose its readout")

    def token_vectors(self, ids: Tensor) -> Tensor:
        """The input embeddings `(B, N, D)` of vocabulary ids `(B, N)` (a text encoder's word embeddings), for
        joint fusions that build token sequences of their own. Optional."""
        raise NotImplementedError(f"encoder {self.name!r} has no vocabulary")

    def embed_vectors(self, vectors: Tensor, segment: int) -> Tensor:
        """Vectors `(B, N, D)` in the input-embedding space turned into a sequence the blocks read, as the
        embedding step treats word vectors (positions 0..N-1, segment id `segment`): how a joint fusion feeds
        another modality into this encoder (MMBT's image tokens into BERT). Optional."""
        raise NotImplementedError(f"encoder {self.name!r} does not embed foreign vectors")

    def tokens(self, x: Inputs) -> Tensor:
        """The sequence `(B, T, out_dim)` whose mean over T is `forward(x)`, for fusions that read token
        sequences (`Fusion.uses_tokens`). Optional."""
        raise NotImplementedError(f"encoder {self.name!r} does not expose token sequences")


# ------------------------------------------------------------------------------------------- Fusion


@dataclass
class FusionOutput:
    """Class logits, plus each modality's exact additive share of them when the fusion can offer it."""

    logits: Tensor
    contributions: dict[str, Tensor] = field(default_factory=dict)


class Fusion(nn.Module):
    """Combines pooled per-modality features into class logits.

    A late fusion only sees the pooled features. An intermediate fusion (`drives_encoders = True`) also
    runs the encoders block by block in `encode` (using `Encoder.blocks()`), exchanging information between
    modalities inside them; its `forward` still maps the pooled features to logits.
    A fusion over tokens (`uses_tokens = True`) receives in `forward` every modality's token sequence
    `(B, T_m, D_m)` (`Encoder.tokens`) instead of its pooled feature; the model pools the sequences (mean over
    T) into the features that heads and balancers see.

    A fusion with `offers_contributions = True` returns, for every modality, logits that are exactly that
    modality's part of the fused logits (the sum over modalities equals the logits); balancers such as OGM
    read them. Fusions that cannot split their output exactly must leave `contributions` empty.
    """

    name: ClassVar[str]
    Params: ClassVar[type[Params]] = NoParams
    offers_contributions: ClassVar[bool] = False
    #: the fusion needs every modality's feature to have the same size
    equal_dims: ClassVar[bool] = False
    #: an intermediate fusion: it runs the encoders itself (`encode`) and exchanges information inside them
    drives_encoders: ClassVar[bool] = False
    #: `forward` reads each modality's token sequence `(B, T_m, D_m)` from `Encoder.tokens`, not its pooled feature
    uses_tokens: ClassVar[bool] = False
    #: a single-stream joint fusion: every pooled feature comes out of one stream that read every modality, so
    #: a dropped modality is represented by its absent input alone (its feature is not zeroed as well)
    single_stream: ClassVar[bool] = False
    #: the most modalities the fusion combines (None: any); a task with more makes the cell skipped
    max_modalities: ClassVar[int | None] = None

    def __init__(self, feature_dims: Mapping[str, int], num_classes: int, params: Params) -> None:
        super().__init__()
        self.feature_dims = dict(feature_dims)
        self.num_classes = num_classes
        self.params = params

    def forward(self, features: Mapping[str, Tensor]) -> FusionOutput:  # pragma: no cover - protocol
        raise NotImplementedError

    def bind(self, encoders: Mapping[str, Encoder]) -> None:
        """For fusions with `drives_encoders = True`: called once with the built encoders, before the
        optimizer exists, so the fusion can size its inner modules from the encoders' blocks (or raise
        `Incompatible`)."""

    def encode(self, inputs: Mapping[str, Inputs], encoders: Mapping[str, Encoder],
               dropped: frozenset[str] = frozenset()) -> dict[str, Tensor]:
        """Pooled features of every modality, for fusions with `drives_encoders = True`. `dropped` names the
        modalities whose inputs were replaced by absent inputs (a missing-modality or unimodal evaluation
        pass), for fusions that keep statistics of the real ones."""
        raise NotImplementedError(f"fusion {self.name!r} does not drive the encoders")

    def classifier_blocks(self) -> dict[str, tuple[Tensor, Tensor | None]]:
        """Per-modality `(weight block, bias share)` of the final linear layer, for fusions that have one."""
        raise NotImplementedError(f"fusion {self.name!r} has no per-modality linear blocks")


# ----------------------------------------------------------------------------------------- Balancer


@dataclass(frozen=True)
class Requirements:
    """What a balancer needs from the rest of a cell; the runner skips a cell that cannot provide it."""

    unimodal_heads: bool = False
    fusion_contributions: bool = False
    #: documents the need; the engine validates every epoch, so it is always met
    validation_each_epoch: bool = False
    augmented_views: bool = False
    equal_feature_dims: bool = False
    single_label: bool = False
    fusions: frozenset[str] | None = None
    #: the method forms its own predictions and never uses the cell's fusion (a grid pairs it with its
    #: first fusion only, instead of repeating identical runs)
    ignores_fusion: bool = False
    min_modalities: int = 2
    max_modalities: int | None = None


@dataclass
class Batch(Mapping):
    """One batch as the engine hands it to the model and the balancer hooks.

    `inputs` holds each modality's inputs, `label` the targets, and `views` the task's augmented views of the
    inputs, only for balancers that require them (`Requirements.augmented_views`). A batch also reads as the
    mapping `{modality: inputs, ..., "label": label}` that datasets yield, so `batch["label"]` and
    `ctx.model(batch)` work as well as `batch.label` and `ctx.model(batch.inputs)`.
    """

    inputs: dict[str, Inputs]
    label: Tensor
    views: dict[str, Inputs] = field(default_factory=dict)

    def __getitem__(self, key: str) -> Inputs:
        return self.label if key == "label" else self.inputs[key]

    def __iter__(self):
        return iter((*self.inputs, "label"))

    def __len__(self) -> int:
        return len(self.inputs) + 1

    def to(self, device: torch.device) -> Batch:
        return self._map(lambda t: t.to(device, non_blocking=True))

    def pin_memory(self) -> Batch:
        """Page-locked copies, so `to(device)` copies asynchronously (the DataLoader calls this on CUDA)."""
        return self._map(Tensor.pin_memory)

    def _map(self, fn: Callable[[Tensor], Tensor]) -> Batch:
        return Batch(_map(self.inputs, fn), fn(self.label), _map(self.views, fn))


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


class Balancer:
    """The method under study, hooked into the training step.

    Hook points, in the order the engine calls them: `extra_modules` (before the optimizer exists),
    `setup` (once, after the model and optimizer exist) -> per epoch: `on_epoch_start` -> per step:
    `train_step`, whose default is zero_grad -> forward -> `loss` -> backward -> `after_backward` ->
    `optimizer_step` -> `on_epoch_end` (with the epoch's train and validation statistics).
    Methods that change the whole step (two-pass SAM-style, alternating per-modality steps) override
    `train_step`. `eval_logits` lets a method change how predictions are formed at evaluation.
    `coefficients` reports the method's internal state once per epoch; per-step code must not synchronise
    with the device (no `.item()`), so accumulate tensors and convert them there.
    """

    name: ClassVar[str]
    Params: ClassVar[type[Params]] = NoParams
    requires: ClassVar[Requirements] = Requirements()
    #: per-task parameter defaults from the method's paper/official configs, applied under the grid's params
    task_defaults: ClassVar[dict[str, dict[str, Any]]] = {}
    #: plain training that the others are measured against (a grid's `baseline` key can name another)
    is_baseline: ClassVar[bool] = False
    #: a reference point rather than a method (each modality trained alone): shown apart, never ranked
    is_reference: ClassVar[bool] = False

    def __init__(self, params: Params) -> None:
        self.params = params

    @classmethod
    def check(cls, params: Params, task: Task) -> list[str]:
        """Problems of these parameters with this task (e.g. a per-modality setting naming a modality the task
        lacks). `mmbench validate` reports them before anything trains; the engine refuses to train with any."""
        return []

    def extra_modules(self, feature_dims: dict[str, int], num_classes: int) -> dict[str, nn.Module]:
        """Trainable modules the method adds to the model (e.g. a shared head).

        They become `model.extras[<name>]`, get their own optimizer group `extra.<name>`, and are saved with
        the model when it is selected on validation.
        """
        return {}

    def setup(self, ctx: TrainContext) -> None:
        """Called once after the model and optimizer are built."""

    def on_epoch_start(self, ctx: TrainContext) -> None:
        """Called before the first step of each epoch."""

    def loss(self, ctx: TrainContext, batch: Batch, out: ModelOutput) -> Tensor:
        """The training loss; the default is the task loss on the fused logits."""
        return ctx.task_loss(out.logits, batch.label)

    def after_backward(self, ctx: TrainContext, batch: Batch, out: ModelOutput) -> None:
        """Gradient modulation: runs after `backward()` and before the optimizer step."""

    def optimizer_step(self, ctx: TrainContext) -> None:
        ctx.optimizer.step()

    def train_step(self, ctx: TrainContext, batch: Batch) -> tuple[Tensor, ModelOutput]:
        """One optimisation step; returns the detached loss and the forward output."""
        ctx.optimizer.zero_grad(set_to_none=True)
        with ctx.autocast():
            out = ctx.model(batch.inputs)
            loss = self.loss(ctx, batch, out)
        loss.backward()
        self.after_backward(ctx, batch, out)
        self.optimizer_step(ctx)
        return loss.detach(), out

    def on_epoch_end(self, ctx: TrainContext, stats: EpochStats) -> None:
        """Called after the epoch's validation, with its statistics."""

    def eval_logits(self, ctx: TrainContext, out: ModelOutput) -> Tensor:
        """The logits predictions are made from at evaluation."""
        return out.logits

    def coefficients(self) -> dict[str, float]:
        """The method's coefficients for the epoch that just ended (called once per epoch)."""
        return {}
