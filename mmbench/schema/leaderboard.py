"""The leaderboard JSON contract (`mmbench schema leaderboard` prints its JSON Schema).

One file per benchmark and benchmark version; entries of different versions never share a file, so they never
rank together. Readers refuse an unknown major schema version and ignore fields they do not know (minor
versions only add optional fields).
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator

from mmbench.schema.record import Record, check_schema
from mmbench.schema.results import ProfileFields, Status

SCHEMA_FAMILY = "mmbench.leaderboard"
SCHEMA_MAJOR = 1
SCHEMA = f"{SCHEMA_FAMILY}/{SCHEMA_MAJOR}"


class Stat(Record):
    mean: float | None
    std: float | None
    per_seed: list[float | None]


class Component(Record):
    name: str
    params: dict[str, Any] = Field(default_factory=dict)


class TaskInfo(Component):
    version: str
    fingerprint: str | None = None
    fake: bool | None = Field(None, description="true: trained on generated stand-in data (--fake-data)")


class Imbalance(Record):
    weakest: str
    strongest: str
    ratio: float | None = Field(description="weakest / strongest modality's mean primary metric")


class CoefficientSummary(Record):
    first: float | None
    last: float | None
    min: float | None
    max: float | None
    per_epoch: list[float | None] = Field(description="seed-mean value at each epoch")


class Profile(ProfileFields):
    train_seconds: Stat


class Entry(Record):
    id: str
    task: TaskInfo
    encoders: dict[str, Component]
    fusion: Component
    balancer: Component
    train: dict[str, Any]
    status: Status
    reason: str | None = None
    seed_status: dict[str, str]
    selection: str | None = None
    metrics: dict[str, Stat] = Field(default_factory=dict)
    unimodal: dict[str, dict[str, Stat]] = Field(default_factory=dict)
    imbalance: Imbalance | None = None
    missing_modality: dict[str, dict[str, Stat]] = Field(default_factory=dict)
    diagnostics: dict[str, CoefficientSummary] = Field(default_factory=dict)
    profile: Profile | None = None
    env: dict[str, Any] = Field(default_factory=dict)
    mmbench_version: str | None = None
    plugin_versions: dict[str, str] = Field(default_factory=dict)
    commit: str | None = None
    created_at: str
    seeds: list[int]


class Leaderboard(Record):
    schema_: str = Field(SCHEMA, alias="schema")
    benchmark: str
    benchmark_version: str
    primary_metric: str
    metrics: list[str]
    lower_is_better: list[str]
    modalities: list[str]
    baseline: str | None = Field(None, description="the balancer gains are measured against")
    entries: list[Entry]

    @field_validator("schema_")
    @classmethod
    def _known_major(cls, value: str) -> str:
        return check_schema(value, SCHEMA_FAMILY, SCHEMA_MAJOR)

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True)
