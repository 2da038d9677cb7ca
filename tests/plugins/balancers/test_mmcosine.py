"""MMCosine: a worked vector (the official `main_CD.py` cosine logits, GeWu-Lab/MMCosine_ICASSP23 @ 00ba0a9cbd9b,
computed independently in numpy), cosine logits in training and evaluation, end-to-end training."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mmbench.schema.params import NoParams
from mmbench.testing import assert_trained, tiny_components, tiny_context, train_tiny
from mmbench_plugins.balancers.mmcosine import MMCosine, MMCosineParams, cosine_logits
from mmbench_plugins.fusions.concat import ConcatFusion

RTOL = 1e-5
Z_A = torch.tensor([[3.0, 4.0], [1.0, 0.0]])
Z_V = torch.tensor([[0.0, 2.0], [1.0, 1.0]])
W = torch.tensor([[1.0, 0.0, 0.0, 1.0], [0.0, 2.0, 1.0, 1.0], [1.0, 1.0, -1.0, 0.0]])
Y = torch.tensor([1, 0])


def test_worked_vector():
    fusion = ConcatFusion({"a": 2, "v": 2}, 3, NoParams())
    with torch.no_grad():
        fusion.linear.weight.copy_(W)
        fusion.linear.bias.copy_(torch.tensor([0.1, 0.0, -0.1]))
    blocks = {m: w for m, (w, _) in fusion.classifier_blocks().items()}
    parts = cosine_logits({"a": Z_A, "v": Z_V}, blocks, 10.0)
    torch.testing.assert_close(parts["a"] / 10, torch.tensor([[0.6, 0.8, 0.989949], [1.0, 0.0, 0.707107]]),
                               rtol=RTOL, atol=1e-6)
    torch.testing.assert_close(parts["v"] / 10, torch.tensor([[1.0, 0.707107, 0.0], [0.707107, 1.0, -0.707107]]),
                               rtol=RTOL, atol=1e-6)
    logits = parts["a"] + parts["v"]
    torch.testing.assert_close(logits, torch.tensor([[16.0, 15.0711, 9.89949], [17.0711, 10.0, 0.0]]),
                               rtol=RTOL, atol=1e-5)
    assert F.cross_entropy(logits, Y).item() == pytest.approx(0.632132, rel=RTOL)
    raw = fusion({"a": Z_A, "v": Z_V}).logits  # what the official valid() predicted from (not used here)
    torch.testing.assert_close(raw, torch.tensor([[5.1, 10.0, 6.9], [2.1, 2.0, -0.1]]), rtol=RTOL, atol=1e-6)


def test_zero_feature_gives_zero_cosine():
    parts = cosine_logits({"a": torch.zeros(2, 2)}, {"a": W[:, :2]}, 10.0)
    assert torch.equal(parts["a"], torch.zeros(2, 3))


def _context(fusion: str, params: dict | None = None):
    return tiny_context(tiny_components(MMCosine, balancer_params=params, fusion=fusion))


def _reference_logits(model, features, scaling):
    logits = 0
    for m, (w, _) in model.fusion.classifier_blocks().items():
        logits = logits + scaling * F.normalize(features[m], dim=-1) @ F.normalize(w, dim=-1).T
    return logits


@pytest.mark.parametrize("fusion", ["concat", "sum"])
def test_loss_and_eval_use_cosine_logits_and_bias_gets_no_gradient(fusion):
    balancer, ctx, batch = _context(fusion, {"scaling": 15.0})
    model = ctx.model
    out = model(batch)
    expected = _reference_logits(model, out.features, 15.0)
    assert not torch.allclose(expected, out.logits)  # differs from the raw fused output
    loss = balancer.loss(ctx, batch, out)
    assert loss.item() == pytest.approx(F.cross_entropy(expected, batch["label"]).item(), rel=RTOL)
    torch.testing.assert_close(balancer.eval_logits(ctx, out), expected)
    loss.backward()
    biases = [p for name, p in model.fusion.named_parameters() if p.dim() == 1]
    assert biases and all(p.grad is None or torch.count_nonzero(p.grad) == 0 for p in biases)
    weights = [p for p in model.fusion.parameters() if p.dim() == 2]
    assert all(p.grad is not None and torch.count_nonzero(p.grad) > 0 for p in weights)
    assert all(p.grad is not None for m in ("fast", "slow") for p in model.encoders[m].parameters())


def test_dropped_modality_contributes_nothing_at_evaluation():
    balancer, ctx, batch = _context("concat")
    model = ctx.model
    with torch.no_grad():
        features = model.encode(batch)
        full = balancer.eval_logits(ctx, model.head(features))
        only_fast = balancer.eval_logits(ctx, model.head(features, drop={"slow"}))
    torch.testing.assert_close(full, _reference_logits(model, features, 10.0))
    blocks = model.fusion.classifier_blocks()
    fast_alone = 10.0 * F.normalize(features["fast"], dim=-1) @ F.normalize(blocks["fast"][0], dim=-1).T
    torch.testing.assert_close(only_fast, fast_alone)
    assert not torch.allclose(only_fast, full)


def test_coefficients_report_true_class_cosine():
    balancer, ctx, batch = _context("concat")
    out = ctx.model(batch)
    balancer.loss(ctx, batch, out)
    c = balancer.coefficients()
    y = batch["label"]
    for m, (w, _) in ctx.model.fusion.classifier_blocks().items():
        cos = F.normalize(out.features[m], dim=-1) @ F.normalize(w, dim=-1).T
        assert c[f"cos.{m}"] == pytest.approx(cos[torch.arange(len(y)), y].mean().item(), rel=1e-4)
        assert c[f"weight_norm.{m}"] == pytest.approx(w.norm(dim=-1).mean().item(), rel=RTOL)


def test_fusions_without_linear_blocks_are_refused(registry):
    from mmbench.running.cells import incompatibility

    task = tiny_components(MMCosine).task
    encoders = {m: registry.get("encoders", "mlp").cls for m in task.modalities}
    reasons = {f: incompatibility(MMCosine, task, encoders, registry.get("fusions", f).cls)
               for f in ("concat", "sum", "gmu")}
    assert reasons == {"concat": None, "sum": None, "gmu": "mmcosine supports fusions ['concat', 'sum'], not 'gmu'"}
    assert MMCosine.Params(**MMCosine.task_defaults["cremad"]).scaling == 10.0  # the paper's CREMA-D s
    with pytest.raises(ValueError):
        MMCosineParams(scaling=0.0)


@pytest.mark.parametrize("fusion", ["concat", "sum"])
def test_train_tiny(fusion):
    outcome = train_tiny(MMCosine, epochs=2, fusion=fusion)
    assert_trained(outcome, 2, {"cos.fast", "cos.slow", "weight_norm.fast", "weight_norm.slow"})
    for epoch in outcome.history:
        assert all(-1 <= epoch.coefficients[f"cos.{m}"] <= 1 for m in ("fast", "slow"))
    # training raised the true-class cosine of the fast modality
    assert outcome.history[1].coefficients["cos.fast"] > outcome.history[0].coefficients["cos.fast"]
    assert outcome.test is not None and outcome.test.metrics["accuracy"] > 0.25
    # missing-modality predictions come from the remaining modality's cosines, so they differ from the full ones
    assert outcome.test.missing_modality["slow"] != outcome.test.metrics
