"""`CellResult`: the typed, versioned record of one finished cell (one training run).

The runner writes one per cell (`<run dir>/cells/<cell id>.json`); resume, the leaderboard and every other
reader rely on it alone. It carries what reporting needs (the task's metrics, primary metric and their
directions) so nothing downstream has to load plugins or torch. Readers accept minor versions of the schema
and ignore fields they do not know; an unknown major version, or a file from before the schema existed, is
refused with a message that says what to do.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import Field, field_validator

from mmbench.schema.cell import CellSpec
from mmbench.schema.record import Record, check_schema

SCHEMA_FAMILY = "mmbench.cell"
SCHEMA_MAJOR = 1
#: 1.1 added the test split's `coalitions`, the profile's `step_flops` and `balancer_notes`
SCHEMA = f"{SCHEMA_FAMILY}/{SCHEMA_MAJOR}.1"

Status = Literal["ok", "failed", "diverged", "skipped"]
#: worst first: an entry aggregated over seeds takes the status of its worst seed
STATUS_ORDER: tuple[Status, ...] = ("failed", "diverged", "skipped", "ok")


class ErrorInfo(Record):
    type: str
    message: str
    traceback: str | None = None
    epoch: int | None = Field(None, description="epoch in which it happened, when known")


class SplitScores(Record):
    """One evaluation of a split: loss, the task's metrics, per-modality and missing-modality metrics."""

    loss: float | None = None
    metrics: dict[str, float | None] = Field(default_factory=dict)
    unimodal: dict[str, dict[str, float | None]] = Field(default_factory=dict)
    missing_modality: dict[str, dict[str, float | None]] = Field(default_factory=dict)
    unimodal_loss: dict[str, float | None] = Field(default_factory=dict)
    coalitions: dict[str, dict[str, float | None]] = Field(default_factory=dict, description=(
        "the metrics of the model with only a subset of its modalities kept (the others dropped as in "
        "missing-modality evaluation), for every subset: key = the kept modalities sorted and joined by '+', "
        "'' for none kept. Recorded for the test split of tasks with 2 to 4 modalities; each modality's Shapley "
        "contribution is computed from them"))


class EpochRecord(Record):
    epoch: int
    train_loss: float | None
    train_metrics: dict[str, float | None] = Field(default_factory=dict)
    val: SplitScores | None = None
    lr: float
    coefficients: dict[str, float | None] = Field(default_factory=dict)
    stage: str | None = Field(None, description="the balancer's stage of this epoch (a warm-up, a teacher stage), "
                                                "when it trains in stages")


class ProfileFields(Record):
    """What a cell's profile and a leaderboard entry's profile (aggregated over seeds) share."""

    device: dict[str, Any]
    epochs: int
    seconds_per_epoch: float
    step_ms: dict[str, float]
    step_samples_per_second: float | None = Field(None, description="samples per second of the training "
                                                                    "steps alone")
    samples_per_second: float = Field(description="end to end: samples trained per second of the epochs, "
                                                  "data loading, validation and the balancer's epoch hooks included")
    data_wait_fraction: float = Field(description="share of the training time spent waiting for batches")
    validation_fraction: float | None = Field(None, description="share of the training time spent on validation")
    balancer_hook_fraction: float | None = Field(None, description="share spent in the balancer's set-up and "
                                                                   "epoch hooks")
    peak_accelerator_memory_bytes: int
    peak_host_rss_bytes: int
    host_rss_scope: str = Field("process", description="'cell': the peak during this cell alone; 'process': "
                                                       "since the process started (the peak could not be reset)")
    params: dict[str, int]
    accelerator_hours: float
    step_flops: float | None = Field(None, description="floating-point operations of one training step at the "
                                                       "cell's shapes: forward, backward and any extra passes of "
                                                       "the balancer, counted by torch's FlopCounterMode on the "
                                                       "cell's first step (None: not measured)")


class CellProfile(ProfileFields):
    train_seconds: float


def now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


class CellResult(CellSpec):
    """Everything one cell produced, whatever its status."""

    schema_: str = Field(SCHEMA, alias="schema")
    status: Status
    reason: str | None = None
    error: ErrorInfo | None = None
    best_epoch: int | None = None
    selection: str | None = None
    test: SplitScores | None = None
    val: SplitScores | None = None
    history: list[EpochRecord] = Field(default_factory=list)
    profile: CellProfile | None = None
    balancer_notes: str | None = Field(None, description="where the balancer departs from its official code, as "
                                                         "its module docstring says (from the line naming the "
                                                         "differences to the end), for the method pages")
    env: dict[str, Any] = Field(default_factory=dict, description=(
        "versions of what can move a number (python, torch, mmbench, commit, ...); `plugins`: distribution -> "
        "version of the cell's components; `providers`: each component's place (task, fusion, balancer, "
        "encoders.<modality>) -> its distribution (absent in results from before it was recorded)"))
    created_at: str = Field(default_factory=now)

    @field_validator("schema_")
    @classmethod
    def _known_major(cls, value: str) -> str:
        return check_schema(value, SCHEMA_FAMILY, SCHEMA_MAJOR)

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True)
