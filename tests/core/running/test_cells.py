"""Grid expansion: cells, content hashes, per-task defaults, compatibility."""

import pytest

from mmbench.contract.balancer import Balancer, Requirements
from mmbench.running import grid as grid_lib
from mmbench.running.cells import expand, incompatibility
from mmbench_plugins.encoders.mlp import MLPEncoder
from mmbench_plugins.fusions.concat import ConcatFusion
from mmbench_plugins.fusions.gmu import GMUFusion
from mmbench_plugins.tasks.synthetic import SyntheticTask
from tests.conftest import TINY_GRID


def test_expansion_order_and_hashes(registry):
    cells = expand(grid_lib.parse(TINY_GRID, registry), registry)
    assert [(c.fusion.name, c.seed) for c in cells] == [("concat", 0), ("concat", 1), ("sum", 0), ("sum", 1)]
    assert len({c.cell_id for c in cells}) == 4
    assert cells[0].entry_id == cells[1].entry_id != cells[2].entry_id


def test_hash_ignores_explicit_defaults_and_execution_details_but_not_the_recipe(registry):
    base = expand(grid_lib.parse(TINY_GRID, registry), registry)[0]
    explicit = TINY_GRID.replace("layers: 2, out_dim: 8}", "layers: 2, out_dim: 8, dropout: 0.0}")
    same = expand(grid_lib.parse(explicit.replace("device: cpu", "device: auto"), registry), registry)[0]
    other = expand(grid_lib.parse(TINY_GRID.replace("lr: 0.05", "lr: 0.1"), registry), registry)[0]
    assert same.cell_id == base.cell_id
    assert other.cell_id != base.cell_id and other.benchmark_version != base.benchmark_version


class NeedsAugmentationAndSum(Balancer):
    name = "needs_things"
    requires = Requirements(augmented_views=True, fusions=frozenset({"sum"}))


class NeedsContributions(Balancer):
    name = "needs_contributions"
    requires = Requirements(fusion_contributions=True)


class TwoAtMost(Balancer):
    name = "two_at_most"
    requires = Requirements(max_modalities=2)


class NeedsThreeModalities(Balancer):
    name = "needs_three"
    requires = Requirements(min_modalities=3)


def test_incompatibility_reasons():
    task = SyntheticTask(SyntheticTask.Params())
    encoders = {m: MLPEncoder for m in task.modalities}
    assert incompatibility(NeedsAugmentationAndSum, task, encoders, ConcatFusion) == \
        "needs_things supports fusions ['sum'], not 'concat'"
    assert incompatibility(NeedsThreeModalities, task, encoders, ConcatFusion) == \
        "needs_three handles 3..any modalities; 'synthetic' has 2"
    assert incompatibility(NeedsContributions, task, encoders, GMUFusion) == \
        "needs_contributions needs per-modality logit contributions, which fusion 'gmu' does not offer"
    assert incompatibility(NeedsContributions, task, encoders, ConcatFusion) is None
    assert incompatibility(TwoAtMost, task, encoders, ConcatFusion) is None  # the bound is inclusive


def test_task_defaults_apply_under_grid_params(registry, monkeypatch):
    from mmbench_example_balancer.modality_dropout import ModalityDropout

    monkeypatch.setattr(ModalityDropout, "task_defaults", {"synthetic": {"p": 0.5}})
    text = TINY_GRID.replace("balancers: [joint]", "balancers: [modality_dropout, {name: modality_dropout, params: {p: 0.1}}]")
    cells = expand(grid_lib.parse(text, registry), registry)
    assert [c.balancer.params["p"] for c in cells if c.fusion.name == "concat"] == [0.5, 0.5, 0.1, 0.1]


class OwnPredictions(Balancer):
    name = "own_predictions"
    requires = Requirements(ignores_fusion=True)


def test_a_balancer_that_ignores_the_fusion_gets_one_cell_without_a_fusion(monkeypatch):
    from mmbench import registry as registry_lib
    from mmbench.contract.hooks import hookimpl

    class Plugin:
        @hookimpl
        def mmbench_balancers(self):
            return [OwnPredictions]

    registry = registry_lib.load(extra_plugins=[Plugin()])
    text = TINY_GRID.replace("balancers: [joint]", "balancers: [joint, own_predictions]")
    cells = expand(grid_lib.parse(text, registry), registry)
    pairs = sorted({(c.balancer.name, c.fusion.name if c.fusion else None) for c in cells}, key=str)
    assert pairs == [("joint", "concat"), ("joint", "sum"), ("own_predictions", None)]


# ------------------------------------------------------------------------------------ cell identity

IDENTITY_GRID = TINY_GRID.replace("balancers: [joint]", "balancers: [{name: ogm, params: {alpha: 0.3}}]") \
    .replace("fusions: [concat, sum]", "fusions: [{name: gmu, params: {hidden: 8}}]") \
    .replace("seeds: [0, 1]", "seeds: [0]") \
    .replace("  device: cpu", "  device: cpu\n  bf16: true\n  cpu_threads: 1\n  num_workers: 0\n  eval_batch_size: 64\n"
             "  scheduler: {name: step, step_size: 5, gamma: 0.5}\n  channels_last: true\n  deterministic: false\n"
             "  compile: false")

#: every field that determines a cell's result, and a grid edit that changes it
RESULT_FIELDS = {
    "task params": ("train_size: 128", "train_size: 130"),
    "encoder params": ("hidden: 16", "hidden: 17"),
    "fusion params": ("hidden: 8}", "hidden: 9}"),
    "balancer params": ("alpha: 0.3", "alpha: 0.4"),
    "train.epochs": ("epochs: 2", "epochs: 3"),
    "train.batch_size": ("batch_size: 32", "batch_size: 16"),
    "train.eval_batch_size": ("eval_batch_size: 64", "eval_batch_size: 32"),
    "train.bf16": ("bf16: true", "bf16: false"),
    "train.cpu_threads": ("cpu_threads: 1", "cpu_threads: 2"),
    "train.optimizer.name": ("name: sgd", "name: adam"),
    "train.optimizer.lr": ("lr: 0.05", "lr: 0.06"),
    "train.optimizer.momentum": ("lr: 0.05}", "lr: 0.05, momentum: 0.5}"),
    "train.optimizer.weight_decay": ("lr: 0.05}", "lr: 0.05, weight_decay: 0.001}"),
    "train.optimizer.betas": ("lr: 0.05}", "lr: 0.05, betas: [0.8, 0.99]}"),
    "train.scheduler.name": ("name: step", "name: cosine"),
    "train.scheduler.step_size": ("step_size: 5", "step_size: 6"),
    "train.scheduler.gamma": ("gamma: 0.5", "gamma: 0.6"),
}
EXECUTION_FIELDS = {
    "train.device": ("device: cpu", "device: auto"),
    "train.num_workers": ("num_workers: 0", "num_workers: 2"),
    # layout, kernel choice and compilation change rounding, not what is computed (like another GPU model)
    "train.channels_last": ("channels_last: true", "channels_last: false"),
    "train.deterministic": ("deterministic: false", "deterministic: true"),
    "train.compile": ("compile: false", "compile: true"),
}


def _leaf_fields(model, prefix="train") -> set[str]:
    from pydantic import BaseModel

    out = set()
    for name, field in model.model_fields.items():
        default = field.default
        if isinstance(default, BaseModel):
            out |= _leaf_fields(type(default), f"{prefix}.{name}")
        else:
            out.add(f"{prefix}.{name}")
    return out


def _only_cell(text, registry):
    [cell] = expand(grid_lib.parse(text, registry), registry)
    return cell


def test_every_recipe_field_is_classified():
    """A new recipe field must be declared result-determining (tested below) or execution-only."""
    from mmbench.schema.recipe import TrainRecipe

    classified = {k for k in RESULT_FIELDS if k.startswith("train.")} | set(EXECUTION_FIELDS)
    assert _leaf_fields(TrainRecipe) == classified


@pytest.mark.parametrize("field", sorted(RESULT_FIELDS))
def test_every_result_determining_field_changes_the_cell_and_entry_ids(field, registry):
    old, new = RESULT_FIELDS[field]
    assert IDENTITY_GRID.count(old) == 1
    base = _only_cell(IDENTITY_GRID, registry)
    changed = _only_cell(IDENTITY_GRID.replace(old, new), registry)
    assert changed.cell_id != base.cell_id and changed.entry_id != base.entry_id


@pytest.mark.parametrize("field", sorted(EXECUTION_FIELDS))
def test_execution_only_fields_change_no_id(field, registry):
    old, new = EXECUTION_FIELDS[field]
    base = _only_cell(IDENTITY_GRID, registry)
    changed = _only_cell(IDENTITY_GRID.replace(old, new), registry)
    assert (changed.cell_id, changed.entry_id, changed.benchmark_version) == \
        (base.cell_id, base.entry_id, base.benchmark_version)


def test_the_seed_changes_the_cell_but_not_the_entry(registry):
    base = _only_cell(IDENTITY_GRID, registry)
    other = _only_cell(IDENTITY_GRID.replace("seeds: [0]", "seeds: [7]"), registry)
    assert other.cell_id != base.cell_id and other.entry_id == base.entry_id


def test_the_task_version_changes_every_id(registry, monkeypatch):
    base = _only_cell(IDENTITY_GRID, registry)
    monkeypatch.setattr(SyntheticTask, "version", "2")
    bumped = _only_cell(IDENTITY_GRID, registry)
    assert bumped.cell_id != base.cell_id and bumped.benchmark_version != base.benchmark_version


def test_a_change_to_the_evaluation_code_changes_the_benchmark_version(registry, monkeypatch):
    from mmbench.running import cells as cells_module

    def evaluate_v1(model):
        return model

    def evaluate_v2(model):
        return model * 2

    assert cells_module.evaluation_protocol((evaluate_v1,)) != cells_module.evaluation_protocol((evaluate_v2,))
    base = _only_cell(IDENTITY_GRID, registry)
    monkeypatch.setattr(cells_module, "evaluation_protocol", lambda: "best-validation/changed")
    changed = _only_cell(IDENTITY_GRID, registry)
    assert changed.benchmark_version != base.benchmark_version and changed.cell_id == base.cell_id


def test_a_fake_data_cell_is_one_epoch_of_two_sample_batches_with_the_grids_optimizer(registry):
    text = TINY_GRID.replace("epochs: 2", "epochs: 7\n  eval_batch_size: 16")
    [real, *_] = expand(grid_lib.parse(text, registry), registry)
    [fake, *_] = expand(grid_lib.parse(text, registry), registry, fake_data=True)
    assert (fake.train.epochs, fake.train.batch_size, fake.train.eval_batch_size) == (1, 2, 2)
    assert (real.train.epochs, real.train.batch_size, real.train.eval_batch_size) == (7, 32, 16)
    assert fake.train.optimizer == real.train.optimizer and fake.train.device == real.train.device


def test_a_fake_expansion_runs_each_configuration_once_on_the_first_seed_and_says_so(registry):
    grid = grid_lib.parse(TINY_GRID.replace("seeds: [0, 1]", "seeds: [3, 4, 5]"), registry)
    real, fake = expand(grid, registry), expand(grid, registry, fake_data=True)
    assert [(c.fusion.name, c.seed) for c in fake] == [("concat", 3), ("sum", 3)]
    assert len(real) == 6
    assert all(c.task.fake is True for c in fake) and all(c.task.fake is None for c in real)
    assert all(c.data_root is None for c in real + fake)  # generated data has no root


def test_scoring_names_the_metrics_where_lower_is_better(registry):
    [cell, *_] = expand(grid_lib.parse(TINY_GRID, registry), registry)
    assert cell.scoring.metrics == ["accuracy", "macro_f1", "ece"] and cell.scoring.primary_metric == "accuracy"
    assert cell.scoring.lower_is_better == ["ece"] and cell.scoring.modalities == ["fast", "slow"]


def test_a_tuning_budget_is_part_of_the_benchmark_version(registry):
    def version(search):
        return expand(grid_lib.parse(TINY_GRID + search, registry), registry)[0].benchmark_version

    default = expand(grid_lib.parse(TINY_GRID, registry), registry)[0].benchmark_version
    three, five = version("search: {trials: 3}\n"), version("search: {trials: 5}\n")
    assert len({default, three, five}) == 3
    assert version("search: {trials: 3, seed: 9}\n") == three  # the search's seed is not its budget


PINNED_VERSION = "1-e30c3c6b"


def test_the_benchmark_version_is_the_task_version_and_eight_hex_digits_of_the_protocol(registry, monkeypatch):
    """Pinned, with the evaluation code's hash held fixed: a change of this value re-versions every board, so it
    may change only on purpose (a change to the task, recipe or search identity, or to how they are hashed)."""
    from mmbench.running import cells as cells_module

    monkeypatch.setattr(cells_module, "evaluation_protocol", lambda: "fixed-evaluation")
    assert _only_cell(IDENTITY_GRID, registry).benchmark_version == PINNED_VERSION


def test_each_modality_gets_its_own_encoder_and_the_grids_paper_numbers_reach_the_cells(registry):
    text = TINY_GRID.replace('  - "*": {name: mlp, params: {hidden: 16, layers: 2, out_dim: 8}}',
                             '  - fast: {name: mlp, params: {hidden: 16, layers: 2, out_dim: 8}}\n'
                             '    "*": {name: mlp, params: {hidden: 4, layers: 2, out_dim: 8}}')
    text += "published: {source: a paper, results: {joint: {accuracy: 0.6}}}\n"
    [cell, *_] = expand(grid_lib.parse(text, registry), registry)
    assert (cell.encoders["fast"].params["hidden"], cell.encoders["slow"].params["hidden"]) == (16, 4)
    assert (cell.published, cell.published_source) == ({"accuracy": 0.6}, "a paper")
    [plain, *_] = expand(grid_lib.parse(TINY_GRID, registry), registry)
    assert (plain.published, plain.published_source) == ({}, None)
