"""Tuning under an equal budget: every configuration of a grid (task, encoders, fusion, balancer) gets the
same number of trials from an Optuna sampler, compared on validation only; its best trial is re-run on every seed
of the grid.

Each trial is an ordinary cell with its own content-hash id (the search, the trial number and the sampled values
are part of it), trained on the search's seed, its test split never read. The trials run in rounds: round k holds
every configuration's k-th trial, so an executor can run configurations side by side while each sampler sees all
earlier trials of its own study. The run directory is the only state: a re-run replays every study from the
stored trial results, which gives each sampler the same history, so it asks for the same values and finds the
finished trials again (resume).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, cast

import optuna
from pydantic import ValidationError

from mmbench.registry import Registry
from mmbench.running.cells import configurations
from mmbench.running.grid import Grid
from mmbench.schema.cell import Cell, ComponentSpec, Tuning, content_hash
from mmbench.schema.recipe import TrainRecipe
from mmbench.schema.results import CellResult
from mmbench.schema.search import BALANCER, OPTIMIZER, SearchConfig, group_space, validation_score
from mmbench.schema.search_space import Distribution

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _optuna(dist: Distribution) -> optuna.distributions.BaseDistribution:
    if dist.kind == "choice":
        return optuna.distributions.CategoricalDistribution(dist.choices)
    if dist.integer:
        return optuna.distributions.IntDistribution(int(dist.low), int(dist.high), log=dist.kind == "log_int")
    return optuna.distributions.FloatDistribution(dist.low, dist.high, log=dist.kind == "log_uniform")


def _sampler(search: SearchConfig) -> optuna.samplers.BaseSampler:
    """A fresh sampler per configuration, seeded with the search's seed: configurations whose spaces have the same
    shape draw the same points (common random numbers), so their trials differ by method rather than by luck."""
    if search.sampler == "tpe":
        # TPE starts modelling after its random start-up trials; Optuna's default of 10 would leave a small budget
        # pure random search, so half the budget (at most 10) is random
        return optuna.samplers.TPESampler(seed=search.seed, n_startup_trials=max(1, min(10, search.trials // 2)))
    return optuna.samplers.RandomSampler(seed=search.seed)


def _split(values: dict[str, Any], prefix: str) -> dict[str, Any]:
    return {key.removeprefix(f"{prefix}."): v for key, v in values.items() if key.startswith(f"{prefix}.")}


class Study:
    """One configuration's search: its space, its Optuna study and its trials' cells."""

    def __init__(self, base: Cell, fixed: Iterable[str], search: SearchConfig, registry: Registry) -> None:
        self.base, self.search, self.registry = base, search, registry
        self.space = group_space(search, registry.get("balancers", base.balancer.name).cls, fixed)
        self.metric = search.metric or base.scoring.primary_metric
        self.id = content_hash({"configuration": base.identity(), "space": self._space_json(),
                                "search": search.model_dump(mode="json", exclude={"space"})})
        lower = self.metric in base.scoring.lower_is_better
        self.study = optuna.create_study(direction="minimize" if lower else "maximize", sampler=_sampler(search))
        self.trials: list[tuple[optuna.trial.Trial, Cell]] = []
        self.failures: list[str] = []

    def _space_json(self) -> dict[str, dict[str, list]]:
        return {name: dist.to_json() for name, dist in self.space.items()}

    def _tuning(self, stage: str, trial: int | None, params: dict[str, Any]) -> Tuning:
        return Tuning(search=self.id, stage=stage, trial=trial, trials=self.search.trials, sampler=self.search.sampler,
                      seed=self.search.seed, metric=self.metric, space=self._space_json(), params=params)

    def _configure(self, tuning: Tuning, seed: int) -> Cell:
        """The base cell with the tuning's values applied (a cell recorded as skipped if they do not fit)."""
        update: dict[str, Any] = {"tuning": tuning, "seed": seed}
        try:
            balancer = self.registry.resolve("balancers", self.base.balancer.name,
                                             {**self.base.balancer.params, **_split(tuning.params, BALANCER)})
            recipe = self.base.train.model_dump()
            recipe["optimizer"].update(_split(tuning.params, OPTIMIZER))
            update.update(balancer=ComponentSpec(**balancer.spec()), train=TrainRecipe.model_validate(recipe))
        except ValidationError as exc:
            update["skip_reason"] = f"the sampled values do not fit together: {exc.errors()[0]['msg']}"
        return self.base.model_copy(update=update)

    def ask(self) -> Cell:
        """The next trial's cell."""
        trial = self.study.ask({name: _optuna(dist) for name, dist in self.space.items()})
        cell = self._configure(self._tuning("trial", len(self.trials), trial.params), self.search.seed)
        self.trials.append((trial, cell))
        return cell

    def tell(self, result: CellResult | None) -> None:
        """The last trial's result; a failed, diverged or skipped trial counts as failed for the sampler."""
        trial, _ = self.trials[-1]
        score = validation_score(result, self.metric)
        if score is None:
            why = f"{result.status}: {result.reason}" if result is not None else "no result"
            self.failures.append(f"trial {trial.number}: {why}")
            self.study.tell(trial, state=optuna.trial.TrialState.FAIL)
        else:
            self.study.tell(trial, score)

    def selected(self, seeds: list[int]) -> list[Cell]:
        """The best trial's configuration on every seed (ties go to the earlier trial); skipped cells when the
        configuration cannot run or no trial gave a score."""
        done = [t for t in self.study.trials if t.state == optuna.trial.TrialState.COMPLETE]
        if self.base.skip_reason or not done:
            tuning = self._tuning("selected", None, {})
            reason = self.base.skip_reason or (f"no configuration to re-run: none of the {len(self.trials)} trials "
                                               f"gave a validation score ({self.failures[0]}, ...)")
            return [self.base.model_copy(update={"tuning": tuning, "seed": s, "skip_reason": reason}) for s in seeds]
        sign = -1.0 if self.study.direction == optuna.study.StudyDirection.MINIMIZE else 1.0
        best = max(done, key=lambda t: (sign * cast(float, t.value), -t.number))  # a complete trial has a value
        return [self._configure(self._tuning("selected", best.number, best.params), s) for s in seeds]


class Plan:
    """A tuned grid's cells: rounds of trials, then the selected configurations on the grid's seeds."""

    def __init__(self, grid: Grid, registry: Registry, data_root: str | Path | None = None,
                 fake_data: bool = False) -> None:
        """`fake_data`: the `--fake-data` smoke test — one trial per configuration, then the first seed."""
        assert grid.search is not None
        self.search = grid.search.model_copy(update={"trials": 1}) if fake_data else grid.search
        self.seeds = grid.seeds[:1] if fake_data else grid.seeds
        self.studies = [Study(cell, ref.params, self.search, registry)
                        for cell, ref in configurations(grid, registry, data_root, fake_data)]
        self.active = [s for s in self.studies if s.base.skip_reason is None]
        self.total = len(self.active) * self.search.trials + len(self.studies) * len(self.seeds)

    def stages(self, load: Callable[[str], CellResult | None]) -> Iterator[list[Cell]]:
        """Each round's trial cells, then the selected ones; `load` reads a finished cell's stored result."""
        for _ in range(self.search.trials):
            cells = [study.ask() for study in self.active]
            yield cells
            for study, cell in zip(self.active, cells):
                study.tell(load(cell.cell_id))
        yield [cell for study in self.studies for cell in study.selected(self.seeds)]
