"""CML: the hinge pinned by hand (per-sample vs BalanceBenchmark's batch-summed form), the loss of a real step on
the concat fusion recomputed from its weight blocks (a modality removed = its block's term dropped, the whole bias
kept), the removal chain with three modalities, and the registry contract."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mmbench.testing import check_balancer, tiny_components, tiny_context, train_tiny
from mmbench_plugins.balancers.cml import CML, calibration_penalty, confidence

THREE = {"modalities": [{"name": "a", "dim": 8, "signal": 4.0}, {"name": "b", "dim": 12, "signal": 2.0},
                        {"name": "c", "dim": 6, "signal": 1.0, "code": "sign"}]}


def test_hinge_vector_per_sample_and_batch_summed():
    conf, removed = torch.tensor([0.7, 0.6]), torch.tensor([0.8, 0.5])
    # per sample: max(0, 0.1) and max(0, −0.1) -> mean 0.05; batch-summed: max(0, 0.1 − 0.1) = 0 (to rounding)
    torch.testing.assert_close(calibration_penalty(conf, removed, "per_sample"), torch.tensor(0.05))
    assert abs(float(calibration_penalty(conf, removed, "batch"))) < 1e-6
    torch.testing.assert_close(calibration_penalty(conf, torch.tensor([0.9, 0.7]), "batch"), torch.tensor(0.3))


def test_confidence_is_the_largest_softmax_probability():
    logits = torch.tensor([[0.0, 0.0], [torch.log(torch.tensor(3.0)), 0.0]])
    torch.testing.assert_close(confidence(logits), torch.tensor([0.5, 0.75]))


def _expected_loss(model, out, batch, removals, lam):
    """(CE(z) + Σ CE(z_k))/M + λ Σ_k mean relu(conf_k − conf_{k−1}) from the concat weight blocks by hand."""
    blocks = model.fusion.classifier_blocks()
    z = out.logits
    ce, penalty, conf = F.cross_entropy(z, batch.label), 0.0, z.softmax(-1).amax(-1)
    for m in removals:
        z = z - out.features[m] @ blocks[m][0].T  # the block's term goes, the whole bias stays
        ce = ce + F.cross_entropy(z, batch.label)
        new = z.softmax(-1).amax(-1)
        penalty = penalty + (new - conf).clamp_min(0).mean()
        conf = new
    return ce / len(model.modalities) + lam * penalty


def test_loss_of_a_real_step_removes_the_last_modality_of_the_order():
    balancer, ctx, batch = tiny_context(tiny_components(CML, {"lam": 1.0}))
    balancer.order = ("slow", "fast")
    out = ctx.model(batch.inputs)
    expected = _expected_loss(ctx.model, out, batch, ["fast"], 1.0)
    torch.testing.assert_close(balancer.loss(ctx, batch, out), expected)
    balancer.order = ("fast", "slow")  # the other removal gives another loss
    assert not torch.allclose(balancer.loss(ctx, batch, out), expected)


def test_three_modalities_remove_two_in_a_chain():
    balancer, ctx, batch = tiny_context(tiny_components(CML, {"lam": 2.0}, task_params=THREE))
    balancer.order = ("b", "a", "c")
    out = ctx.model(batch.inputs)
    torch.testing.assert_close(balancer.loss(ctx, batch, out), _expected_loss(ctx.model, out, batch, ["c", "a"], 2.0))


def test_the_regulariser_reaches_the_gradient():
    """λ changes the gradient the encoders see (a hinge that never acts would leave it as at λ = 0)."""
    grads = []
    for lam in (0.0, 5.0):
        balancer, ctx, batch = tiny_context(tiny_components(CML, {"lam": lam}))
        balancer.order = ("slow", "fast")
        ctx.optimizer.zero_grad()
        balancer.loss(ctx, batch, ctx.model(batch.inputs)).backward()
        grads.append(torch.cat([p.grad.flatten() for p in ctx.model.encoders.parameters()]))
    assert not torch.allclose(grads[0], grads[1])


def test_order_is_reshuffled_each_epoch_and_repeats_with_the_seed():
    outcome = train_tiny(CML, epochs=2, task_params=THREE)
    assert outcome.status == "ok"
    assert set(outcome.history[-1].coefficients) == {"hinge", "violations"}
    again = train_tiny(CML, epochs=2, task_params=THREE)
    assert again.test.metrics == outcome.test.metrics


def test_contract():
    check_balancer(CML)
