"""PMR: a worked vector (distances, scores, PCE and the prototype EMA of the official `main_Prototype_grad.py`,
fanyunfeng-bit/Modal-Imbalance-PMR @ 3615e4898355, computed independently in numpy), prototype pass and EMA
schedule, safeguards (empty classes, zero distances), which encoder the PCE term reaches, and end-to-end training."""

from __future__ import annotations

import math

import pytest
import torch
from torch.utils.data import DataLoader

from mmbench.contract.context import TrainContext
from mmbench.schema.recipe import OptimizerConfig
from mmbench.testing import tiny_components, tiny_context, train_tiny
from mmbench.training.engine import build_model, collate, task_loss_fn
from mmbench.training.optim import build_optimizer
from mmbench_plugins.balancers.pmr import (
    PMR,
    class_means,
    euclidean_distances,
    gradient_coefficients,
    pmr_terms,
    update_prototypes,
)

RTOL = 1e-5
Z_A = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.5, -0.5]])
C_A = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
Z_V = torch.tensor([[0.2, 0.1], [0.0, 0.3], [0.4, 0.4], [0.1, -0.1]])
C_V = torch.tensor([[0.5, 0.0], [0.0, 0.5], [0.3, 0.3]])
Y = torch.tensor([0, 1, 2, 0])


def _close(actual, expected, rtol=RTOL):
    torch.testing.assert_close(actual, torch.tensor(expected, dtype=actual.dtype), rtol=rtol, atol=1e-6)


# ------------------------------------------------------------------------------------- worked vector


def test_worked_vector_distances_scores_and_loss():
    _close(euclidean_distances(Z_A, C_A),
           [[0, 1.41421, 1], [1.41421, 0, 1], [1, 1, 0], [0.707107, 1.58114, 1.58114]])
    _close(euclidean_distances(Z_V, C_V), [[0.316228, 0.447214, 0.223607], [0.583095, 0.2, 0.3],
                                           [0.412311, 0.412311, 0.141421], [0.412311, 0.608276, 0.447214]])
    scores, ratios, betas, pce = pmr_terms({"a": Z_A, "v": Z_V}, {"a": C_A, "v": C_V}, Y, alpha=2.0)
    _close(scores, [2.36268, 1.47752])
    _close(ratios, [1.59909, 1 / 1.59909])  # ρ = ŝ_a/ŝ_v > 1 → audio ahead
    _close(betas, [0.0, 2.0])  # β = 0 (audio), λ = α (visual)
    _close(pce, [0.527985, 0.997993])
    _close((betas * pce).sum(), 1.99599)


def test_worked_vector_prototype_ema():
    fresh, counts = class_means(torch.tensor([[1.0, 2], [3, 0], [0, 1], [2, 2]]), torch.tensor([0, 0, 1, 1]), 2)
    _close(fresh, [[2, 1], [1, 1.5]])
    old = torch.tensor([[0.0, 0.0], [1.0, 1.0]])
    fallback = torch.zeros(1, 2)
    _close(update_prototypes(fresh, counts, old, 0.0, True, fallback), [[2, 1], [1, 1.5]])
    _close(update_prototypes(fresh, counts, old, 0.2, True, fallback), [[1.6, 0.8], [1, 1.4]])
    _close(update_prototypes(fresh, counts, old, 0.2, False, fallback), [[2, 1], [1, 1.5]])  # no mixing


def test_tie_gives_no_extra_term():
    z = {"a": Z_A, "b": Z_A.clone()}
    c = {"a": C_A, "b": C_A.clone()}
    _, ratios, betas, _ = pmr_terms(z, c, Y, alpha=2.0)
    _close(ratios, [1.0, 1.0])
    _close(betas, [0.0, 0.0])


def test_three_modalities_compare_with_the_weakest_and_scale_gradients_instead():
    # w = v at half scale: its distances halve, ŝ_w = Σ_i softmax(−D_v/2)[i, y_i] = 1.405409 (by hand from the
    # worked vector's D_v); ρ = ŝ / ŝ_w; BalanceBenchmark: no PCE term, k = 1 − tanh(0.01 ρ) where ρ > 1
    scores, ratios, betas, _ = pmr_terms({"a": Z_A, "v": Z_V, "w": Z_V * 0.5}, {"a": C_A, "v": C_V, "w": C_V * 0.5},
                                         Y, alpha=3.0)
    _close(scores, [2.36268, 1.47752, 1.405409])
    _close(ratios, [1.681134, 1.051312, 1.0])
    _close(betas, [0.0, 0.0, 0.0])
    _close(gradient_coefficients(ratios), [0.983190, 0.989487, 1.0])


def test_three_modalities_scale_and_perturb_each_encoder_s_weight_gradients():
    modalities = [{"name": "fast", "dim": 16, "signal": 5.0, "coverage": 0.8, "code": "linear"},
                  {"name": "slow", "dim": 64, "signal": 2.5, "coverage": 1.0, "code": "sign"},
                  {"name": "mid", "dim": 16, "signal": 2.0, "coverage": 1.0, "code": "linear"}]
    components = tiny_components(PMR, task_params={"modalities": modalities})
    balancer, ctx, batch = tiny_context(components)
    balancer.prototypes = {m: torch.zeros(4, 8) for m in ("fast", "slow", "mid")}
    out = ctx.model(batch.inputs)
    loss = balancer.loss(ctx, batch, out)
    torch.testing.assert_close(loss, ctx.task_loss(out.logits, batch.label))  # no PCE term
    loss.backward()
    before = {m: [p.grad.clone() for p in balancer.weights[m]] for m in balancer.weights}
    bias = next(p for p in ctx.model.encoders["fast"].parameters() if p.dim() == 1)
    bias_before = bias.grad.clone()
    balancer.after_backward(ctx, batch, out)
    k = gradient_coefficients(balancer.ratios)
    for i, m in enumerate(("fast", "slow", "mid")):
        for p, g in zip(balancer.weights[m], before[m]):
            noise = k[i] * g - p.grad  # what was subtracted: N(0, σ²), σ = std(g) + 1e-8
            assert not torch.equal(p.grad, g) and noise.std() == pytest.approx(float(g.std()), rel=0.5)
    assert torch.equal(bias.grad, bias_before)  # biases untouched


# ---------------------------------------------------------------------------------------- safeguards


def test_zero_distance_has_a_finite_zero_gradient():
    z = Z_A.clone().requires_grad_()
    d = euclidean_distances(z, C_A)
    d.sum().backward()
    assert torch.isfinite(z.grad).all()
    # row 0 coincides with prototype 0: only the other two prototypes contribute
    expected = (z[0] - C_A[1]) / d[0, 1] + (z[0] - C_A[2]) / d[0, 2]
    torch.testing.assert_close(z.grad[0], expected.detach())


def test_empty_class_keeps_old_prototype_or_falls_back():
    fresh, counts = class_means(torch.tensor([[1.0, 2], [3, 0]]), torch.tensor([0, 0]), 3)
    assert counts.tolist() == [2, 0, 0]
    assert torch.isfinite(fresh).all()
    old = torch.tensor([[9.0, 9], [5, 5], [7, 7]])
    fallback = torch.tensor([[2.0, 1.0]])
    _close(update_prototypes(fresh, counts, old, 0.5, True, fallback), [[5.5, 5], [5, 5], [7, 7]])
    _close(update_prototypes(fresh, counts, None, 0.5, True, fallback), [[2, 1], [2, 1], [2, 1]])


# ---------------------------------------------------------------------------------------- balancer


def _ctx(params=None, fusion="concat", batch_size=32):
    components = tiny_components(PMR, params, fusion=fusion)
    balancer = PMR(PMR.Params(**(params or {})))
    torch.manual_seed(0)
    model = build_model(components, balancer)
    splits = components.task.splits()
    ctx = TrainContext(
        model=model, optimizer=build_optimizer(OptimizerConfig(lr=0.05), model.parameter_groups()),
        task=components.task, device=torch.device("cpu"), epochs=3,
        train_loader=DataLoader(splits["train"], batch_size=batch_size, shuffle=False, collate_fn=collate),
        val_loader=DataLoader(splits["val"], batch_size=batch_size, collate_fn=collate), task_loss=task_loss_fn(False),
        evaluate=lambda loader: None,
    )
    balancer.setup(ctx)
    return balancer, ctx


def _expected_means(ctx, batches):
    feats, labels = {m: [] for m in ctx.model.modalities}, []
    with torch.no_grad():
        for _, batch in zip(range(batches), ctx.train_loader):
            z = ctx.model.encode(batch)
            for m in feats:
                feats[m].append(z[m])
            labels.append(batch["label"])
    y = torch.cat(labels)
    return {m: class_means(torch.cat(f), y, ctx.task.num_classes)[0] for m, f in feats.items()}


def test_prototypes_are_class_means_of_a_fraction_of_the_train_loader():
    balancer, ctx = _ctx({"prototype_fraction": 0.5})  # 8 batches → 4
    balancer.on_epoch_start(ctx)
    assert ctx.model.training
    expected = _expected_means(ctx, 4)
    for m, protos in balancer.prototypes.items():
        assert protos.shape == (ctx.task.num_classes, ctx.model.encoders[m].out_dim)
        torch.testing.assert_close(protos, expected[m])
        assert not torch.allclose(protos, _expected_means(ctx, 8)[m])  # not the whole loader
    # the official N // 10 with N = 8 batches is 0, which the code's `>=` test turns into 1 batch
    balancer, ctx = _ctx()
    balancer.on_epoch_start(ctx)
    torch.testing.assert_close(balancer.prototypes["slow"], _expected_means(ctx, 1)["slow"])


def _perturb(model, seed):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.encoders.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=gen))


def test_ema_starts_with_the_third_epoch():
    balancer, ctx = _ctx({"momentum": 0.5})
    history = []
    for epoch in range(3):
        ctx.epoch = epoch
        balancer.on_epoch_start(ctx)
        history.append(balancer.prototypes["fast"].clone())
        fresh = _expected_means(ctx, 1)["fast"]
        if epoch < 2:
            torch.testing.assert_close(history[-1], fresh)  # the code's first two calls pass epoch 0
        else:
            torch.testing.assert_close(history[-1], 0.5 * fresh + 0.5 * history[-2])
            assert not torch.allclose(history[-1], fresh)
        _perturb(ctx.model, epoch)


def test_prototype_pass_with_missing_classes_stays_finite():
    balancer, ctx = _ctx({"prototype_fraction": 0.001}, batch_size=2)  # 1 batch of 2 samples, 4 classes
    balancer.on_epoch_start(ctx)
    assert balancer.empty_classes >= 2
    assert all(torch.isfinite(p).all() for p in balancer.prototypes.values())
    batch = next(iter(DataLoader(ctx.train_loader.dataset, batch_size=32, collate_fn=collate)))
    loss = balancer.loss(ctx, batch, ctx.model(batch))
    assert torch.isfinite(loss)
    assert balancer.coefficients()["empty_classes"] == balancer.empty_classes


@pytest.mark.parametrize("fusion", ["concat", "sum"])
def test_pce_gradient_reaches_only_the_slower_encoder(fusion):
    balancer, ctx = _ctx({"alpha": 2.0}, fusion=fusion)
    balancer.on_epoch_start(ctx)
    batch = next(iter(ctx.train_loader))
    model = ctx.model

    def grads(loss_fn):
        model.zero_grad(set_to_none=True)
        loss_fn(model(batch)).backward()
        return {name: [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in params]
                for name, params in model.parameter_groups().items() if params}

    with_pce = grads(lambda out: balancer.loss(ctx, batch, out))
    plain = grads(lambda out: ctx.task_loss(out.logits, batch["label"]))
    coefficients = balancer.coefficients()
    betas = {m: coefficients[f"beta.{m}"] for m in model.modalities}
    slow = [m for m, b in betas.items() if b > 0]
    assert len(slow) == 1 and sorted(betas.values()) == [0.0, 2.0]
    for name in with_pce:
        changed = any(not torch.allclose(a, b, atol=1e-7) for a, b in zip(with_pce[name], plain[name]))
        assert changed is (name == f"encoder.{slow[0]}"), name


def test_outside_the_window_the_loss_is_the_task_loss():
    balancer, ctx = _ctx({"modulation_starts": 1, "modulation_ends": 1})
    balancer.on_epoch_start(ctx)
    batch = next(iter(ctx.train_loader))
    out = ctx.model(batch)
    plain = ctx.task_loss(out.logits, batch["label"])
    torch.testing.assert_close(balancer.loss(ctx, batch, out), plain)
    coefficients = balancer.coefficients()
    assert coefficients["beta.fast"] == 0.0 and coefficients["beta.slow"] == 0.0
    ctx.epoch = 1
    assert balancer.loss(ctx, batch, out).item() > plain.item()


def test_validation_split_option():
    balancer, ctx = _ctx({"prototype_split": "val", "prototype_fraction": 1.0})
    balancer.on_epoch_start(ctx)
    feats, labels = {m: [] for m in ctx.model.modalities}, []
    with torch.no_grad():
        for batch in ctx.val_loader:
            z = ctx.model.encode(batch)
            for m in feats:
                feats[m].append(z[m])
            labels.append(batch["label"])
    expected = class_means(torch.cat(feats["fast"]), torch.cat(labels), ctx.task.num_classes)[0]
    torch.testing.assert_close(balancer.prototypes["fast"], expected)


def test_params_validation():
    with pytest.raises(ValueError):
        PMR.Params(modulation_starts=5, modulation_ends=4)
    with pytest.raises(ValueError):
        PMR.Params(temperature=0.1)  # the code's unused flag is not a parameter


# ------------------------------------------------------------------------------------------ end to end


@pytest.mark.parametrize("fusion", ["concat", "sum"])
def test_train_tiny(fusion):
    outcome = train_tiny(PMR, epochs=2, fusion=fusion, balancer_params={"alpha": 2.0})
    assert outcome.status == "ok"
    assert len(outcome.history) == 2
    for epoch in outcome.history:
        assert math.isfinite(epoch.train_loss)
        keys = {"beta.fast", "beta.slow", "rho.fast", "rho.slow", "pce.fast", "pce.slow", "empty_classes"}
        assert keys <= set(epoch.coefficients)
        assert all(math.isfinite(v) for v in epoch.coefficients.values())
        assert epoch.coefficients["beta.fast"] + epoch.coefficients["beta.slow"] > 0  # the term was active
    assert outcome.test.metrics["accuracy"] > 0.5  # 4 classes; joint reaches about 0.78 here
