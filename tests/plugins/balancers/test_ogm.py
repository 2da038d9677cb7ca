"""OGM / OGM-GE: worked vectors (the official `main.py::train_epoch` arithmetic, GeWu-Lab/OGM-GE_CVPR2022 @
343dc1d95c9b, computed independently in numpy), which gradients are modulated, and end-to-end training."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from mmbench.contract.context import TrainContext
from mmbench.schema.params import NoParams
from mmbench.testing import assert_trained, tiny_components, train_tiny
from mmbench.training.engine import build_model, collate
from mmbench_plugins.balancers.ogm import OGM, OGMGE, OGMParams, ge_noise_std, ogm_coefficients
from mmbench_plugins.fusions.concat import ConcatFusion
from mmbench_plugins.fusions.sum import SumFusion

Z_A = torch.tensor([[1.0, 0.5], [0.2, -0.3], [0.8, 0.1], [-0.4, 0.9]])
Z_V = torch.tensor([[0.3, -0.2], [0.1, 0.4], [-0.5, 0.2], [0.6, 0.6]])
W = torch.tensor([[0.5, -0.2, 0.1, 0.3], [-0.3, 0.4, 0.2, -0.1], [0.2, 0.1, -0.4, 0.5]])
B = torch.tensor([0.1, -0.2, 0.05])
Y = torch.tensor([0, 1, 2, 0])
RTOL = 1e-5


def _concat_contributions() -> dict[str, torch.Tensor]:
    fusion = ConcatFusion({"a": 2, "v": 2}, 3, NoParams())
    with torch.no_grad():
        fusion.linear.weight.copy_(W)
        fusion.linear.bias.copy_(B)
        out = fusion({"a": Z_A, "v": Z_V})
    torch.testing.assert_close(out.logits, torch.tensor(
        [[0.47, -0.22, 0.08], [0.39, -0.4, 0.22], [0.49, -0.52, 0.52], [-0.04, 0.34, 0.12]]), rtol=RTOL, atol=1e-6)
    return out.contributions


def test_worked_vector_concat():
    contributions = _concat_contributions()
    torch.testing.assert_close(contributions["a"], torch.tensor(
        [[0.45, -0.2, 0.275], [0.21, -0.28, 0.035], [0.43, -0.3, 0.195], [-0.33, 0.38, 0.035]]), rtol=RTOL, atol=1e-6)
    torch.testing.assert_close(contributions["v"], torch.tensor(
        [[0.02, -0.02, -0.195], [0.18, -0.12, 0.185], [0.06, -0.22, 0.325], [0.29, -0.04, 0.085]]),
        rtol=RTOL, atol=1e-6)
    expected = {  # (alpha, formula) -> (k_a, k_v)
        (0.1, "tanh_rho"): (1.0, 0.883875),
        (0.8, "tanh_rho"): (1.0, 0.267915),
        (0.1, "tanh_relu_rho_minus_one"): (1.0, 0.983351),
        (0.8, "tanh_relu_rho_minus_one"): (1.0, 0.867576),
    }
    for (alpha, formula), k in expected.items():
        scores, ratios, coeffs = ogm_coefficients(contributions, Y, alpha, formula)
        assert scores.tolist() == pytest.approx([1.24468, 1.45192], rel=RTOL)
        assert ratios.tolist() == pytest.approx([0.857260, 1.16651], rel=RTOL)
        assert coeffs.tolist() == pytest.approx(list(k), rel=RTOL)


def test_worked_vector_sum():
    fusion = SumFusion({"a": 2, "v": 2}, 3, NoParams())
    with torch.no_grad():
        fusion.linears["a"].weight.copy_(W[:, :2])
        fusion.linears["a"].bias.copy_(torch.tensor([0.1, 0.0, -0.1]))
        fusion.linears["v"].weight.copy_(W[:, 2:])
        fusion.linears["v"].bias.copy_(torch.tensor([0.0, 0.1, 0.0]))
        contributions = fusion({"a": Z_A, "v": Z_V}).contributions
    scores, ratios, coeffs = ogm_coefficients(contributions, Y, 0.1)
    assert scores.tolist() == pytest.approx([1.25377, 1.41242], rel=RTOL)
    assert ratios[0].item() == pytest.approx(0.887674, rel=RTOL)
    assert coeffs[0].item() == 1.0 and coeffs[1].item() == pytest.approx(1 - math.tanh(0.1 / 0.887674), rel=RTOL)


def test_ge_noise_std_vector():
    g = torch.tensor([0.01, -0.02, 0.03, 0.0, -0.01, 0.02])
    assert ge_noise_std(g).item() == pytest.approx(0.0187083 + 1e-8, rel=RTOL)
    assert ge_noise_std(torch.tensor([[0.5]])).item() == pytest.approx(1e-8)  # no NaN for one element


def test_three_modalities_follow_balancebenchmark_correct_samples_and_the_weakest_modality():
    # B = 2, C = 2, y = (0, 1). a: both correct, softmax(cos) of the true class 0.195262 + 0.120259;
    # v: only sample 2 correct, 0.195262; t: only sample 1 correct, 1 / (1 + e^(1 - cos 1)) = 0.387058.
    # rho = s / min s = (1.615865, 1, 1.982203); k = 1 - tanh(0.5 rho) where rho > 1
    logits = {"a": torch.tensor([[2.0, 0.0], [0.0, 3.0]]), "v": torch.tensor([[0.0, 1.0], [0.0, 2.0]]),
              "t": torch.tensor([[1.0, 0.0], [1.0, 0.0]])}
    scores, ratios, coeffs = ogm_coefficients(logits, torch.tensor([0, 1]), 0.5)
    assert scores.tolist() == pytest.approx([0.315524, 0.195266, 0.387058], rel=1e-5)
    assert ratios.tolist() == pytest.approx([1.615865, 1.0, 1.982203], rel=1e-5)
    assert coeffs.tolist() == pytest.approx([0.331552, 1.0, 0.242168], rel=1e-5)


def test_underflowed_scores_give_no_nan():
    contributions = {"a": torch.tensor([[0.0, 200.0]]), "v": torch.tensor([[0.0, 300.0]])}
    _, ratios, coeffs = ogm_coefficients(contributions, torch.tensor([0]), 0.8)
    assert torch.isfinite(ratios).all() and coeffs.tolist() == [1.0, 1.0]


# ------------------------------------------------------------------------------------------ mechanism


def _context(balancer_cls, params: dict, epoch: int = 0, fusion: str = "concat"):
    components = tiny_components(balancer_cls, balancer_params=params, fusion=fusion)
    torch.manual_seed(0)
    balancer = balancer_cls(balancer_cls.Params(**params))
    model = build_model(components, balancer)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    ctx = TrainContext(model=model, optimizer=optimizer, task=components.task, device=torch.device("cpu"),
                       epochs=3, train_loader=[], val_loader=[], task_loss=F.cross_entropy, evaluate=None,
                       epoch=epoch, generator=torch.Generator().manual_seed(0))
    balancer.setup(ctx)
    train = components.task.splits()["train"]
    batch = collate([train[i] for i in range(32)])
    return balancer, ctx, batch


def _step(balancer, ctx, batch):
    """Forward + backward; returns (out, gradients before after_backward, gradients after)."""
    ctx.model.zero_grad()
    out = ctx.model(batch)
    balancer.loss(ctx, batch, out).backward()
    before = {p: p.grad.clone() for p in ctx.model.parameters()}
    balancer.after_backward(ctx, batch, out)
    return out, before, {p: p.grad.clone() for p in ctx.model.parameters()}


def _expected_k(out, labels, alpha):
    s = {m: o.softmax(-1)[torch.arange(len(labels)), labels].sum().item() for m, o in out.contributions.items()}
    rho_slow = s["slow"] / s["fast"]
    if rho_slow > 1:
        return {"fast": 1.0, "slow": 1 - math.tanh(alpha * rho_slow)}
    return {"fast": 1 - math.tanh(alpha / rho_slow), "slow": 1.0}


@pytest.mark.parametrize("fusion", ["concat", "sum"])
def test_ogm_scales_encoder_weights_only(fusion):
    balancer, ctx, batch = _context(OGM, {"alpha": 0.8}, fusion=fusion)
    out, before, after = _step(balancer, ctx, batch)
    k = _expected_k(out, batch["label"], 0.8)
    assert min(k.values()) < 1.0  # one modality is modulated
    model = ctx.model
    for m in ("fast", "slow"):
        for p in model.encoders[m].parameters():
            factor = k[m] if p.dim() >= 2 else 1.0  # biases untouched
            torch.testing.assert_close(after[p], before[p] * factor, rtol=RTOL, atol=1e-8)
    for p in list(model.fusion.parameters()):
        assert torch.equal(after[p], before[p])
    coeffs = balancer.coefficients()
    assert coeffs[f"k.{min(k, key=k.get)}"] == pytest.approx(min(k.values()), rel=RTOL)


def test_ogm_outside_window_does_nothing_and_conv_mode_skips_linear_weights():
    balancer, ctx, batch = _context(OGM, {"alpha": 0.8, "modulation_starts": 1, "modulation_ends": 2}, epoch=0)
    _, before, after = _step(balancer, ctx, batch)
    assert all(torch.equal(after[p], before[p]) for p in ctx.model.parameters())
    coefficients = balancer.coefficients()
    assert coefficients["k.fast"] == 1.0 and coefficients["k.slow"] == 1.0
    ctx.epoch = 2  # inclusive end: modulated
    _, before, after = _step(balancer, ctx, batch)
    assert not all(torch.equal(after[p], before[p]) for p in ctx.model.parameters())
    with pytest.warns(UserWarning, match="selects no trainable parameter"):
        balancer, ctx, batch = _context(OGM, {"alpha": 0.8, "modulate": "conv"})
    _, before, after = _step(balancer, ctx, batch)  # MLP encoders have no 4-D kernels: the released rule is a no-op
    assert all(torch.equal(after[p], before[p]) for p in ctx.model.parameters())


def test_ogm_ge_adds_noise_with_unscaled_std_to_both_modalities():
    balancer, ctx, batch = _context(OGMGE, {"alpha": 0.8})
    out, before, after = _step(balancer, ctx, batch)
    k = _expected_k(out, batch["label"], 0.8)
    residuals = []
    for m in ("fast", "slow"):
        for p in ctx.model.encoders[m].parameters():
            if p.dim() < 2:
                assert torch.equal(after[p], before[p])
                continue
            residual = (after[p] - k[m] * before[p]) / (before[p].std() + 1e-8)
            assert not torch.allclose(after[p], k[m] * before[p])  # noise on both, k = 1 included
            residuals.append(residual.flatten())
    pooled = torch.cat(residuals)  # noise / σ over all modulated tensors: standard normal
    assert pooled.numel() > 1000
    assert pooled.std().item() == pytest.approx(1.0, abs=0.1) and abs(pooled.mean().item()) < 0.1
    for p in ctx.model.fusion.parameters():
        assert torch.equal(after[p], before[p])


def test_ogm_ge_noise_is_reproducible():
    grads = []
    for _ in range(2):
        balancer, ctx, batch = _context(OGMGE, {"alpha": 0.1})
        grads.append(_step(balancer, ctx, batch)[2])
    for (p1, g1), (p2, g2) in zip(grads[0].items(), grads[1].items()):
        assert torch.equal(g1, g2)


def test_params_validation_and_task_defaults():
    with pytest.raises(ValueError):
        OGMParams(modulation_starts=5, modulation_ends=4)
    with pytest.raises(ValueError):
        OGMParams(alpha=0.1, unknown=1)
    for cls in (OGM, OGMGE):
        assert cls.Params(**cls.task_defaults["cremad"]).alpha == 0.8


# ------------------------------------------------------------------------------------------ end to end


@pytest.mark.parametrize("cls", [OGM, OGMGE])
@pytest.mark.parametrize("fusion", ["concat", "sum"])
def test_train_tiny(cls, fusion):
    outcome = train_tiny(cls, epochs=2, fusion=fusion, balancer_params={"alpha": 0.8})
    assert_trained(outcome, 2, {"k.fast", "k.slow", "rho.fast", "rho.slow"})
    for epoch in outcome.history:
        c = epoch.coefficients
        assert 0.0 <= min(c["k.fast"], c["k.slow"]) < 1.0 and max(c["k.fast"], c["k.slow"]) <= 1.0
    assert outcome.test.metrics["accuracy"] > 0.5  # 4 classes; joint reaches about 0.78 here


def test_train_tiny_three_modalities():
    modalities = [
        {"name": "fast", "dim": 16, "signal": 5.0, "coverage": 0.8, "code": "linear"},
        {"name": "slow", "dim": 64, "signal": 2.5, "coverage": 1.0, "code": "sign"},
        {"name": "mid", "dim": 16, "signal": 2.0, "coverage": 1.0, "code": "linear"},
    ]
    outcome = train_tiny(OGMGE, epochs=2, task_params={"modalities": modalities}, balancer_params={"alpha": 0.5})
    assert outcome.status == "ok"
    for epoch in outcome.history:
        assert {f"k.{m}" for m in ("fast", "slow", "mid")} <= set(epoch.coefficients)
        assert min(epoch.coefficients[f"k.{m}"] for m in ("fast", "slow", "mid")) < 1.0
