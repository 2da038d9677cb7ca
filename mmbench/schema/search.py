"""A grid's `search` block: an equal tuning budget for every method, and its validation (no torch).

    search: {trials: 8, sampler: random, seed: 0, metric: accuracy,
             space: {balancers: {ogm: {alpha: {log_uniform: [0.05, 1.0]}}}, optimizer: {weight_decay: fixed}}}

Every (task, encoders, fusion, balancer) gets `trials` trials over the parameters its components declare
searchable (`mmbench.schema.search_space`), plus the recipe's learning rate and weight decay. `space` narrows a
declared distribution, gives one to an undeclared parameter, or keeps a parameter `fixed`; a balancer parameter
written in the grid's `balancers` entry is fixed too. `mmbench.running.search` runs the trials.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from mmbench.schema.recipe import OptimizerConfig
from mmbench.schema.results import CellResult
from mmbench.schema.search_space import Distribution, SpaceError, declared, field_problem

if TYPE_CHECKING:
    from mmbench.registry import Registry

FIXED = "fixed"
#: the two kinds of searched parameters, as they are prefixed in a space ("balancer.alpha", "optimizer.lr")
BALANCER, OPTIMIZER = "balancer", "optimizer"


class SpaceOverrides(BaseModel):
    model_config = ConfigDict(extra="forbid")
    balancers: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="balancer name -> parameter -> distribution ({log_uniform: [lo, hi]}, "
                                          "{uniform: ...}, {int: ...}, {log_int: ...}, {choice: [...]}) or 'fixed'")
    optimizer: dict[str, Any] = Field(
        default_factory=dict, description="optimizer parameter (lr, weight_decay, ...) -> distribution or 'fixed'")


class SearchConfig(BaseModel):
    """Tune every method with the same budget, selecting on validation only."""

    model_config = ConfigDict(extra="forbid")
    trials: int = Field(description="trials per (task, encoders, fusion, balancer); each is an ordinary cell")
    sampler: Literal["random", "tpe"] = Field("random", description="Optuna's RandomSampler or TPESampler")
    seed: int = Field(0, ge=0, lt=2**32, description="seeds the sampler, and the trials' training")
    metric: str | None = Field(None, description="validation metric the best trial is chosen on (default: the "
                                                 "task's primary metric)")
    space: SpaceOverrides = Field(default_factory=SpaceOverrides)

    @field_validator("trials")
    @classmethod
    def _at_least_one(cls, trials: int) -> int:
        if trials < 1:
            raise ValueError(f"trials must be at least 1, got {trials}: it is the number of configurations each "
                             "method tries")
        return trials

    def identity(self) -> dict[str, Any]:
        """What makes two searches comparable budgets (the seed is left out, like a training seed)."""
        return self.model_dump(mode="json", exclude={"seed"})


def group_space(search: SearchConfig, balancer: type[Any], fixed: Iterable[str] = ()) -> dict[str, Distribution]:
    """The searched parameters of a balancer's cells, `balancer.<name>`/`optimizer.<name>` -> distribution.

    `fixed` names the balancer parameters the grid writes out. Raises `SpaceError` for a defective
    declaration; expects the overrides to have passed `search_problems`.
    """
    space: dict[str, Distribution] = {}
    Source = tuple[str, type[BaseModel], dict[str, Any], set[str]]
    sources: tuple[Source, ...] = (
        (BALANCER, balancer.Params, search.space.balancers.get(balancer.name, {}), set(fixed)),
        (OPTIMIZER, OptimizerConfig, search.space.optimizer, set()))
    for prefix, params, overrides, pinned in sources:
        chosen = declared(params)
        for name, raw in overrides.items():
            if raw == FIXED:
                chosen.pop(name, None)
            else:
                chosen[name] = Distribution.parse(raw)
        space.update({f"{prefix}.{n}": d for n, d in sorted(chosen.items()) if n not in pinned})
    return space


def validation_score(result: CellResult | None, metric: str) -> float | None:
    """A trial's score: `metric` on validation for the model selected over its epochs (None: no usable score)."""
    if result is None or result.status != "ok" or result.val is None:
        return None
    value = result.val.metrics.get(metric)
    return value if value is not None and math.isfinite(value) else None


def _hint(name: str, known: Iterable[str]) -> str:
    match = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.5)
    return f"; did you mean {match[0]!r}?" if match else ""


def _override_problems(params: type[BaseModel], overrides: dict[str, Any], loc: tuple, fixed: set[str],
                       owner: str) -> list[tuple]:
    problems = []
    for name, raw in overrides.items():
        where = (*loc, name)
        if name not in params.model_fields:
            problems.append((where, f"{owner} has no parameter {name!r}{_hint(name, params.model_fields)} "
                                    f"(parameters: {', '.join(params.model_fields)})"))
            continue
        if name in fixed:
            problems.append((where, f"{name!r} is set in the grid's {owner} entry, which fixes it: search it or "
                                    "fix it, not both"))
            continue
        if raw == FIXED:
            continue
        try:
            dist = Distribution.parse(raw)
            documented = declared(params).get(name)
        except SpaceError as exc:
            problems.append((where, f"{exc} (or write '{FIXED}' to keep the parameter as it is)"))
            continue
        problem = field_problem(params, name, dist)
        if problem is None and documented is not None and not dist.within(documented):
            problem = (f"{dist} lies outside the documented range of {owner}'s {name!r}, {documented}: narrow it "
                       "(a wider range is a change to the component's declaration)")
        if problem:
            problems.append((where, problem))
    return problems


def search_problems(grid: Any, registry: Registry, tasks: list) -> list[tuple]:
    """(YAML path, message) for everything wrong with a grid's `search` block, given its resolved tasks."""
    search: SearchConfig | None = grid.search
    if search is None:
        return []
    problems: list[tuple] = []
    for task in tasks:
        if search.metric is not None and search.metric not in task.metrics:
            problems.append((("search", "metric"), f"task {task.name!r} does not report {search.metric!r}"
                                                   f"{_hint(search.metric, task.metrics)} (it reports "
                                                   f"{', '.join(task.metrics)})"))
    refs = [ref for ref in grid.balancers if ref.name in registry.components["balancers"]]
    for name, overrides in search.space.balancers.items():
        same = [ref for ref in refs if ref.name == name]
        if not same:
            problems.append((("search", "space", "balancers", name),
                             f"{name!r} is not one of the grid's balancers{_hint(name, (r.name for r in refs))}"))
            continue
        fixed = {key for ref in same for key in ref.params}
        problems += _override_problems(registry.get("balancers", name).cls.Params, overrides,
                                       ("search", "space", "balancers", name), fixed, name)
    problems += _override_problems(OptimizerConfig, search.space.optimizer, ("search", "space", "optimizer"), set(),
                                   "the optimizer")
    if problems:
        return problems
    for i, ref in enumerate(grid.balancers):
        if ref not in refs:
            continue
        try:
            space = group_space(search, registry.get("balancers", ref.name).cls, ref.params)
        except SpaceError as exc:
            problems.append((("balancers", i), f"{exc} (a defect of the plugin that provides {ref.name!r})"))
            continue
        if not space:
            problems.append((("balancers", i), f"nothing to search for {ref.name!r}: it declares no searchable "
                                               "parameter that the grid leaves free, and the optimizer's are fixed"))
    return problems
