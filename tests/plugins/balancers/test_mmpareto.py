"""MMPareto: the per-tensor rule on worked vectors (the official `MMPareto.py` / `min_norm_solvers.py` arithmetic,
GeWu-Lab/MMPareto_ICML2024 @ a339db39cc25, computed by hand), the gradients a real step hands the optimizer
(against four separate backward passes, as the official code takes them), and three modalities."""

from __future__ import annotations

import math

import pytest
import torch

from mmbench.testing import assert_trained, tiny_components, tiny_context, train_tiny
from mmbench_plugins.balancers.mmpareto import MMPareto, pareto_gradient, pareto_weights

THREE = {"modalities": [{"name": "fast", "dim": 16, "signal": 5.0, "coverage": 0.8, "code": "linear"},
                        {"name": "slow", "dim": 64, "signal": 2.5, "coverage": 1.0, "code": "sign"},
                        {"name": "mid", "dim": 32, "signal": 1.5, "coverage": 1.0, "code": "linear"}]}


def _rule(g_mm, g_u, gamma=1.5):
    g_mm, g_u = torch.tensor(g_mm), torch.tensor(g_u)
    k_mm, cos = pareto_weights((g_mm * g_u).sum(), g_mm.square().sum(), g_u.square().sum())
    return k_mm, cos, pareto_gradient(g_mm, g_u, k_mm, gamma)


def test_conflicting_gradients_take_the_min_norm_weights_and_the_summed_norm():
    # cos = -1/√2; k_mm = (‖g_u‖² − ⟨g_mm,g_u⟩)/‖g_mm − g_u‖² = (2 + 1)/5 = 0.6; g_new = 2(0.6·[1,0] + 0.4·[−1,1])
    # = [0.4, 0.8], norm 0.894427 < ‖g_mm + g_u‖ = ‖[0,1]‖ = 1, so × 1/0.894427, then × 1.5 -> norm 1.5
    k_mm, cos, grad = _rule([1.0, 0.0], [-1.0, 1.0])
    assert float(cos) == pytest.approx(-1 / math.sqrt(2), rel=1e-6)
    assert float(k_mm) == pytest.approx(0.6, rel=1e-6)
    assert grad.tolist() == pytest.approx([0.670820, 1.341641], rel=1e-5)
    assert float(grad.norm()) == pytest.approx(1.5, rel=1e-6)


def test_agreeing_gradients_are_summed_and_scaled_by_gamma():
    # cos > 0: k = (0.5, 0.5), g_new = g_mm + g_u, already at the summed norm: × γ only
    k_mm, cos, grad = _rule([1.0, 1.0], [1.0, 0.0])
    assert float(k_mm) == 0.5 and float(cos) > 0
    assert grad.tolist() == pytest.approx([3.0, 1.5])
    assert _rule([1.0, 1.0], [1.0, 0.0], gamma=2.0)[2].tolist() == pytest.approx([4.0, 2.0])


def test_the_solver_boundaries_and_a_zero_combination():
    # ⟨g_mm, g_u⟩ = 0 ≥ ‖g_mm‖² = 0: the solver's first boundary case, k_mm = 0.999 (cos is 0, so Pareto applies)
    assert float(_rule([0.0, 0.0], [0.0, 1.0])[0]) == pytest.approx(0.999)
    assert float(_rule([0.0, 1.0], [0.0, 0.0])[0]) == pytest.approx(0.001)
    # exactly opposite with equal norms: the min-norm element is 0 and stays 0 (the official code gives NaN)
    k_mm, _, grad = _rule([1.0, -1.0], [-1.0, 1.0])
    assert float(k_mm) == pytest.approx(0.5) and grad.tolist() == [0.0, 0.0]


def _separate_gradients(model, batch, task_loss):
    """∇L_mm and each ∇L_m by their own backward passes (the official code's four)."""
    out = model(batch.inputs)
    losses = {"mm": task_loss(out.logits, batch.label)}
    losses.update({m: task_loss(out.unimodal[m], batch.label) for m in model.modalities})
    params = list(model.parameters())
    return {k: dict(zip(params, torch.autograd.grad(v, params, retain_graph=True, allow_unused=True), strict=True))
            for k, v in losses.items()}


@pytest.mark.parametrize("task_params", [None, THREE], ids=["two", "three"])
def test_a_step_hands_the_optimizer_the_pareto_gradients(task_params):
    balancer, ctx, batch = tiny_context(tiny_components("mmpareto", task_params=task_params))
    grads = _separate_gradients(ctx.model, batch, ctx.task_loss)
    seen = {}
    ctx.optimizer.step = lambda *a, **k: seen.update({p: p.grad.clone() for p in ctx.model.parameters()})
    balancer.train_step(ctx, batch)
    groups = ctx.model.parameter_groups()
    for m in ctx.model.modalities:
        params = groups[f"encoder.{m}"]
        g_mm, g_u = [grads["mm"][p] for p in params], [grads[m][p] for p in params]
        dot = sum((a * b).sum() for a, b in zip(g_mm, g_u, strict=True))
        k_mm, _ = pareto_weights(dot, sum(a.square().sum() for a in g_mm), sum(b.square().sum() for b in g_u))
        for p, a, b in zip(params, g_mm, g_u, strict=True):
            torch.testing.assert_close(seen[p], pareto_gradient(a, b, k_mm, 1.5))
            assert not torch.allclose(seen[p], a + b)  # the encoder gradient is not plain summed training's
    for name in ["fusion", *(f"head.{m}" for m in ctx.model.modalities)]:
        for p in groups[name]:
            expected = sum(g[p] for g in grads.values() if g[p] is not None)
            torch.testing.assert_close(seen[p], expected)
    coefficients = balancer.coefficients()
    assert set(coefficients) == {f"{c}.{m}" for c in ("k_mm", "cos", "conflict", "scale") for m in ctx.model.modalities}
    assert all(0.0 <= coefficients[f"k_mm.{m}"] <= 1.0 for m in ctx.model.modalities)


def test_trains_end_to_end_with_two_and_three_modalities():
    for task_params in (None, THREE):
        outcome = train_tiny(MMPareto, epochs=2, task_params=task_params)
        assert_trained(outcome, 2)
        scales = [v for k, v in outcome.history[-1].coefficients.items() if k.startswith("scale.")]
        assert all(s >= 1.5 - 1e-4 for s in scales)  # never below γ × the summed gradient's norm, per tensor
