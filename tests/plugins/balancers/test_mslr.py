"""MSLR: a worked vector (the ratio q = A / mean(H) and the multipliers of the AGM repository's MSLR baseline,
lihong2303/AGM_ICCV2023 @ 5a65542c70b1, computed independently in numpy), the epoch-level ratio bookkeeping, which
gradients are scaled, end-to-end training on the additive (sum) fusion."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from mmbench.schema.params import NoParams
from mmbench.testing import tiny_components, tiny_context, train_tiny
from mmbench_plugins.balancers.mslr import MSLR, mslr_ratio

RTOL = 1e-5
H_A, H_V = [0.50, 0.52, 0.55, 0.56, 0.58], [0.30, 0.33, 0.35, 0.36, 0.40]


def test_worked_vector():
    q_a, q_v = mslr_ratio(H_A, 0.60), mslr_ratio(H_V, 0.39)
    assert q_a == pytest.approx(1.10701, rel=RTOL)
    assert q_v == pytest.approx(1.12069, rel=RTOL)
    assert 0.9 * q_a == pytest.approx(0.996310, rel=RTOL)  # AGM-repo multipliers, CREMA-D c_m
    assert 1.1 * q_v == pytest.approx(1.23276, rel=RTOL)
    assert 1e-3 * q_a == pytest.approx(1.10701e-3, rel=RTOL)  # the 'dynamic' form: lr·q
    assert mslr_ratio([0.0, 0.0], 0.3) == 1.0  # safeguard


def _context(params: dict, fusion: str = "sum"):
    return tiny_context(tiny_components(MSLR, balancer_params=params, fusion=fusion), epochs=10)


def _feed(balancer, ctx, accuracies):
    for epoch, (a, v) in enumerate(accuracies):
        ctx.epoch = epoch
        stats = SimpleNamespace(val=SimpleNamespace(unimodal={"fast": {"accuracy": a}, "slow": {"accuracy": v}}))
        balancer.on_epoch_end(ctx, stats)


def test_ratio_waits_for_full_history_then_is_recomputed_not_compounded():
    balancer, ctx, _ = _context({"init_scale": {"fast": 0.9, "slow": 1.1}, "accuracy_from": "engine"})
    _feed(balancer, ctx, list(zip(H_A, H_V, strict=True)))
    assert balancer.coefficients()["scale.fast"] == 0.9 and balancer.coefficients()["q.slow"] == 1.0
    _feed(balancer, ctx, [(0.60, 0.39)])
    coeffs = balancer.coefficients()
    assert coeffs["scale.fast"] == pytest.approx(0.996310, rel=RTOL)
    assert coeffs["scale.slow"] == pytest.approx(1.23276, rel=RTOL)
    # next epoch: q from the shifted window [0.52, ..., 0.58, 0.60], applied to c_m again (not compounded)
    _feed(balancer, ctx, [(0.60, 0.39)])
    expected = 0.9 * 0.60 / (sum([0.52, 0.55, 0.56, 0.58, 0.60]) / 5)
    assert balancer.coefficients()["scale.fast"] == pytest.approx(expected, rel=RTOL)


def test_a_missing_engine_accuracy_is_named():
    balancer, ctx, _ = _context({"accuracy_from": "engine"})
    with pytest.raises(RuntimeError, match="none for 'slow'"):
        _feed(balancer, ctx, [(0.5, None)])


def test_check_names_parameters_of_another_balancer():
    balancer, ctx, _ = _context({})
    with pytest.raises(TypeError, match="mslr checks MSLRParams, got NoParams"):
        MSLR.check(NoParams(), ctx.task)


def test_compound_variant_multiplies_the_scale_every_update_epochs():
    params = {"memory": 2, "compound": True, "update_every": 2, "accuracy_from": "engine"}
    balancer, ctx, _ = _context(params)
    _feed(balancer, ctx, [(0.5, 0.5), (0.5, 0.5), (0.6, 0.4), (0.6, 0.4)])
    # epoch 2 (not an update epoch) leaves the scale; epoch 3 multiplies by 0.6 / mean(0.5, 0.6)
    assert balancer.coefficients()["scale.fast"] == pytest.approx(0.6 / 0.55, rel=RTOL)
    assert balancer.coefficients()["scale.slow"] == pytest.approx(0.4 / 0.45, rel=RTOL)


def test_scales_encoder_and_own_branch_gradients():
    balancer, ctx, batch = _context({"init_scale": {"fast": 0.5, "slow": 3.0}})
    model = ctx.model
    out = model(batch)
    balancer.loss(ctx, batch, out).backward()
    before = {n: p.grad.clone() for n, p in model.named_parameters()}
    balancer.after_backward(ctx, batch, out)
    scale = {"fast": 0.5, "slow": 3.0}
    for name, p in model.named_parameters():
        m = "fast" if ".fast" in name else "slow"
        assert p.grad.abs().sum() > 0
        torch.testing.assert_close(p.grad, before[name] * scale[m], msg=name)
    assert len(list(model.heads.parameters())) == 0  # the additive fusion's branches are the classifiers


def test_branch_accuracy_is_the_branch_argmax():
    balancer, ctx, batch = _context({})
    ctx.val_loader = [batch]
    acc = balancer.branch_accuracy(ctx)
    model = ctx.model.eval()
    with torch.no_grad():
        features = model.encode(batch)
        for m, lin in model.fusion.linears.items():
            expected = (lin(features[m]).argmax(-1) == batch["label"]).float().mean().item()
            assert acc[m] == pytest.approx(expected)


def test_only_the_additive_fusion_is_accepted_and_unknown_modalities_are_refused(registry):
    from mmbench.running.cells import incompatibility

    task = tiny_components(MSLR).task
    encoders = {m: registry.get("encoders", "mlp").cls for m in task.modalities}
    reasons = {f: incompatibility(MSLR, task, encoders, registry.get("fusions", f).cls)
               for f in ("sum", "concat", "gmu")}
    assert reasons == {"sum": None, "concat": "mslr supports fusions ['sum'], not 'concat'",
                       "gmu": "mslr supports fusions ['sum'], not 'gmu'"}
    assert MSLR.check(MSLR.Params(init_scale={"audio": 0.9}), task) == [
        "init_scale names 'audio', which is not one of the task's modalities (fast, slow)"]
    with pytest.raises(ValueError, match="init_scale names 'audio'"):
        train_tiny(MSLR, fusion="sum", balancer_params={"init_scale": {"audio": 0.9}})


@pytest.mark.parametrize("accuracy_from", ["branch", "engine"])
def test_train_tiny(accuracy_from):
    outcome = train_tiny(MSLR, epochs=2, fusion="sum", balancer_params={"memory": 1, "accuracy_from": accuracy_from})
    assert outcome.status == "ok"
    assert len(outcome.history) == 2
    for stats in outcome.history:
        assert math.isfinite(stats.train_loss)
        assert {"scale.fast", "scale.slow", "q.fast", "q.slow", "val_acc.fast", "val_acc.slow"} <= set(
            stats.coefficients)
    first, second = outcome.history[0].coefficients, outcome.history[1].coefficients
    assert first["scale.fast"] == 1.0  # history not full yet
    assert second["q.slow"] == pytest.approx(second["val_acc.slow"] / first["val_acc.slow"])
    if accuracy_from == "engine":
        assert second["val_acc.fast"] == outcome.history[1].val.unimodal["fast"]["accuracy"]
