"""The search plan driven with hand-made results (nothing trains): budget, selection, failures, replay."""

import json
import math

import pytest
from pydantic import Field, model_validator

from mmbench import registry as registry_lib
from mmbench.api import Balancer, Params, hookimpl, search
from mmbench.running import grid as grid_lib
from mmbench.running.search import Plan
from mmbench.schema.results import CellResult
from tests.conftest import TINY_GRID


def tuned(registry, block, balancers="[joint, ogm]", fusions="[concat]", seeds="[0, 1]"):
    text = (TINY_GRID.replace("balancers: [joint]", f"balancers: {balancers}")
            .replace("fusions: [concat, sum]", f"fusions: {fusions}").replace("seeds: [0, 1]", f"seeds: {seeds}"))
    return Plan(grid_lib.parse(text + block, registry), registry)


def result_of(cell, metrics):
    """The result a worker would return: `metrics` on validation, or a failure when None."""
    base = cell.model_dump(exclude={"data_root", "skip_reason"})
    if cell.skip_reason:
        return CellResult(**base, status="skipped", reason=cell.skip_reason)
    if metrics is None:
        return CellResult(**base, status="failed", reason="RuntimeError: boom")
    return CellResult(**base, status="ok", val={"metrics": metrics})


def drive(plan, score):
    """Run the plan's stages, answering every cell with `score(cell)`; returns the stages and the results."""
    store, stages = {}, []
    for cells in plan.stages(store.get):
        for cell in cells:
            store[cell.cell_id] = result_of(cell, None if cell.skip_reason else score(cell))
        stages.append(cells)
    return stages, store


def by_lr(cell):
    return {"accuracy": cell.train.optimizer.lr}


def test_every_configuration_gets_the_same_trials_then_its_choice_on_every_seed(registry):
    plan = tuned(registry, "search: {trials: 3, seed: 5}\n")
    stages, store = drive(plan, by_lr)
    *rounds, final = stages
    assert len(rounds) == 3 and all(len(r) == 2 for r in rounds)  # joint and ogm, one trial each per round
    trials = [c for r in rounds for c in r]
    assert all(c.is_trial and c.seed == 5 for c in trials)
    assert [c.tuning.trial for c in trials] == [0, 0, 1, 1, 2, 2]
    assert len({c.cell_id for c in trials}) == 6
    assert [(c.balancer.name, c.seed, c.is_trial) for c in final] == [
        ("joint", 0, False), ("joint", 1, False), ("ogm", 0, False), ("ogm", 1, False)]
    assert plan.total == len(store) == 10


def test_the_best_trial_on_validation_is_re_run_with_its_values(registry):
    stages, store = drive(tuned(registry, "search: {trials: 4}\n"), by_lr)
    for name in ("joint", "ogm"):
        trials = [c for r in stages[:-1] for c in r if c.balancer.name == name]
        best = max(trials, key=lambda c: c.train.optimizer.lr)
        chosen = [c for c in stages[-1] if c.balancer.name == name]
        for cell in chosen:
            assert cell.tuning.stage == "selected" and cell.tuning.trial == best.tuning.trial
            assert cell.tuning.params == best.tuning.params
            assert cell.train == best.train and cell.balancer == best.balancer
    ogm = next(c for c in stages[-1] if c.balancer.name == "ogm")
    assert set(ogm.tuning.params) == {"balancer.alpha", "optimizer.lr", "optimizer.weight_decay"}
    assert ogm.balancer.params["alpha"] == ogm.tuning.params["balancer.alpha"]


def test_a_tie_goes_to_the_earlier_trial(registry):
    stages, _ = drive(tuned(registry, "search: {trials: 3}\n", balancers="[joint]"), lambda c: {"accuracy": 0.5})
    assert {c.tuning.trial for c in stages[-1]} == {0}


def test_a_lower_is_better_metric_selects_the_smallest(registry):
    stages, _ = drive(tuned(registry, "search: {trials: 4, metric: ece}\n", balancers="[joint]"),
                      lambda c: {"ece": c.train.optimizer.lr, "accuracy": 0.5})
    trials = [c for r in stages[:-1] for c in r]
    assert stages[-1][0].train.optimizer.lr == min(c.train.optimizer.lr for c in trials)


def test_failed_trials_are_never_selected(registry):
    def fails_above_median(cell):
        return {"accuracy": cell.train.optimizer.lr} if cell.train.optimizer.lr < 0.01 else None

    stages, store = drive(tuned(registry, "search: {trials: 6}\n", balancers="[joint]"), fails_above_median)
    trials = [c for r in stages[:-1] for c in r]
    scored = [c for c in trials if c.train.optimizer.lr < 0.01]
    assert 0 < len(scored) < len(trials)  # the seed gives both kinds
    assert stages[-1][0].train.optimizer.lr == max(c.train.optimizer.lr for c in scored)


def test_when_no_trial_scores_the_configuration_is_skipped_with_the_reason(registry):
    stages, _ = drive(tuned(registry, "search: {trials: 2}\n", balancers="[joint]"), lambda c: None)
    for cell in stages[-1]:
        assert cell.skip_reason == ("no configuration to re-run: none of the 2 trials gave a validation score "
                                    "(trial 0: failed: RuntimeError: boom, ...)")
        assert cell.tuning.stage == "selected" and cell.tuning.params == {}


def test_an_incompatible_configuration_gets_no_trials_and_says_why(registry):
    plan = tuned(registry, "search: {trials: 2}\n", balancers="[ogm]", fusions="[concat, gmu]")
    stages, _ = drive(plan, by_lr)
    assert {c.fusion.name for r in stages[:-1] for c in r} == {"concat"}
    skipped = [c for c in stages[-1] if c.fusion.name == "gmu"]
    assert len(skipped) == 2 and all("does not offer" in c.skip_reason for c in skipped)
    assert plan.total == 1 * 2 + 2 * 2


def test_a_replay_with_the_stored_results_asks_the_same_cells(registry):
    first, store = drive(tuned(registry, "search: {trials: 4, sampler: tpe}\n"), by_lr)
    replay = []
    for cells in tuned(registry, "search: {trials: 4, sampler: tpe}\n").stages(store.get):
        replay.append([c.cell_id for c in cells])
    assert replay == [[c.cell_id for c in cells] for cells in first]


def test_another_search_seed_draws_other_values(registry):
    a, _ = drive(tuned(registry, "search: {trials: 2, seed: 1}\n", balancers="[joint]"), by_lr)
    b, _ = drive(tuned(registry, "search: {trials: 2, seed: 2}\n", balancers="[joint]"), by_lr)
    assert a[0][0].tuning.params != b[0][0].tuning.params


def test_tpe_starts_with_half_the_budget_of_random_trials_then_models_them(registry):
    lrs = {}
    for sampler in ("random", "tpe"):
        block = f"search: {{trials: 8, sampler: {sampler}, seed: 3, space: {{optimizer: {{weight_decay: fixed}}}}}}\n"
        stages, _ = drive(tuned(registry, block, balancers="[joint]"), by_lr)
        lrs[sampler] = [r[0].train.optimizer.lr for r in stages[:-1]]
    assert lrs["tpe"][:4] == lrs["random"][:4]
    assert all(a != b for a, b in zip(lrs["tpe"][4:], lrs["random"][4:]))


class PairParams(Params):
    low: float = Field(0.2, ge=0.0, le=1.0, json_schema_extra=search.uniform(0.0, 1.0))
    high: float = Field(0.8, ge=0.0, le=1.0, json_schema_extra=search.uniform(0.0, 1.0))

    @model_validator(mode="after")
    def _ordered(self):
        if self.low > self.high:
            raise ValueError(f"low ({self.low:.2f}) > high ({self.high:.2f})")
        return self


class Pair(Balancer):
    """Declares two parameters that must stay ordered."""

    name = "pair"
    Params = PairParams


class PairPlugin:
    @hookimpl
    def mmbench_balancers(self):
        return [Pair]


def test_sampled_values_that_do_not_fit_together_make_a_skipped_trial():
    registry = registry_lib.load(extra_plugins=[PairPlugin()])
    stages, store = drive(tuned(registry, "search: {trials: 6}\n", balancers="[pair]"), by_lr)
    trials = [c for r in stages[:-1] for c in r]
    misfits = [c for c in trials if c.tuning.params["balancer.low"] > c.tuning.params["balancer.high"]]
    assert misfits and len(misfits) < len(trials)
    for cell in misfits:
        assert cell.skip_reason.startswith("the sampled values do not fit together: Value error, low (")
        assert store[cell.cell_id].status == "skipped"
    chosen = stages[-1][0]
    assert chosen.skip_reason is None and chosen.balancer.params["low"] <= chosen.balancer.params["high"]


@pytest.mark.parametrize("sampler", ["random", "tpe"])
def test_sampled_values_stay_inside_the_space(registry, sampler):
    block = (f"search: {{trials: 8, sampler: {sampler}, space: {{balancers: {{ogm: {{alpha: {{uniform: [0.2, 0.4]}}}}}},"
             " optimizer: {lr: {log_uniform: [0.01, 0.1]}}}}\n")
    stages, _ = drive(tuned(registry, block, balancers="[ogm]"), by_lr)
    for cell in (c for r in stages[:-1] for c in r):
        assert 0.2 <= cell.balancer.params["alpha"] <= 0.4 and 0.01 <= cell.train.optimizer.lr <= 0.1
        assert 1e-6 <= cell.train.optimizer.weight_decay <= 1e-2


def test_configurations_with_spaces_of_one_shape_draw_the_same_points(registry):
    stages, _ = drive(tuned(registry, "search: {trials: 3}\n", balancers="[ogm, agm]"), by_lr)
    for ogm, agm in stages[:-1]:
        assert ogm.train.optimizer == agm.train.optimizer  # the same learning rate and weight decay
        position = [math.log(a / low) / math.log(high / low) for a, low, high in
                    ((ogm.balancer.params["alpha"], 0.05, 3.0), (agm.balancer.params["alpha"], 0.25, 5.0))]
        assert position[0] == pytest.approx(position[1])  # alpha at the same place of each one's range


def test_a_trial_travels_to_a_worker_as_json_and_stays_a_trial(registry):
    from mmbench.schema.cell import Cell

    plan = tuned(registry, "search: {trials: 1}\n", balancers="[ogm]")
    trial = next(plan.stages(lambda cell_id: None))[0]
    received = Cell.model_validate_json(json.dumps(trial.to_json()))
    assert received.is_trial and received.cell_id == trial.cell_id and received.tuning == trial.tuning
