"""MLB and Multi-Loss: worked vectors (the paper's Eqs. 4–7 and the official `Bias_Infusion_MLB`, kkontras/MLB @
357b5ce1bcb7, computed independently in numpy), which gradients k_i scales, end-to-end training."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from mmbench.testing import tiny_components, tiny_context, train_tiny
from mmbench_plugins.balancers.mlb import (
    MLB,
    MLBParams,
    MultiLoss,
    mlb_coefficients,
    mlb_ratios,
    true_class_score,
)

RTOL = 1e-5


def _k(scores, alpha, beta_max):
    r = mlb_ratios(torch.tensor(scores, dtype=torch.float64))
    return r, mlb_coefficients(r, alpha, beta_max)


def test_worked_vectors_two_modalities():
    r, k = _k([0.6, 0.3], 0.8, 2.0)  # released configs: β = 2 on both sides
    torch.testing.assert_close(r, torch.tensor([0.5, 2.0], dtype=torch.float64), rtol=RTOL, atol=0)
    torch.testing.assert_close(k, torch.tensor([0.620051, 1.66404], dtype=torch.float64), rtol=RTOL, atol=0)
    _, k = _k([0.6, 0.3], 0.8, 5.0)  # paper form, β_max = 5
    torch.testing.assert_close(k, torch.tensor([0.620051, 3.65615], dtype=torch.float64), rtol=RTOL, atol=0)
    r, k = _k([20.0, 10.0], 2.0, 10.0)  # counts
    torch.testing.assert_close(r, torch.tensor([0.5, 2.0], dtype=torch.float64), rtol=RTOL, atol=0)
    torch.testing.assert_close(k, torch.tensor([0.238406, 9.67625], dtype=torch.float64), rtol=RTOL, atol=0)


def test_default_is_the_released_configs_beta():
    """The default β_max is 2 (released configs): the lagging modality's k is the worked 1.66404, not 9.x."""
    p = MLBParams()
    _, k = _k([0.6, 0.3], p.alpha, p.beta_max)
    torch.testing.assert_close(k, torch.tensor([0.620051, 1.66404], dtype=torch.float64), rtol=RTOL, atol=0)


def test_worked_vector_three_modalities():
    r, k = _k([0.7, 0.4, 0.1], 1.0, 3.0)
    torch.testing.assert_close(r, torch.tensor([0.357143, 1.0, 5.5], dtype=torch.float64), rtol=RTOL, atol=1e-7)
    torch.testing.assert_close(k, torch.tensor([0.433158, 1.0, 2.99951], dtype=torch.float64), rtol=RTOL,
                               atol=1e-7)


def test_worked_vector_from_logits():
    y = torch.tensor([0, 1, 2, 2])
    audio = torch.tensor([[2, 0, 0], [0, 1, 0], [0.5, 0.5, 0.5], [0, 0, 3]], dtype=torch.float64)
    video = torch.tensor([[0, 0.2, 0], [0.3, 0, 0], [0, 0, 0.1], [1, 0, 0.5]], dtype=torch.float64)
    s = torch.stack([true_class_score(audio, y), true_class_score(video, y)]).double()
    torch.testing.assert_close(s, torch.tensor([0.651470, 0.318013], dtype=torch.float64), rtol=RTOL, atol=0)
    r = mlb_ratios(s)
    k = mlb_coefficients(r, 0.8, 2.0)
    torch.testing.assert_close(r, torch.tensor([0.488147, 2.04856], dtype=torch.float64), rtol=RTOL, atol=0)
    torch.testing.assert_close(k, torch.tensor([0.611967, 1.68520], dtype=torch.float64), rtol=RTOL, atol=0)
    # the paper's wording: argmax hit rate (audio 3 of 4 — the tied row predicts class 0 — video 1 of 4)
    hits = [true_class_score(audio, y, "accuracy").item(), true_class_score(video, y, "accuracy").item()]
    assert hits == [0.75, 0.25]


def test_zero_scores_give_no_modulation():
    r, k = _k([0.0, 0.0], 0.8, 10.0)
    assert r.tolist() == [1.0, 1.0] and k.tolist() == [1.0, 1.0]


def _context(balancer_cls, params: dict, fusion: str):
    balancer, ctx, batch = tiny_context(tiny_components(balancer_cls, balancer_params=params, fusion=fusion))
    balancer.on_epoch_start(ctx)
    return balancer, ctx, batch


@pytest.mark.parametrize("fusion", ["concat", "sum"])
def test_mlb_scales_encoder_head_and_fusion_block_only(fusion):
    balancer, ctx, batch = _context(MLB, {"alpha": 0.8, "beta_max": 10.0}, fusion)
    model = ctx.model
    out = model(batch)
    balancer.loss(ctx, batch, out).backward()
    before = {name: p.grad.clone() for name, p in model.named_parameters()}
    balancer.after_backward(ctx, batch, out)
    k, _ = balancer.coefficients_for(out, batch["label"])
    k = dict(zip(model.modalities, k.tolist(), strict=True))
    assert abs(k["fast"] - 1) > 1e-3 and abs(k["slow"] - 1) > 1e-3 and k["fast"] != k["slow"]
    names = {id(p): n for n, p in model.named_parameters()}

    def check(p, factor, index=...):
        expected = before[names[id(p)]][index] * factor
        assert p.grad[index].abs().sum() > 0
        torch.testing.assert_close(p.grad[index], expected)

    for m in model.modalities:
        for p in [*model.encoders[m].parameters(), *model.heads[m].parameters()]:
            check(p, k[m])
    if fusion == "concat":
        for m, s in model.fusion.slices.items():
            check(model.fusion.linear.weight, k[m], (slice(None), s))
        check(model.fusion.linear.bias, 1.0)  # the shared bias is not scaled
    else:
        for m, (weight, bias) in model.fusion.classifier_blocks().items():
            check(weight, k[m])
            check(bias, 1.0)


def test_mlb_without_fusion_block_scaling_leaves_fusion_alone():
    balancer, ctx, batch = _context(MLB, {"scale_fusion_block": False}, "concat")
    out = ctx.model(batch)
    balancer.loss(ctx, batch, out).backward()
    before = ctx.model.fusion.linear.weight.grad.clone()
    balancer.after_backward(ctx, batch, out)
    assert torch.equal(ctx.model.fusion.linear.weight.grad, before)


def test_multi_loss_is_fused_plus_unimodal_losses():
    balancer, ctx, batch = _context(MultiLoss, {}, "concat")
    out = ctx.model(batch)
    y = batch["label"]
    expected = F.cross_entropy(out.logits, y) + sum(F.cross_entropy(out.unimodal[m], y) for m in out.unimodal)
    torch.testing.assert_close(balancer.loss(ctx, batch, out), expected)
    weighted = MultiLoss(MultiLoss.Params(fused_weight=0.5, unimodal_weight=2.0))
    weighted.on_epoch_start(ctx)
    expected = 0.5 * F.cross_entropy(out.logits, y) + 2 * sum(F.cross_entropy(v, y) for v in out.unimodal.values())
    torch.testing.assert_close(weighted.loss(ctx, batch, out), expected)


def test_params_validated():
    with pytest.raises(ValueError):
        MLBParams(beta_max=0.5)
    with pytest.raises(ValueError):
        MLBParams(unknown=1)


@pytest.mark.parametrize("fusion", ["concat", "sum"])
@pytest.mark.parametrize("balancer", [MLB, MultiLoss])
def test_train_tiny(balancer, fusion):
    outcome = train_tiny(balancer, epochs=2, fusion=fusion)
    assert outcome.status == "ok"
    assert len(outcome.history) == 2
    for stats in outcome.history:
        assert math.isfinite(stats.train_loss)
        assert {"loss.fast", "loss.slow"} <= set(stats.coefficients)
        if balancer is MLB:
            assert {"k.fast", "k.slow", "r.fast", "r.slow"} <= set(stats.coefficients)
            assert 0 < stats.coefficients["k.fast"] < 10 and 0 < stats.coefficients["k.slow"] < 10
        assert all(math.isfinite(v) for v in stats.coefficients.values())
    assert outcome.test is not None and math.isfinite(outcome.test.loss)


def test_per_step_code_never_reads_tensors_on_the_host(monkeypatch):
    balancer, ctx, batch = _context(MLB, {}, "concat")
    out = ctx.model(batch)

    def forbidden(*args, **kwargs):
        raise AssertionError("host read of a tensor in per-step code")

    with monkeypatch.context() as patch:
        for method in ("item", "tolist", "__bool__", "__float__", "__int__", "cpu", "numpy"):
            patch.setattr(torch.Tensor, method, forbidden)
        loss = balancer.loss(ctx, batch, out)
        loss.backward()
        balancer.after_backward(ctx, batch, out)
    assert set(balancer.coefficients()) >= {"k.fast", "k.slow", "loss.fast"}
