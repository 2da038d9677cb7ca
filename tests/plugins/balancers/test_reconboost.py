"""ReconBoost: the boosting loss (the worked vector computed by hand), the consolidation term with and without its
gradient (the released no-op), the stage schedule and what each phase trains, end-to-end with two and three
modalities."""

from __future__ import annotations

import math

import pytest
import torch

from mmbench.testing import assert_trained, tiny_components, tiny_context, train_tiny
from mmbench_plugins.balancers.reconboost import HEAD, ReconBoost, boosting_loss, consolidation, phase_of

THREE = {"modalities": [{"name": "fast", "dim": 16, "signal": 5.0, "coverage": 0.8, "code": "linear"},
                        {"name": "slow", "dim": 64, "signal": 2.5, "coverage": 1.0, "code": "sign"},
                        {"name": "mid", "dim": 32, "signal": 1.5, "coverage": 1.0, "code": "linear"}]}


def test_worked_vector_boosting_loss():
    # C = 6, w1 = 5, w2 = 1, softmax(F_{-m})[y] = 0.8, softmax(z_m)[y] = 0.5: −(5 − 0.8)·ln 0.5 / 6 = 0.485203
    z_m = torch.log(torch.tensor([[0.5] + [0.1] * 5]))
    ensemble = torch.log(torch.tensor([[0.8] + [0.04] * 5]))
    y = torch.tensor([0])
    assert boosting_loss(z_m, ensemble, y, 5.0, 1.0).item() == pytest.approx(0.485203, abs=1e-6)
    # no other learner yet: the constant ensemble's softmax is 1 (official), weight w1 − w2 = 4
    assert boosting_loss(z_m, None, y, 5.0, 1.0).item() == pytest.approx(-4 * math.log(0.5) / 6, abs=1e-6)


def test_the_consolidation_term_trains_the_learner_only_with_its_gradient():
    z_prev, y = torch.tensor([[2.0, 0.0, -1.0]]), torch.tensor([1])
    z0 = torch.tensor([[0.0, 1.0, 0.0]])
    # MSE over the 3 elements of softmax([0, 1, 0]) − softmax([2, 0, −1])
    expected = ((torch.softmax(z0, -1) - torch.softmax(z_prev, -1)) ** 2).mean().item()
    alone = z0.clone().requires_grad_(True)
    (grad_alone,) = torch.autograd.grad(boosting_loss(alone, z_prev, y, 5.0, 1.0), alone)
    for gradient in (True, False):
        z = z0.clone().requires_grad_(True)
        term = consolidation(z, z_prev, gradient)
        assert term.item() == pytest.approx(expected, rel=1e-6)
        (grad,) = torch.autograd.grad(boosting_loss(z, z_prev, y, 5.0, 1.0) + 1.0 * term, z)
        # the released term (no gradient) leaves ∂L/∂z as it is for any α; the paper's term changes it
        assert torch.allclose(grad, grad_alone) is not gradient


def test_the_schedule_alternates_learning_and_rectification():
    order = ("a", "v")
    phases = [phase_of(e, 2, 1, order) for e in range(7)]
    assert [(p.stage, p.rectifying, p.modality) for p in phases] == [
        (0, False, "a"), (0, False, "a"), (0, True, "a"), (1, False, "v"), (1, False, "v"), (1, True, "v"),
        (2, False, "a")]
    assert [p.learned for p in phases] == [(), (), ("a",), ("a",), ("a",), ("a", "v"), ("a", "v")]
    assert [p.previous for p in phases] == [None, None, None, "a", "a", "a", "v"]
    assert phase_of(6, 1, 1, ("t", "v", "a")).learned == ("t", "v", "a")


def test_each_phase_trains_what_it_should():
    balancer, ctx, batch = tiny_context(tiny_components(ReconBoost, {"epochs_per_stage": 1, "correct_epochs": 1}))
    ctx.epoch = 0
    learn = balancer.stage(ctx)
    assert learn.trains == {"encoder.fast", f"extra.{HEAD}"} and not learn.selectable
    ctx.epoch = 3
    rectify = balancer.stage(ctx)
    assert rectify.trains == {"encoder.fast", "encoder.slow", f"extra.{HEAD}", "extra.boost_rate"}
    assert rectify.selectable
    # a learning step of `slow` against the ensemble of `fast`: fast's encoder and ρ get no gradient
    ctx.epoch = 2
    balancer.stage(ctx)
    balancer.train_step(ctx, batch)
    grads = {n: p.grad for n, p in ctx.model.named_parameters()}
    assert all(g is None for n, g in grads.items() if n.startswith("encoders.fast") or "boost_rate" in n)
    assert any(g is not None and g.abs().sum() > 0 for n, g in grads.items() if n.startswith("encoders.slow"))


@pytest.mark.parametrize("task_params", [None, THREE])
def test_end_to_end(task_params):
    outcome = train_tiny(ReconBoost, epochs=7, balancer_params={"epochs_per_stage": 1, "correct_epochs": 1},
                         task_params=task_params)
    assert_trained(outcome, 7)
    stages = [h.stage for h in outcome.history]
    assert stages[:2] == ["learn.fast", "rectify"] and stages[2] == "learn.slow"
    n = 3 if task_params else 2
    assert outcome.best_epoch is not None and outcome.best_epoch >= 2 * n - 1  # a rectification with all learned
    assert outcome.history[-1].coefficients["rate"] != 1.0  # ρ learns in rectification
