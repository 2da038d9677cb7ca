"""InfoReg: regulation strength, window statistic (GeWu-Lab/InfoReg_CVPR2025 @ 939b2ed11dcb, `main.py`,
recomputed by hand) and the proximal gradient a real step adds."""

from __future__ import annotations

import pytest
import torch

from mmbench.testing import assert_trained, tiny_components, tiny_context, train_tiny
from mmbench_plugins.balancers.inforeg import InfoReg, InfoRegParams, regulation_strengths, window_statistic

THREE = {"modalities": [{"name": "fast", "dim": 8, "signal": 3.0, "coverage": 0.8, "code": "linear"},
                        {"name": "slow", "dim": 8, "signal": 2.0, "coverage": 1.0, "code": "sign"},
                        {"name": "mid", "dim": 8, "signal": 1.0, "coverage": 1.0, "code": "linear"}]}
OPEN2 = torch.tensor([True, True])


def test_worked_vector_strength_and_proximal_gradient():
    # s_a − s_v = 0.5, window open: β_a = 0.95·e^{tanh 0.5} = 1.508060, β_v = 0; θ − θ_ref = 0.2 adds 0.301612
    beta = regulation_strengths(torch.tensor([30.5, 30.0]), torch.tensor([0.95, 0.95]), OPEN2)
    assert beta.tolist() == pytest.approx([1.508060, 0.0], rel=1e-6)
    assert (beta[0] * (1.2 - 1.0)).item() == pytest.approx(0.301612, rel=1e-5)


def test_released_constants_and_closed_windows():
    # the release's visual constant: 0.1·e^{tanh 0.5} = 0.158743 when visual leads by 0.5
    released = torch.tensor([0.95, 0.1])
    assert regulation_strengths(torch.tensor([30.0, 30.5]), released, OPEN2).tolist() == pytest.approx(
        [0.0, 0.158743], rel=1e-5)
    assert regulation_strengths(torch.tensor([30.5, 30.0]), released, torch.tensor([False, True])).tolist() == [0, 0]
    assert regulation_strengths(torch.tensor([30.0, 30.0]), released, OPEN2).tolist() == [0, 0]  # a tie: neither


def test_three_modalities_are_regulated_by_their_gap_to_the_weakest():
    # s = (3, 1, 2): e^{tanh 2} = 2.622237, 0, e^{tanh 1} = 2.141688
    beta = regulation_strengths(torch.tensor([3.0, 1.0, 2.0]), torch.ones(3), torch.ones(3, dtype=torch.bool))
    assert beta.tolist() == pytest.approx([2.622237, 0.0, 2.141688], rel=1e-6)


def test_window_statistic():
    # ten zeros + [10, 8]: T_new = 1.8, T_old = 1.0, k = 0.444444; a flat history closes the window
    assert window_statistic([10.0, 8.0], 10) == pytest.approx(0.444444, rel=1e-5)
    assert window_statistic([10.0], 10) == 1.0
    assert window_statistic([2.0] * 12, 10) == 0.0
    assert window_statistic([3.0, 2.0, 1.0], 2) == pytest.approx((1.5 - 2.5) / 1.5)


def test_check_names_unknown_modalities():
    task = tiny_components("joint").task
    problems = InfoReg.check(InfoRegParams(beta_per_modality={"audio": 0.95}, window_from="fats"), task)
    assert len(problems) == 2 and "'audio'" in problems[0] and "did you mean 'fast'" in problems[1]
    assert InfoReg.check(InfoRegParams(beta_per_modality={"fast": 0.1}, window_from="slow"), task) == []


def _step(params: dict, traces: dict | None = None, epoch: int = 0, drift: float = 0.1):
    """Epoch start (after `traces`), the encoders moved by `drift`, then one forward/backward; returns the balancer,
    context, batch, output and the gradients before and after `after_backward`."""
    balancer, ctx, batch = tiny_context(tiny_components(InfoReg, params))
    ctx.epoch = epoch
    balancer.traces.update(traces or {})
    balancer.on_epoch_start(ctx)
    with torch.no_grad():
        for p in ctx.model.parameters():
            p.add_(drift)
    out = ctx.model(batch.inputs)
    loss = balancer.loss(ctx, batch, out)
    loss.backward()
    before = {p: p.grad.clone() for p in ctx.model.parameters() if p.grad is not None}
    balancer.after_backward(ctx, batch, out)
    return balancer, ctx, batch, out, loss, before


def _scores(out, batch) -> dict[str, float]:
    y = batch.label
    return {m: o.softmax(-1)[torch.arange(len(y)), y].sum().item() for m, o in out.contributions.items()}


def test_a_real_step_pulls_the_dominant_encoder_toward_the_epoch_start():
    balancer, ctx, batch, out, loss, before = _step({"beta": 0.5})
    expected = ctx.task_loss(out.logits, batch.label) + sum(ctx.task_loss(o, batch.label)
                                                            for o in out.contributions.values())
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    s = _scores(out, batch)
    dominant, other = sorted(s, key=s.get, reverse=True)
    beta = 0.5 * torch.exp(torch.tanh(torch.tensor(s[dominant] - s[other]))).item()
    groups = ctx.model.parameter_groups()
    for p in groups[f"encoder.{dominant}"]:
        torch.testing.assert_close(p.grad - before[p], torch.full_like(p, 0.1 * beta), rtol=1e-4, atol=1e-6)
    for m in (other,):
        assert all(torch.equal(p.grad, before[p]) for p in groups[f"encoder.{m}"])
    assert all(torch.equal(p.grad, before[p]) for p in groups["fusion"])
    coeffs = balancer.coefficients()
    assert coeffs[f"beta.{dominant}"] == pytest.approx(beta, rel=1e-5) and coeffs[f"beta.{other}"] == 0.0


def test_a_closed_window_adds_nothing_unless_another_modality_judges_it():
    flat, growing = [1.0] * 12, [float(i) for i in range(1, 13)]
    closed = {"fast": flat, "slow": flat}
    balancer, ctx, _, _, _, before = _step({}, traces=closed, epoch=12)
    assert all(torch.equal(p.grad, before[p]) for p in before)
    assert balancer.coefficients()["open.fast"] == 0.0
    judged = {"fast": flat, "slow": growing}  # fast's own window is closed; slow's trace keeps growing
    balancer, ctx, _, _, _, before = _step({"window_from": "slow"}, traces=judged, epoch=12)
    assert balancer.windows == {"k.fast": 0.0, "k.slow": pytest.approx(10 / 75), "open.fast": 1.0, "open.slow": 1.0}
    assert any(not torch.equal(p.grad, before[p]) for p in before)


def test_trains_two_and_three_modalities_and_records_the_fisher_trace():
    for task_params, modalities in ((None, ("fast", "slow")), (THREE, ("fast", "slow", "mid"))):
        outcome = train_tiny("inforeg", epochs=3, task_params=task_params)
        assert_trained(outcome, 3, {f"{k}.{m}" for k in ("beta", "k", "open", "trace") for m in modalities})
        first, second, third = (h.coefficients for h in outcome.history)
        for m in modalities:  # k at epoch 2 = T1 / (T0 + T1) from the traces the first two epochs recorded
            assert first[f"trace.{m}"] > 0 and first[f"k.{m}"] == second[f"k.{m}"] == 1.0
            t0, t1 = first[f"trace.{m}"], second[f"trace.{m}"]
            assert third[f"k.{m}"] == pytest.approx(t1 / (t0 + t1), rel=1e-9)
