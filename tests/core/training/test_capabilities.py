"""What a balancer can do beyond one step, each through a declared extension point: train in stages, compose
each epoch's data, add modules (with or without the engine's optimizer), move parameters back toward their
initial values, snapshot them, forget optimizer state, and read a split in its own order."""

from collections import Counter

import pytest
import torch
from torch import nn

from mmbench.api import Balancer, EpochData, Requirements, Stage
from mmbench.running.cells import incompatibility
from mmbench.testing import check_balancer, tiny_components, tiny_context, train_tiny


class Staged(Balancer):
    """Epoch 0: only the fast encoder and the fusion learn, and it is never selected; then a fresh optimizer."""

    name = "staged"
    seen: list[tuple[int, str, int]] = []

    def stage(self, ctx):
        if ctx.epoch == 0:
            return Stage("warm-up", selectable=False, trains=frozenset({"encoder.fast", "fusion"}))
        return Stage("main", fresh_optimizer=True)

    def on_epoch_start(self, ctx):
        self.seen.append((ctx.epoch, ctx.stage.name, id(ctx.optimizer)))
        if ctx.epoch == 0:
            self.slow_before = ctx.snapshot("encoders.slow")


def test_stages_freeze_what_does_not_learn_start_a_fresh_optimizer_and_are_never_selected_when_told():
    Staged.seen = []
    outcome = train_tiny(Staged, epochs=3, lr=0.5)
    assert [h.stage for h in outcome.history] == ["warm-up", "main", "main"]
    (_, _, first), (_, _, second), (_, _, third) = Staged.seen
    assert first != second == third  # a new optimizer once, when the main stage begins
    assert outcome.best_epoch in (1, 2)


def test_a_frozen_group_does_not_move_during_its_stage():
    class Probe(Staged):
        name = "staged_probe"
        moved: list[bool] = []

        def on_epoch_end(self, ctx, stats):
            if ctx.epoch == 0:
                after = ctx.snapshot("encoders.slow")
                self.moved.append(any(not torch.equal(after[k], self.slow_before[k]) for k in after))
                fast = ctx.snapshot("encoders.fast")
                self.moved.append(any(not torch.equal(fast[k], self.fast_before[k]) for k in fast))

        def on_epoch_start(self, ctx):
            super().on_epoch_start(ctx)
            if ctx.epoch == 0:
                self.fast_before = ctx.snapshot("encoders.fast")

    Probe.moved = []
    train_tiny(Probe, epochs=2, lr=0.5)
    assert Probe.moved == [False, True]  # the slow encoder is frozen, the fast one learns


class NeverSelectable(Balancer):
    """Every epoch is a stage that is not selected, and the method has an extra module of its own."""

    name = "never_selectable"

    def extra_modules(self, feature_dims, num_classes):
        return {"aux": nn.Linear(sum(feature_dims.values()), num_classes)}

    def stage(self, ctx):
        return Stage("teacher", selectable=False)

    def eval_logits(self, ctx, out):  # predicts with its extra module, so that module must still be there
        return ctx.model.extras["aux"](torch.cat([out.features[m] for m in ctx.model.modalities], dim=1))


def test_a_run_without_a_selectable_epoch_keeps_the_model_as_training_left_it_extras_included():
    outcome = train_tiny(NeverSelectable, epochs=2)
    assert outcome.status == "ok" and outcome.best_epoch == 1 and outcome.test is not None


class Composing(Balancer):
    """Each epoch reads samples 0..9 three times, tagged by copy, one tag per batch."""

    name = "composing"
    batches: list[tuple[torch.Tensor, torch.Tensor]] = []

    def epoch_data(self, ctx):
        return EpochData(indices=list(range(10)) * 3, tags=[0] * 10 + [1] * 10 + [2] * 10, group_by_tag=True)

    def train_step(self, ctx, batch):
        self.batches.append((batch.meta["index"].clone(), batch.meta["tag"].clone()))  # read after the step
        return super().train_step(ctx, batch)


def test_a_composed_epoch_reads_the_planned_samples_with_their_tags_one_tag_per_batch():
    Composing.batches = []
    outcome = train_tiny(Composing, epochs=2)
    assert len(outcome.history) == 2
    per_epoch = len(Composing.batches) // 2
    assert per_epoch == 3  # ten samples per tag fit one batch of 32 each
    for indices, tags in Composing.batches:
        assert len(set(tags.tolist())) == 1 and sorted(indices.tolist()) == list(range(10))
    first = Counter(tag for _, tags in Composing.batches[:per_epoch] for tag in tags.tolist())
    assert first == {0: 10, 1: 10, 2: 10}


def test_epoch_data_refuses_tags_that_do_not_match_the_indices():
    with pytest.raises(ValueError, match="3 indices but 2 tags"):
        EpochData(indices=[0, 1, 2], tags=[0, 1])


class Growing(Balancer):
    """Adds a second classifier of the fused features at epoch 1 and trains it with the task loss."""

    name = "growing"

    def on_epoch_start(self, ctx):
        if ctx.epoch == 1:
            ctx.add_module("branch", nn.Linear(16, 4), lr=0.01)

    def loss(self, ctx, batch, out):
        loss = super().loss(ctx, batch, out)
        if "branch" in ctx.model.extras:
            features = torch.cat([out.features[m] for m in ctx.model.modalities], dim=1)
            loss = loss + ctx.task_loss(ctx.model.extras["branch"](features), batch.label)
        return loss


def test_a_module_added_in_training_joins_the_optimizer_and_leaves_with_an_earlier_selected_epoch():
    balancer, ctx, batch = tiny_context(tiny_components(Growing))
    ctx.epoch = 1
    balancer.on_epoch_start(ctx)
    [group] = [g for g in ctx.optimizer.param_groups if g.get("name") == "extra.branch"]
    assert group["lr"] == 0.01 and len(group["params"]) == 2
    with pytest.raises(ValueError, match="already has an extra module 'branch'"):
        ctx.add_module("branch", nn.Linear(2, 2))
    outcome = train_tiny(Growing, epochs=3, lr=0.05)
    assert outcome.status == "ok"


class OwnOptimizer(Balancer):
    name = "own_optimizer"
    separately_optimized = frozenset({"aux"})

    def extra_modules(self, feature_dims, num_classes):
        return {"aux": nn.Linear(8, num_classes), "shared": nn.Linear(8, num_classes)}


def test_extras_a_balancer_steps_itself_stay_out_of_the_engines_optimizer():
    balancer, ctx, _ = tiny_context(tiny_components(OwnOptimizer))
    from mmbench.training.stages import optimized_groups

    groups = optimized_groups(ctx.model, OwnOptimizer)
    assert "extra.shared" in groups and "extra.aux" not in groups


class Reinitialising(Balancer):
    name = "reinitialising"
    requires = Requirements(initial_weights=True)

    def on_epoch_end(self, ctx, stats):
        with torch.no_grad():  # all the way back to the start, as a re-initialisation with alpha = 1
            for name, p in ctx.model.named_parameters():
                p.copy_(ctx.initial_state[name])
        ctx.reset_optimizer_state(list(ctx.model.parameters()))
        self.state_after = len(ctx.optimizer.state)


def test_the_initial_state_is_kept_for_a_balancer_that_asks_and_optimizer_state_can_be_forgotten():
    balancer, ctx, _ = tiny_context(tiny_components(Reinitialising))
    assert ctx.initial_state == {}  # tiny_context builds no engine state; the engine keeps it
    outcome = train_tiny(Reinitialising, epochs=2, optimizer="sgd", lr=0.5)
    assert outcome.status == "ok"
    assert [h.train_loss for h in outcome.history][0] == pytest.approx(outcome.history[1].train_loss, rel=0.2)
    # the selected model is the one validated, not the one the epoch's end put back to the start
    assert outcome.val.metrics == outcome.history[outcome.best_epoch].val.metrics


class Ordered(Balancer):
    name = "ordered"
    positions: list[int] = []

    def setup(self, ctx):
        for batch in ctx.split_batches("train"):
            self.positions += batch.meta["index"].tolist()


def test_a_split_can_be_read_in_its_own_order_with_each_samples_position():
    Ordered.positions = []
    train_tiny(Ordered)
    assert Ordered.positions == list(range(256))


def test_a_balancer_that_recombines_features_needs_a_late_fusion():
    class Recombining(Balancer):
        name = "recombining"
        requires = Requirements(late_fusion=True)

    components = tiny_components("joint")
    from mmbench import registry as registry_lib

    reg = registry_lib.default()
    mlp = {m: reg.get("encoders", "mlp").cls for m in components.task.modalities}
    assert incompatibility(Recombining, components.task, mlp, reg.get("fusions", "concat").cls) is None
    assert "not a late fusion" in incompatibility(Recombining, components.task, mlp, reg.get("fusions", "mmtm").cls)


@pytest.mark.parametrize("balancer", [Staged, Composing, Growing, Reinitialising, Ordered])
def test_each_capability_keeps_the_balancer_contract(balancer):
    check_balancer(balancer, expect_coefficients=False)
