"""ARL: the asymmetric weights (shicaiwei123/ICCV2025-ARL @ 358af4f67827, `main_arl_variance.py` L114–157,
recomputed by hand), the loss through the zeroed fusion, and the encoder gradients a real step scales."""

from __future__ import annotations

import math

import pytest
import torch

from mmbench.testing import assert_trained, tiny_components, tiny_context, train_tiny
from mmbench_plugins.balancers.arl import ARL, asymmetric_weights, logit_statistics

THREE = {"modalities": [{"name": "fast", "dim": 8, "signal": 3.0, "coverage": 0.8, "code": "linear"},
                        {"name": "slow", "dim": 8, "signal": 2.0, "coverage": 1.0, "code": "sign"},
                        {"name": "mid", "dim": 8, "signal": 1.0, "coverage": 1.0, "code": "linear"}]}


def test_worked_vector_two_modalities():
    # H = (0.5, 1.5) -> normalised (0.25, 0.75) -> floored (0.3, 0.75) -> ŵ = (0.714286, 0.285714);
    # ĉ = (0.6, 0.4), T = 8: softmax(8·[0.4·0.714286, 0.6·0.285714]) = softmax([2.285714, 1.371429])
    w = asymmetric_weights(torch.tensor([0.5, 1.5]), torch.tensor([0.6, 0.4]), temperature=8.0)
    assert w.tolist() == pytest.approx([0.713876, 0.286124], rel=1e-5)


def test_three_modalities_use_the_other_modalities_share_of_the_magnitude():
    # H = (1, 1, 2) -> (0.25, 0.25, 0.5) -> floored (0.3, 0.3, 0.5) -> ŵ = (0.384615, 0.384615, 0.230769);
    # c = (1, 2, 1) -> 1 − ĉ = (0.75, 0.5, 0.75); T = 1: softmax([0.288462, 0.192308, 0.173077])
    w = asymmetric_weights(torch.tensor([1.0, 1.0, 2.0]), torch.tensor([1.0, 2.0, 1.0]), temperature=1.0)
    assert w.tolist() == pytest.approx([0.357226, 0.324477, 0.318297], rel=1e-5)


def test_logit_statistics():
    # a: uniform over 2 classes (entropy log 2), |o| means 0 and 0; v: rows (1, −1) and (3, 1): entropies of
    # softmax (0.880797, 0.119203) twice = 0.365334, magnitude mean(1, 3) + mean(1, 1) = 3
    entropy, magnitude = logit_statistics([torch.zeros(2, 2), torch.tensor([[1.0, -1.0], [3.0, 1.0]])])
    assert entropy.tolist() == pytest.approx([math.log(2), 0.365334], rel=1e-5)
    assert magnitude.tolist() == [0.0, 3.0]


def _step(params: dict, epoch: int):
    balancer, ctx, batch = tiny_context(tiny_components(ARL, {"max_grad_norm": None, **params}))
    ctx.epoch = epoch
    out = ctx.model(batch.inputs)
    loss = balancer.loss(ctx, batch, out)
    loss.backward()
    before = {p: p.grad.clone() for p in ctx.model.parameters() if p.grad is not None}
    balancer.after_backward(ctx, batch, out)
    return balancer, ctx, batch, out, loss, before


def _unimodal(ctx, out):
    zero = {m: torch.zeros_like(f) for m, f in out.fusion_inputs.items()}
    return [ctx.model.fusion({**zero, m: out.fusion_inputs[m]}).logits for m in ctx.model.modalities]


@pytest.mark.parametrize("apply_weights", [True, False])
def test_after_the_warm_up_the_encoder_gradients_are_scaled(apply_weights):
    balancer, ctx, batch, out, loss, before = _step({"gamma": 3.0, "apply_weights": apply_weights}, epoch=6)
    unimodal = _unimodal(ctx, out)
    expected = ctx.task_loss(out.logits, batch.label) + 3.0 * sum(ctx.task_loss(o, batch.label) for o in unimodal)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    w = asymmetric_weights(*logit_statistics(unimodal), temperature=8.0)
    scales = (1 + w).tolist() if apply_weights else [1.5, 1.5]
    assert apply_weights == (abs(scales[0] - scales[1]) > 1e-3)  # the release scales both alike
    groups = ctx.model.parameter_groups()
    for m, scale in zip(ctx.model.modalities, scales):
        for p in groups[f"encoder.{m}"]:
            torch.testing.assert_close(p.grad, before[p] * scale)
    assert all(torch.equal(p.grad, before[p]) for p in groups["fusion"])
    assert balancer.coefficients()["scale.fast"] == pytest.approx(scales[0], rel=1e-6)


def test_warm_up_has_unit_gamma_and_unscaled_gradients_and_the_clip_bounds_the_norm():
    balancer, ctx, batch, out, loss, before = _step({"gamma": 3.0, "start": 5}, epoch=5)
    unimodal = _unimodal(ctx, out)
    expected = ctx.task_loss(out.logits, batch.label) + sum(ctx.task_loss(o, batch.label) for o in unimodal)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert all(torch.equal(p.grad, before[p]) for p in before)
    balancer, ctx, batch, out, loss, before = _step({"max_grad_norm": 0.01}, epoch=0)
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in before]))
    assert norm.item() == pytest.approx(0.01, rel=1e-3)


def test_trains_two_and_three_modalities():
    for task_params, modalities in ((None, ("fast", "slow")), (THREE, ("fast", "slow", "mid"))):
        outcome = train_tiny("arl", epochs=2, balancer_params={"start": 0}, task_params=task_params)
        assert_trained(outcome, 2, {f"{k}.{m}" for k in ("w", "scale") for m in modalities})
        second = outcome.history[1].coefficients
        assert sum(second[f"w.{m}"] for m in modalities) == pytest.approx(1.0)
        assert all(second[f"scale.{m}"] == pytest.approx(1 + second[f"w.{m}"]) for m in modalities)
