"""LFM: the fitted schedule and the alignment (njustkmg/NeurIPS24-LFM @ ad44fa09fee4, `Crema_epoch.py`, recomputed
by hand), the loss of a real step and the prediction from the unimodal heads."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from mmbench.testing import assert_trained, tiny_components, tiny_context, train_tiny
from mmbench_plugins.balancers.lfm import LFM, alignment_divergence, alpha1

THREE = {"modalities": [{"name": "fast", "dim": 8, "signal": 3.0, "coverage": 0.8, "code": "linear"},
                        {"name": "slow", "dim": 8, "signal": 2.0, "coverage": 1.0, "code": "sign"},
                        {"name": "mid", "dim": 8, "signal": 1.0, "coverage": 1.0, "code": "linear"}]}


def _logits(*probabilities) -> list[torch.Tensor]:
    return [torch.tensor([p]).log() for p in probabilities]


def test_fitted_schedule():
    assert [alpha1(e) for e in (0, 10, 50, 100, 199)] == pytest.approx(
        [0.204624, 0.247759, 0.436681, 0.539155, 0.915989], abs=1e-6)


def test_worked_vector_alignment():
    # p_a = (0.8, 0.2), p_v = (0.4, 0.6), p̄ = (0.6, 0.4): JS = ½(0.091517 + 0.081093) = 0.086305;
    # the release's ½(KL(p̄‖p_a) + KL(p̄‖p_v)) = ½(0.104650 + 0.081093) = 0.092871
    logits = _logits((0.8, 0.2), (0.4, 0.6))
    assert alignment_divergence(logits, "js").item() == pytest.approx(0.086305, rel=1e-5)
    assert alignment_divergence(logits, "released").item() == pytest.approx(0.092871, rel=1e-5)
    # ... which is what the official `Alignment` computes with F.kl_div(p.log(), m, reduction="batchmean")
    p, q = (o.softmax(-1) for o in logits)
    m = 0.5 * (p + q)
    official = 0.5 * (F.kl_div(p.log(), m, reduction="batchmean") + F.kl_div(q.log(), m, reduction="batchmean"))
    assert alignment_divergence(logits, "released").item() == pytest.approx(official.item(), rel=1e-6)


def test_three_modalities_jensen_shannon():
    # p = (0.5, 0.5), (0.9, 0.1), (0.1, 0.9): p̄ uniform, JS = (0 + 2·KL((0.9, 0.1)‖uniform)) / 3 = 0.245376
    logits = _logits((0.5, 0.5), (0.9, 0.1), (0.1, 0.9))
    assert alignment_divergence(logits).item() == pytest.approx(0.245376, rel=1e-5)


def test_a_real_step_mixes_ce_of_the_average_and_alignment_and_predicts_from_the_heads():
    balancer, ctx, batch = tiny_context(tiny_components(LFM, {}))
    ctx.epoch = 100
    balancer.on_epoch_start(ctx)
    out = ctx.model(batch.inputs)
    loss = balancer.loss(ctx, batch, out)
    a, v = out.unimodal["fast"], out.unimodal["slow"]
    ce = ctx.task_loss(0.5 * a + 0.5 * v, batch.label)
    expected = 2 * (0.539155 * ce + 0.460845 * alignment_divergence([a, v]))
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    loss.backward()
    groups = ctx.model.parameter_groups()
    assert all(p.grad is not None and p.grad.any() for m in ("fast", "slow") for p in groups[f"head.{m}"])
    torch.testing.assert_close(balancer.eval_logits(ctx, out), 0.5 * a + 0.5 * v)
    alone = ctx.model(batch.inputs, drop=("slow",))
    torch.testing.assert_close(balancer.eval_logits(ctx, alone), alone.unimodal["fast"])
    assert balancer.coefficients()["alpha1"] == pytest.approx(0.539155, abs=1e-6)


def test_trains_two_and_three_modalities():
    for task_params in (None, THREE):
        outcome = train_tiny("lfm", epochs=2, task_params=task_params)
        assert_trained(outcome, 2, {"alpha1", "alignment", "ce"})
        assert outcome.history[1].coefficients["alpha1"] == pytest.approx(alpha1(1))
        assert not math.isnan(outcome.test.metrics["accuracy"])
