"""DI-MML: the schedule, the effective-dimension search, the contrastive term (against the official per-sample
formula written out) and the test-time weights pinned by hand; a real stage-1 step where each encoder learns only
from its own terms; the stages end to end; three modalities; the contract."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from mmbench.testing import check_balancer, tiny_components, tiny_context, train_tiny
from mmbench_plugins.balancers.dimml import (
    DIMML,
    SHARED,
    contrast_loss,
    dimension_accuracy,
    effective_dimensions,
    ensemble_weights,
    schedule,
)

THREE = {"modalities": [{"name": "a", "dim": 8, "signal": 4.0}, {"name": "b", "dim": 12, "signal": 2.0},
                        {"name": "c", "dim": 6, "signal": 1.0, "code": "sign"}]}


def test_schedule_keeps_the_official_proportions():
    assert schedule(170, None, None) == (150, 20)
    assert schedule(10, None, None) == (9, 1)
    assert schedule(1, None, None) == (0, 0)
    assert schedule(10, 3, 2) == (7, 2)


def test_dimension_accuracy_vector():
    # dim 0: values 0, 0.2 | 1, 1.2 -> centroids 0.1, 1.1, every sample nearest its own: 1.0
    # dim 1: values 0, 1 | 0, 1 -> centroids 0.5, 0.5, a tie goes to class 0: half right
    x = torch.tensor([[0.0, 0.0], [0.2, 1.0], [1.0, 0.0], [1.2, 1.0]])
    torch.testing.assert_close(dimension_accuracy(x, torch.tensor([0, 0, 1, 1]), 2, chunk=3),
                               torch.tensor([1.0, 0.5]))
    # a class absent from the split gets no centroid (here class 2 of 3)
    torch.testing.assert_close(dimension_accuracy(x, torch.tensor([0, 0, 1, 1]), 3), torch.tensor([1.0, 0.5]))


def test_effective_dimensions_are_top_for_one_modality_only():
    # means 0.475 each: a's top dims {0, 1}, v's {0, 2}; dim 0 is shared
    acc = {"a": torch.tensor([0.9, 0.8, 0.1, 0.1]), "v": torch.tensor([0.9, 0.1, 0.8, 0.1])}
    dims = effective_dimensions(acc)
    assert dims["a"].tolist() == [1] and dims["v"].tolist() == [2]


def test_contrast_loss_matches_the_official_per_sample_formula():
    torch.manual_seed(0)
    v, a = torch.randn(5, 3), torch.randn(5, 3)
    tau = 2.0
    official = sum(-math.log(math.exp(float(v[i] @ a[i]) / tau) / sum(math.exp(float(v[i] @ a[j]) / tau)
                                                                       for j in range(5))) for i in range(5)) / 5
    assert math.isclose(float(contrast_loss(v, a, tau)), official, rel_tol=1e-5)
    v.requires_grad_(True)
    a.requires_grad_(True)
    contrast_loss(v, a, tau).backward()
    assert v.grad is not None and a.grad is None  # the anchor is detached


def test_ensemble_weights_vector_and_a_missing_modality():
    log3 = math.log(3.0)
    heads = [torch.tensor([[log3, 0.0]]), torch.tensor([[0.0, 0.0]])]  # confidences 0.75 and 0.5
    fused = torch.tensor([[0.0, log3]])  # 0.75
    w = ensemble_weights([*heads, fused], torch.tensor([[True], [True], [True]]), temperature=0.5)
    e = [math.exp(0.75 / 0.5), math.exp(0.5 / 0.5), math.exp(0.75 / 0.5)]
    torch.testing.assert_close(w[:, 0], torch.tensor([x / sum(e) for x in e]))
    w = ensemble_weights([*heads, fused], torch.tensor([[True], [False], [True]]), temperature=0.5)
    torch.testing.assert_close(w[:, 0], torch.tensor([0.5, 0.0, 0.5]))


def test_a_stage_one_step_keeps_the_encoders_detached():
    balancer, ctx, batch = tiny_context(tiny_components(DIMML, {"weight": 0.5, "temperature": 3.0},
                                                        encoder_params={"hidden": 16, "layers": 2, "out_dim": 8}),
                                        epochs=10)
    balancer.dims = {"fast": torch.tensor([0, 1]), "slow": torch.tensor([2, 5, 6])}
    out = ctx.model(batch.inputs)
    shared = ctx.model.extras[SHARED]
    y = batch.label
    f = out.features
    own = {m: F.cross_entropy(out.unimodal[m], y) + 0.5 * F.cross_entropy(shared(f[m]), y) for m in f}
    # fast learns on slow's dimensions toward slow's (detached) features, and the other way round
    contrast = (contrast_loss(f["slow"][:, [0, 1]], f["fast"][:, [0, 1]], 3.0)
                + contrast_loss(f["fast"][:, [2, 5, 6]], f["slow"][:, [2, 5, 6]], 3.0))
    loss = balancer.loss(ctx, batch, out)
    torch.testing.assert_close(loss, own["fast"] + own["slow"] + contrast)
    loss.backward()
    got = [p.grad.clone() for p in ctx.model.encoders["fast"].parameters()]
    ctx.model.zero_grad()
    out = ctx.model(batch.inputs)
    own_fast = F.cross_entropy(out.unimodal["fast"], y) + 0.5 * F.cross_entropy(shared(out.features["fast"]), y)
    (own_fast + contrast_loss(out.features["fast"][:, [2, 5, 6]], out.features["slow"][:, [2, 5, 6]], 3.0)).backward()
    for g, p in zip(got, ctx.model.encoders["fast"].parameters(), strict=True):
        torch.testing.assert_close(g, p.grad)
    assert all(p.grad is None for p in ctx.model.fusion.parameters())


def test_stages_end_to_end():
    outcome = train_tiny(DIMML, epochs=4, balancer_params={"fusion_epochs": 1, "contrast_start": 1})
    assert outcome.status == "ok"
    assert [e.stage for e in outcome.history] == ["detached"] * 3 + ["fusion"]
    assert outcome.best_epoch == 3
    assert "contrast" not in outcome.history[0].coefficients
    assert {"contrast", "effective_dims.fast", "effective_dims.slow"} <= set(outcome.history[1].coefficients)
    assert set(outcome.history[3].coefficients) == {"fusion_ce", "effective_dims.fast", "effective_dims.slow"}


def test_three_modalities():
    outcome = train_tiny(DIMML, epochs=3, task_params=THREE, balancer_params={"fusion_epochs": 1})
    assert outcome.status == "ok"
    assert {"effective_dims.a", "effective_dims.b", "effective_dims.c"} <= set(outcome.history[-1].coefficients)


def test_contract():
    with pytest.warns(UserWarning, match="too short"):
        check_balancer(DIMML)


def test_stage_two_fits_the_fusion_with_the_encoders_in_eval_mode():
    balancer, ctx, batch = tiny_context(tiny_components(DIMML), epochs=10)
    ctx.epoch = 9
    assert balancer.stage(ctx).name == "fusion"
    loss, out = balancer.train_step(ctx, batch)
    assert not ctx.model.encoders.training
    torch.testing.assert_close(loss, F.cross_entropy(out.logits, batch.label).detach())
