"""The leaderboard JSON contract (`mmbench schema leaderboard` prints its JSON Schema).

One file per benchmark and benchmark version; entries of different versions never share a file, so they never
rank together. Readers refuse an unknown major schema version and ignore fields they do not know (minor
versions only add optional fields).
"""

from __future__ import annotations

import statistics
from typing import Any

from pydantic import Field, field_validator

from mmbench.schema.cell import ComponentSpec, EncoderSpec, TaskSpec
from mmbench.schema.record import IDENTIFIER, Record, check_schema
from mmbench.schema.results import ProfileFields, Status

SCHEMA_FAMILY = "mmbench.leaderboard"
SCHEMA_MAJOR = 1
#: 1.1 added the entries' `contribution`, `utilisation`, `cost` and `balancer_notes`
SCHEMA = f"{SCHEMA_FAMILY}/{SCHEMA_MAJOR}.1"


class Stat(Record):
    mean: float | None
    std: float | None
    per_seed: list[float | None]

    @classmethod
    def of(cls, values: list[float | None]) -> Stat:
        """Mean and sample standard deviation of the values there are (0 for one), and every value."""
        real = [v for v in values if v is not None]
        if not real:
            return cls(mean=None, std=None, per_seed=values)
        return cls(mean=statistics.fmean(real), std=statistics.stdev(real) if len(real) > 1 else 0.0,
                   per_seed=values)


class Imbalance(Record):
    weakest: str
    strongest: str
    ratio: float | None = Field(description="weakest / strongest modality's mean primary metric")


class Contribution(Record):
    """How much each modality gives the primary test metric, per seed then over seeds (`mmbench.reporting.balance`
    has the formulas): the exact Shapley value over the coalitions of modalities, its share of their sum, and
    the imbalance degree, the spread of the shares (0: every modality gives as much; 1: one gives everything)."""

    shapley: dict[str, Stat] = Field(description="modality -> its Shapley value (a fraction, like the metrics)")
    share: dict[str, Stat] = Field(description="modality -> its Shapley value over the sum of all of them")
    imbalance_degree: Stat = Field(description="largest share minus smallest share")


class Cost(Record):
    """What an entry cost beyond its time per epoch, derived from its profile."""

    device_hours: float | None = Field(description="hours of the devices one training run held (mean over the "
                                                   "seeds): training wall time x devices, a CPU counting as one")
    flops_vs_baseline: float | None = Field(description="its training step's FLOPs over the baseline's with the "
                                                        "same encoders and fusion")


class CoefficientSummary(Record):
    first: float | None
    last: float | None
    min: float | None
    max: float | None
    per_epoch: list[float | None] = Field(description="seed-mean value at each epoch")


class Profile(ProfileFields):
    train_seconds: Stat


class EntryError(Record):
    """What stopped the entry's worst seed: the exception's type (or NonFiniteLoss) and, when known, the epoch."""

    seed: int
    type: str
    epoch: int | None = None


class SearchSummary(Record):
    """How a tuned entry's configuration was chosen: its trials, scored on validation only."""

    trials: int = Field(description="the budget")
    finished: int = Field(description="trials that gave a validation score")
    sampler: str
    metric: str = Field(description="validation metric the trials were compared on")
    space: dict[str, dict[str, list]] = Field(description="searched parameter -> its distribution")
    chosen: dict[str, Any] = Field(description="searched parameter -> the selected value")
    selected_trial: int | None
    trial_scores: list[float | None] = Field(description="each trial's validation score, in trial order")


class Comparison(Record):
    """A method against the baseline on the same seeds: the mean per-seed difference and its 95 % interval."""

    baseline: str
    seeds: list[int]
    delta: float = Field(description="mean over the seeds of (method - baseline), primary metric")
    low: float | None = Field(description="95 % paired-t interval of delta (None with a single seed)")
    high: float | None
    within_noise: bool | None = Field(description="the interval contains 0 (None with a single seed)")


class RankStability(Record):
    """How much the ranking depends on the seed: the ranked entries ordered on each seed alone."""

    seeds: list[int]
    kendall_tau: float | None = Field(description="mean over pairs of seeds of Kendall's tau-b between their "
                                                  "rankings (1: the same order on every seed)")
    ranks: dict[str, list[float]] = Field(description="entry id -> its rank on each seed (1 = best; ties share "
                                                      "their mean rank)")


class Entry(Record):
    id: str
    task: TaskSpec
    encoders: dict[str, EncoderSpec]
    fusion: ComponentSpec | None = Field(description="None for a balancer that forms its own predictions")
    balancer: ComponentSpec
    reference: bool = Field(False, description="a point of comparison, not a method: never ranked")
    published: dict[str, float] = Field(default_factory=dict, description="the reproduced paper's numbers")
    published_source: str | None = None
    train: dict[str, Any]
    status: Status
    reason: str | None = None
    error: EntryError | None = None
    seed_status: dict[str, str]
    selection: str | None = None
    metrics: dict[str, Stat] = Field(default_factory=dict)
    unimodal: dict[str, dict[str, Stat]] = Field(default_factory=dict)
    imbalance: Imbalance | None = None
    contribution: Contribution | None = None
    utilisation: dict[str, float | None] = Field(default_factory=dict, description=(
        "modality -> its own primary metric inside this model over the same modality's alone, in the `unimodal` "
        "reference with the same encoders (1: the model reaches the modality's potential)"))
    missing_modality: dict[str, dict[str, Stat]] = Field(default_factory=dict)
    diagnostics: dict[str, CoefficientSummary] = Field(default_factory=dict)
    profile: Profile | None = None
    cost: Cost | None = None
    balancer_notes: str | None = Field(None, description="the balancer's departures from its official code "
                                                         "(`CellResult.balancer_notes`)")
    env: dict[str, Any] = Field(default_factory=dict, description="the first seed's cell environment "
                                                                   "(`CellResult.env`)")
    mmbench_version: str | None = None
    plugin_versions: dict[str, str] = Field(default_factory=dict)
    commit: str | None = None
    created_at: str
    seeds: list[int]
    hyperparameters: str = Field("defaults", description="'defaults' (the grid's parameters) or 'tuned (N "
                                                         "trials)'; the two never share a leaderboard")
    search: SearchSummary | None = None
    vs_baseline: Comparison | None = None


class Leaderboard(Record):
    schema_: str = Field(SCHEMA, alias="schema")
    benchmark: str = Field(pattern=IDENTIFIER)
    benchmark_version: str
    primary_metric: str
    metrics: list[str]
    lower_is_better: list[str]
    modalities: list[str]
    baseline: str | None = Field(None, description="the balancer gains are measured against")
    entries: list[Entry]
    rank_stability: RankStability | None = None

    @field_validator("schema_")
    @classmethod
    def _known_major(cls, value: str) -> str:
        return check_schema(value, SCHEMA_FAMILY, SCHEMA_MAJOR)

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True)
