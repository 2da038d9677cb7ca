"""A cell: one training run (task, an encoder per modality, fusion, balancer, recipe, seed) and its identity.

A cell is plain data, so it travels to any worker (another process, a Ray task, a Slurm job) as JSON; the
worker resolves the names through its own plugin registry. Its identity is a content hash of everything that
determines its result: the task with its version and data fingerprint, each encoder with its parameters and
pretrained-weight identity, the fusion and balancer with their parameters (defaults filled in), and the recipe
without its execution-only fields. `entry_id` leaves the seed out: it names a leaderboard entry.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

from pydantic import Field, computed_field

from mmbench.schema.recipe import TrainRecipe
from mmbench.schema.record import IDENTIFIER, Record


def content_hash(obj: Any, length: int = 16) -> str:
    canonical = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:length]


class ComponentSpec(Record):
    """A component by name with its full parameters (defaults filled in), and those set away from the defaults
    (by the grid or a per-task default), which labels show so that two entries of one balancer differ."""

    name: str
    params: dict[str, Any] = Field(default_factory=dict)
    overrides: dict[str, Any] = Field(default_factory=dict, description="parameters set by the grid or a per-task "
                                                                         "default; not part of the identity")

    def label(self) -> str:
        changed = ", ".join(f"{k}={v}" for k, v in sorted(self.overrides.items()))
        return f"{self.name}({changed})" if changed else self.name


class EncoderSpec(ComponentSpec):
    weights: str | None = Field(None, description="identity of the pretrained weights (None: random init)")


class TaskSpec(ComponentSpec):
    version: str
    fingerprint: str | None = Field(None, description="prepared-data fingerprint (None: generated data)")
    fake: bool | None = Field(None, description="true: run on generated stand-in data (--fake-data), never a result")


class Scoring(Record):
    """How a task is scored: what reporting needs to know without loading the task."""

    metrics: list[str]
    primary_metric: str
    lower_is_better: list[str] = Field(default_factory=list)
    modalities: list[str]
    multilabel: bool = False


class Tuning(Record):
    """How a tuned cell's hyper-parameters were chosen: one trial of a search, or the configuration it selected.

    `search` identifies the search (its group of cells and its settings); `params` are the searched values,
    keyed `balancer.<name>` / `optimizer.<name>`; a trial never evaluates the test split.
    """

    search: str
    stage: Literal["trial", "selected"]
    trial: int | None = Field(None, description="this trial's number (from 0), or the selected trial's")
    trials: int = Field(description="the budget: trials per configuration")
    sampler: str
    seed: int
    metric: str = Field(description="validation metric the trials are compared on")
    space: dict[str, dict[str, list]] = Field(description="searched parameter -> its distribution")
    params: dict[str, Any] = Field(description="searched parameter -> this cell's value")


class CellSpec(Record):
    """What a cell is; shared by the cell a worker receives and the result it returns."""

    task: TaskSpec
    encoders: dict[str, EncoderSpec]
    fusion: ComponentSpec | None = Field(description="None for a balancer that forms its own predictions")
    balancer: ComponentSpec
    train: TrainRecipe
    seed: int
    benchmark: str = Field(pattern=IDENTIFIER)
    benchmark_version: str
    scoring: Scoring
    baseline: str | None = None
    reference: bool = Field(False, description="a reference point (e.g. each modality trained alone), not a "
                                               "method: shown apart from the ranking")
    published: dict[str, float] = Field(default_factory=dict, description="the reproduced paper's numbers for "
                                                                           "this balancer (not part of the identity)")
    published_source: str | None = None
    tuning: Tuning | None = Field(None, description="None: the grid's parameters; else the search it belongs to")

    def identity(self) -> dict[str, Any]:
        """Everything that determines the result except the seed. Unset optional fields (no data
        fingerprint, no pretrained weights) are left out, so adding such a field keeps old identities."""
        parts = {"task": self.task, "encoders": self.encoders, "fusion": self.fusion, "balancer": self.balancer}
        out = {k: _dump(v) for k, v in parts.items()}
        out["train"] = self.train.identity()
        if self.tuning is not None:
            out["tuning"] = _dump(self.tuning)
        return out

    @property
    def is_trial(self) -> bool:
        """A search trial: trained and scored on validation only, its test split never read."""
        return self.tuning is not None and self.tuning.stage == "trial"

    @computed_field  # type: ignore[prop-decorator]
    @property
    def entry_id(self) -> str:
        return content_hash(self.identity())

    @computed_field  # type: ignore[prop-decorator]
    @property
    def cell_id(self) -> str:
        return content_hash({**self.identity(), "seed": self.seed})

    def label(self) -> str:
        encoders = ",".join(sorted({e.name for e in self.encoders.values()}))
        fusion = self.fusion.label() if self.fusion else "-"
        return f"{self.task.name} {encoders} {fusion} {self.balancer.label()} seed={self.seed}"


def _dump(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, dict):
        return {k: _dump(v) for k, v in value.items()}
    return value.model_dump(mode="json", exclude_none=True, exclude={"overrides"})


class Cell(CellSpec):
    """A cell as the runner hands it to an executor."""

    data_root: str | None = Field(None, description="where the task reads its prepared data")
    skip_reason: str | None = Field(None, description="why the combination cannot run (recorded as skipped)")

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def result_fields(self) -> dict[str, Any]:
        """What a result repeats of its cell: everything but where the data was read and why it is skipped."""
        return self.model_dump(exclude={"data_root", "skip_reason"})
