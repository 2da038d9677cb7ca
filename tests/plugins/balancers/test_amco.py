"""AMCo: the mask schedule and the dependence test pinned by hand, a real step where a fully masked dependent
modality gets no gradient (and the next step's flags come from this step's softmax mass), the epoch-0 ramp, three
modalities, and the registry contract."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from mmbench.testing import check_balancer, tiny_components, tiny_context, train_tiny
from mmbench_plugins.balancers.amco import LINEAR_STAR, AMCo, block_mass, class_mask, mask_rate

THREE = {"modalities": [{"name": "a", "dim": 8, "signal": 4.0}, {"name": "b", "dim": 12, "signal": 2.0},
                        {"name": "c", "dim": 6, "signal": 1.0, "code": "sign"}]}


def test_mask_rate_and_mask_vector():
    # ε = 0.3, l_t = 0.15: p_t = sin(π/4) = 0.707107 -> ⌊0.707·6⌋ = 4 of 6 class logits masked
    assert math.isclose(mask_rate(0.15, 0.3), 0.7071068, rel_tol=1e-6)
    assert mask_rate(0.0, 0.3) == 0.0 and mask_rate(0.9, 0.3) == 1.0
    generator = torch.Generator().manual_seed(0)
    mask = class_mask(6, mask_rate(0.15, 0.3), generator, torch.device("cpu"))
    assert sorted(mask.tolist()) == [0, 0, 0, 0, 1, 1]
    assert class_mask(6, 1.0, generator, torch.device("cpu")).sum() == 0
    assert class_mask(6, 0.0, generator, torch.device("cpu")).sum() == 6


def test_block_mass_vector():
    # row 1: softmax([0, 0, ln3, ln3]) = [1, 1, 3, 3]/8 -> a 0.25, v 0.75; row 2: all equal -> 0.5, 0.5
    log3 = math.log(3.0)
    z_a = torch.tensor([[0.0, 0.0], [1.0, 1.0]])
    z_v = torch.tensor([[log3, log3], [1.0, 1.0]])
    torch.testing.assert_close(block_mass([z_a, z_v]), torch.tensor([0.375, 0.625]))


def test_a_fully_masked_dependent_modality_gets_no_gradient_and_flags_come_from_the_step():
    balancer, ctx, batch = tiny_context(tiny_components(AMCo), epochs=2)
    balancer.dependent = torch.tensor([True, False])  # "fast" flagged by the previous step
    balancer.level = 1.0  # ≥ ε: every class logit of a dependent modality is masked
    out = ctx.model(batch.inputs)
    loss = balancer.loss(ctx, batch, out)
    z_slow = out.contributions["slow"]
    star = ctx.model.extras[LINEAR_STAR]
    zeros = torch.zeros_like(z_slow)
    expected = (F.cross_entropy(star(z_slow), batch.label) + F.cross_entropy(zeros, batch.label)
                + F.cross_entropy(z_slow, batch.label))
    torch.testing.assert_close(loss, expected)
    ctx.optimizer.zero_grad()
    loss.backward()
    assert all(p.grad is None or not p.grad.any() for p in ctx.model.encoders["fast"].parameters())
    assert any(p.grad is not None and p.grad.any() for p in ctx.model.encoders["slow"].parameters())
    mass = block_mass([zeros, z_slow.detach()])
    assert balancer.dependent.tolist() == (mass > 0.5).tolist()


def test_nothing_is_masked_in_epoch_zero_and_the_mask_ramps_up_after():
    outcome = train_tiny(AMCo, epochs=2)
    first, second = (e.coefficients for e in outcome.history)
    assert first["p_t"] == 0.0
    assert second["p_t"] > 0.5  # l_t grows by 0.1 per batch in epoch 1: 0, 0.1, 0.2, 0.3, ... of 8 batches
    assert set(first) == {"p_t", "dependent.fast", "dependent.slow", "mass.fast", "mass.slow"}


def test_prediction_goes_through_the_extra_layer():
    balancer, ctx, batch = tiny_context(tiny_components(AMCo))
    out = ctx.model(batch.inputs)
    torch.testing.assert_close(balancer.eval_logits(ctx, out), ctx.model.extras[LINEAR_STAR](out.logits))


def test_three_modalities():
    outcome = train_tiny(AMCo, epochs=2, task_params=THREE)
    assert outcome.status == "ok"
    assert {"dependent.a", "dependent.b", "dependent.c"} <= set(outcome.history[-1].coefficients)


def test_contract():
    check_balancer(AMCo)
