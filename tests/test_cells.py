"""Grid expansion: cells, content hashes, per-task defaults, compatibility."""

from mmbench import grid as grid_lib
from mmbench.cells import expand, incompatibility
from mmbench.protocols import Balancer, Requirements
from mmbench_plugins.encoders.mlp import MLPEncoder
from mmbench_plugins.fusions.concat import ConcatFusion
from mmbench_plugins.tasks.synthetic import SyntheticTask
from tests.conftest import TINY_GRID


def test_expansion_order_and_hashes(registry):
    cells = expand(grid_lib.parse(TINY_GRID, registry), registry)
    assert [(c.fusion["name"], c.seed) for c in cells] == [("concat", 0), ("concat", 1), ("sum", 0), ("sum", 1)]
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


def test_task_defaults_apply_under_grid_params(registry, monkeypatch):
    from mmbench_example_balancer.modality_dropout import ModalityDropout

    monkeypatch.setattr(ModalityDropout, "task_defaults", {"synthetic": {"p": 0.5}})
    text = TINY_GRID.replace("balancers: [joint]", "balancers: [modality_dropout, {name: modality_dropout, params: {p: 0.1}}]")
    cells = expand(grid_lib.parse(text, registry), registry)
    assert [c.balancer["params"]["p"] for c in cells if c.fusion["name"] == "concat"] == [0.5, 0.5, 0.1, 0.1]


class OwnPredictions(Balancer):
    name = "own_predictions"
    requires = Requirements(ignores_fusion=True)


def test_a_balancer_that_ignores_the_fusion_is_paired_with_the_first_fusion_only(monkeypatch):
    from mmbench import registry as registry_lib
    from mmbench.hookspecs import hookimpl

    class Plugin:
        @hookimpl
        def mmbench_balancers(self):
            return [OwnPredictions]

    registry = registry_lib.load(extra_plugins=[Plugin()])
    text = TINY_GRID.replace("balancers: [joint]", "balancers: [joint, own_predictions]")
    cells = expand(grid_lib.parse(text, registry), registry)
    pairs = sorted({(c.balancer["name"], c.fusion["name"]) for c in cells})
    assert pairs == [("joint", "concat"), ("joint", "sum"), ("own_predictions", "concat")]
