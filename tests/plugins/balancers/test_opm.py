"""OPM: the drop probabilities and rescaling (GeWu-Lab/BML_TPAMI2024 @ 4b3aa4fd8418, `calcu_q` and
`Modality_drop`, recomputed by hand), and what a real step feeds the fusion."""

from __future__ import annotations

import math

import pytest
import torch

from mmbench.testing import assert_trained, tiny_components, tiny_context, train_tiny
from mmbench_plugins.balancers.opm import OPM, drop_probabilities, kept_feature_scale

THREE = {"modalities": [{"name": "fast", "dim": 8, "signal": 3.0, "coverage": 0.8, "code": "linear"},
                        {"name": "slow", "dim": 8, "signal": 2.0, "coverage": 1.0, "code": "sign"},
                        {"name": "mid", "dim": 8, "signal": 1.0, "coverage": 1.0, "code": "linear"}]}


def test_worked_vector_two_modalities():
    # s = (40, 20): rho_a = 2, q_a = 0.5·(1 + 0.5·tanh(1)) = 0.690399, q_v = 0 (the weaker is never dropped);
    # theta = (512·0.690399 + 512·0) / 1024 = 0.345199, scale 1 / (1 − theta) = 1.527182
    q = drop_probabilities(torch.tensor([40.0, 20.0]), q_base=0.5, lam=0.5)
    assert q.tolist() == pytest.approx([0.690399, 0.0], abs=1e-6)
    scale = kept_feature_scale(q, torch.tensor([512.0, 512.0]))
    assert scale.item() == pytest.approx(1.527182, rel=1e-6)
    assert drop_probabilities(torch.tensor([20.0, 40.0]), 0.5, 0.5).tolist() == pytest.approx([0.0, 0.690399],
                                                                                                abs=1e-6)


def test_three_modalities_compare_with_the_weakest_and_dimensions_weight_theta():
    # rho = (3, 1, 2): q = 0.5·(1 + 0.5·tanh 2) = 0.741007, 0, 0.690399; theta with d = (16, 32, 16):
    # (16·0.741007 + 16·0.690399) / 64 = 0.357852, scale 1.557274
    q = drop_probabilities(torch.tensor([30.0, 10.0, 20.0]), 0.5, 0.5)
    assert q.tolist() == pytest.approx([0.741007, 0.0, 0.690399], abs=1e-6)
    assert kept_feature_scale(q, torch.tensor([16.0, 32.0, 16.0])).item() == pytest.approx(1.557274, rel=1e-5)


def test_probability_is_clipped_to_one_and_equal_scores_drop_nothing():
    assert drop_probabilities(torch.tensor([100.0, 1.0]), 0.9, 2.0).tolist() == [1.0, 0.0]
    assert drop_probabilities(torch.tensor([5.0, 5.0]), 0.5, 0.5).tolist() == [0.0, 0.0]


def _context(params: dict, task_params: dict | None = None, epoch: int = 0):
    balancer, ctx, batch = tiny_context(tiny_components(OPM, params, task_params=task_params))
    ctx.epoch = epoch
    return balancer, ctx, batch


def _dominant(ctx, batch, out) -> int:
    s = [o.softmax(-1)[torch.arange(len(batch.label)), batch.label].sum().item() for o in out.contributions.values()]
    return max(range(len(s)), key=s.__getitem__)


def test_a_dropped_dominant_modality_gets_no_gradient_and_the_others_are_rescaled():
    # q_base 1, λ 0: the dominant modality's q is 1 (every sample dropped), the other's 0; theta = 1/2 (equal
    # feature sizes), so the fusion sees zeros for the dominant modality and twice the other's feature
    balancer, ctx, batch = _context({"modulation_starts": 0, "p_exe": 1.0, "q_base": 1.0, "lam": 0.0})
    out = ctx.model(batch.inputs)
    dominant = ctx.model.modalities[_dominant(ctx, batch, out)]
    other = next(m for m in ctx.model.modalities if m != dominant)
    loss = balancer.loss(ctx, batch, out)
    features = {dominant: torch.zeros_like(out.fusion_inputs[dominant]), other: 2 * out.fusion_inputs[other]}
    expected = ctx.task_loss(ctx.model.fusion(features).logits, batch.label)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert loss.item() != pytest.approx(ctx.task_loss(out.logits, batch.label).item(), rel=1e-3)
    loss.backward()
    groups = ctx.model.parameter_groups()
    assert all(p.grad is None or not p.grad.any() for p in groups[f"encoder.{dominant}"])
    assert any(p.grad is not None and p.grad.any() for p in groups[f"encoder.{other}"])
    coeffs = balancer.coefficients()
    assert coeffs[f"q.{dominant}"] == 1.0 and coeffs[f"kept.{dominant}"] == 0.0 and coeffs[f"kept.{other}"] == 1.0


@pytest.mark.parametrize("params, epoch", [({"p_exe": 0.0, "modulation_starts": 0}, 0), ({}, 5)])
def test_no_drop_outside_the_window_or_when_the_step_is_not_drawn(params, epoch):
    balancer, ctx, batch = _context(params, epoch=epoch)
    out = ctx.model(batch.inputs)
    assert balancer.loss(ctx, batch, out).item() == ctx.task_loss(out.logits, batch.label).item()
    assert balancer.coefficients() == {"executed": 0.0}


def test_drop_rate_follows_q_and_steps_drop_with_probability_p_exe():
    # q_base 0.3, λ 0: the dominant modality is dropped for about 30 % of the samples of the steps that drop,
    # about 60 % of the steps
    balancer, ctx, batch = _context({"modulation_starts": 0, "p_exe": 0.6, "q_base": 0.3, "lam": 0.0})
    out = ctx.model(batch.inputs)
    for _ in range(200):
        balancer.loss(ctx, batch, out)
    coeffs = balancer.coefficients()
    dominant = ctx.model.modalities[_dominant(ctx, batch, out)]
    assert coeffs[f"kept.{dominant}"] == pytest.approx(0.7, abs=0.04)
    assert coeffs["executed"] == pytest.approx(0.6, abs=0.1)  # 1 − p_exe would give 0.4


def test_trains_two_and_three_modalities():
    for task_params, modalities in ((None, ("fast", "slow")), (THREE, ("fast", "slow", "mid"))):
        outcome = train_tiny("opm", epochs=2, balancer_params={"modulation_starts": 1}, task_params=task_params)
        assert_trained(outcome, 2)
        last = outcome.history[-1].coefficients
        assert set(last) == {"executed"} | {f"{k}.{m}" for k in ("q", "kept") for m in modalities}
        assert last["executed"] > 0 and not math.isnan(outcome.test.metrics["accuracy"])
