"""AUG: the residual boosting loss and the assignment rule (worked vectors computed by hand), branches added in
training (learning by default, frozen as released), the late prediction, end-to-end with two and three
modalities."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from mmbench.api import ModelOutput
from mmbench.testing import assert_trained, tiny_components, tiny_context, train_tiny
from mmbench_plugins.balancers.aug import AUG, aca_targets, boosting_loss, branch_name, check_interval, residual_loss

THREE = {"modalities": [{"name": "fast", "dim": 16, "signal": 5.0, "coverage": 0.8, "code": "linear"},
                        {"name": "slow", "dim": 64, "signal": 2.5, "coverage": 1.0, "code": "sign"},
                        {"name": "mid", "dim": 32, "signal": 1.5, "coverage": 1.0, "code": "linear"}]}


def test_worked_vector_residual_loss():
    # S_{t-1} = [2, 0, 0], a_t = [1, 0, 0], y = 0, λ = 0.5: p_{t-1}[0] = e²/(e² + 2) = 0.786986, target
    # 1 − 0.5·0.786986 = 0.606507, loss −0.606507·ln softmax(a_t)[0] = 0.606507·ln(1 + 2/e) = 0.334455
    s_prev, a_t, y = torch.tensor([[2.0, 0.0, 0.0]]), torch.tensor([[1.0, 0.0, 0.0]]), torch.tensor([0])
    assert residual_loss(s_prev, a_t, y, 0.5).item() == pytest.approx(0.334455, abs=1e-6)
    assert 0.606507 * math.log(1 + 2 / math.e) == pytest.approx(0.334455, abs=1e-6)
    # two branches [1,0,0] + [1,0,0] = S_{t-1}, then a_t: CE(S_t) + CE(S_{t-1}) + the residual loss
    first = torch.tensor([[1.0, 0.0, 0.0]])
    expected = F.cross_entropy(s_prev + a_t, y) + F.cross_entropy(s_prev, y) + 0.334455
    assert boosting_loss([first, first, a_t], y, 0.5).item() == pytest.approx(expected.item(), abs=1e-6)
    assert boosting_loss([first], y, 0.5).item() == pytest.approx(F.cross_entropy(first, y).item())


def test_worked_vector_assignment():
    # Σp_a = 48, Σp_v = 40: ratio 1.2 > σ + τ = 1.01 -> a branch for video; inside the dead zone nothing
    assert aca_targets([48.0, 40.0], 1.0, 0.01, 0.4) == [1]
    assert aca_targets([40.0, 48.0], 1.0, 0.01, 0.4) == [0]
    assert aca_targets([40.2, 40.0], 1.0, 0.01, 0.4) == []
    # three modalities: 10/(30 + 30) = 0.167 < 0.4 gets one; 30/40 = 0.75 does not
    assert aca_targets([10.0, 30.0, 30.0], 1.0, 0.01, 0.4) == [0]
    assert [check_interval(e) for e in (5, 10, 11, 200)] == [1, 1, 1, 20]


@pytest.mark.parametrize("learns", [True, False])
def test_an_added_branch_learns_unless_the_release_is_reproduced(learns):
    balancer, ctx, batch = tiny_context(tiny_components(AUG, {"train_added_branches": learns}))
    balancer.grow(ctx, "slow")
    branch = ctx.model.extras[branch_name("slow", 1)]
    in_optimizer = any(p is q for g in ctx.optimizer.param_groups for p in g["params"] for q in branch.parameters())
    assert in_optimizer is learns
    before = [p.detach().clone() for p in branch.parameters()]
    encoder_before = [p.detach().clone() for p in ctx.model.encoders["slow"].parameters()]
    balancer.train_step(ctx, batch)
    assert any(not torch.equal(p, b) for p, b in zip(branch.parameters(), before, strict=True)) is learns
    assert any(not torch.equal(p, b) for p, b in zip(ctx.model.encoders["slow"].parameters(), encoder_before,
                                                     strict=True))
    assert len(balancer.branches(ctx, "slow")) == 2 and len(balancer.branches(ctx, "fast")) == 1


def test_each_modality_steps_on_its_own_loss_and_the_prediction_merges_the_modalities():
    balancer, ctx, batch = tiny_context(tiny_components(AUG, {"merge_weights": {"fast": 0.25, "slow": 0.75}}))
    loss, out = balancer.train_step(ctx, batch)
    assert set(out.unimodal) == {"fast", "slow"}
    logits = balancer.eval_logits(ctx, out)
    torch.testing.assert_close(logits, 0.25 * out.unimodal["fast"] + 0.75 * out.unimodal["slow"])
    dropped = ModelOutput(None, out.features, dropped=frozenset({"fast"}))
    with torch.no_grad():
        alone = balancer.eval_logits(ctx, dropped)
        expected = torch.stack(balancer.branch_logits(ctx, "slow", out.features["slow"])).sum(0)
    torch.testing.assert_close(alone, expected)
    assert AUG.check(AUG.Params(merge_weights={"fast": 1.0}), tiny_components(AUG).task)


@pytest.mark.parametrize("task_params", [None, THREE])
def test_end_to_end_branches_grow_on_the_weaker_modality(task_params):
    outcome = train_tiny(AUG, epochs=3, balancer_params={"check_every": 1}, task_params=task_params)
    assert_trained(outcome, 3)
    last = outcome.history[-1].coefficients
    modalities = ("fast", "slow", "mid") if task_params else ("fast", "slow")
    assert sum(last[f"branches.{m}"] for m in modalities) > len(modalities)  # something grew
    assert ("ratio" in last) is (task_params is None)
