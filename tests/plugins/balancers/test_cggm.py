"""CGGM: the coefficient and direction formulas pinned by hand (the worked vector d = [0.1, 0.3]), a real step
where each encoder's gradient becomes ρ·B_m times the plain one (B_m from the auxiliary classifiers' batch
accuracies), the direction term of one step entering the next loss and reaching the fusion's weights, the clip,
three modalities, and the registry contract."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mmbench.testing import check_balancer, tiny_components, tiny_context, train_tiny
from mmbench_plugins.balancers.cggm import (
    CGGM,
    CLASSIFIERS,
    direction_loss,
    modulation_coefficients,
    weight_cosine,
)

THREE = {"modalities": [{"name": "a", "dim": 8, "signal": 4.0}, {"name": "b", "dim": 12, "signal": 2.0},
                        {"name": "c", "dim": 6, "signal": 1.0, "code": "sign"}]}


def test_worked_vector_coefficients():
    # d = [0.1, 0.3]: B = [(0.4 − 0.1)/0.4, (0.4 − 0.3)/0.4] = [0.75, 0.25]; ρ = 1.3 -> [0.975, 0.325]
    coeffs = modulation_coefficients(torch.tensor([0.6, 0.5]), torch.tensor([0.5, 0.2]))
    torch.testing.assert_close(coeffs, torch.tensor([0.75, 0.25]))
    torch.testing.assert_close(1.3 * coeffs, torch.tensor([0.975, 0.325]))


def test_cancelling_accuracy_changes_blow_up_as_released_and_clamp_to_the_intent():
    acc, prev = torch.tensor([0.5, 0.25]), torch.tensor([0.25, 0.5])  # Σd = 0 exactly
    assert modulation_coefficients(acc, prev, clamp=False).abs().min() > 1e6
    # clamped: the modality that improved stops (0), the one that fell back keeps its gradient (1)
    torch.testing.assert_close(modulation_coefficients(acc, prev), torch.tensor([0.0, 1.0]))
    # both improving: B = 1 − d/Σd lies in [0, 1] already, the clamp changes nothing
    torch.testing.assert_close(modulation_coefficients(torch.tensor([0.6, 0.5]), torch.tensor([0.5, 0.2])),
                               modulation_coefficients(torch.tensor([0.6, 0.5]), torch.tensor([0.5, 0.2]), False))


def test_direction_loss_vector():
    # (|0.75| + |0.25| − (0.75·0.5 + 0.25·(−1)))/2 = (1 − 0.125)/2
    torch.testing.assert_close(direction_loss(torch.tensor([0.75, 0.25]), torch.tensor([0.5, -1.0])),
                               torch.tensor(0.4375))
    torch.testing.assert_close(weight_cosine(torch.tensor([[1.0, 0.0]]), torch.tensor([[1.0, 1.0]])),
                               torch.tensor(2 ** -0.5))


def test_a_real_step_scales_each_encoder_gradient_by_rho_b():
    balancer, ctx, batch = tiny_context(tiny_components(CGGM, {"clip_grad_norm": None, "rho": 1.3}))
    balancer.previous = torch.tensor([0.25, 0.125])
    out = ctx.model(batch.inputs)
    classifiers = ctx.model.extras[CLASSIFIERS]
    with torch.no_grad():
        accuracy = torch.stack([(classifiers[m](out.features[m]).argmax(-1) == batch.label).float().mean()
                                for m in ("fast", "slow")])
    expected = 1.3 * modulation_coefficients(accuracy, torch.tensor([0.25, 0.125]))
    loss = balancer.loss(ctx, batch, out)
    torch.testing.assert_close(loss, F.cross_entropy(out.logits, batch.label))  # nothing pending at the start
    loss.backward()
    plain = {m: [p.grad.clone() for p in ctx.model.encoders[m].parameters()] for m in ("fast", "slow")}
    fusion_grad = ctx.model.fusion.linear.weight.grad.clone()
    before = [p.clone() for p in classifiers.parameters()]
    balancer.after_backward(ctx, batch, out)
    for i, m in enumerate(("fast", "slow")):
        for g, p in zip(plain[m], ctx.model.encoders[m].parameters(), strict=True):
            torch.testing.assert_close(p.grad, expected[i] * g)
    torch.testing.assert_close(ctx.model.fusion.linear.weight.grad, fusion_grad)  # the fusion is not scaled
    assert any(not torch.equal(b, p) for b, p in zip(before, classifiers.parameters(), strict=True))
    torch.testing.assert_close(balancer.previous, accuracy)
    # the direction term of this step enters the next loss and pulls on the fusion's weights
    pending = balancer.pending
    assert pending is not None and pending.requires_grad
    ctx.model.zero_grad()
    out = ctx.model(batch.inputs)
    loss = balancer.loss(ctx, batch, out)
    torch.testing.assert_close(loss, F.cross_entropy(out.logits, batch.label) + 0.05 * pending)
    ctx.model.zero_grad()
    (0.05 * pending).backward()
    assert ctx.model.fusion.linear.weight.grad.abs().sum() > 0


def test_clip_bounds_the_model_gradient():
    balancer, ctx, batch = tiny_context(tiny_components(CGGM, {"clip_grad_norm": 0.01}))
    out = ctx.model(batch.inputs)
    balancer.loss(ctx, batch, out).backward()
    balancer.after_backward(ctx, batch, out)
    norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in balancer.model_params if p.grad is not None]))
    assert float(norm) <= 0.01 + 1e-6


def test_three_modalities_and_sum_fusion():
    outcome = train_tiny(CGGM, epochs=2, task_params=THREE, fusion="sum")
    assert outcome.status == "ok"
    assert {"coeff.a", "coeff.b", "coeff.c", "cos.c", "acc.b", "l_gm"} <= set(outcome.history[1].coefficients)


def test_contract():
    check_balancer(CGGM)
