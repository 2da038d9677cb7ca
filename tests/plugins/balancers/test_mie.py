"""MIE: a worked vector (covariance, P and G·P by the paper's Eqs. 5–8 as IGM computes them, njustkmg/IJCAI25-IGM
@ 19aa8e5d99c9 `models/AudioVideo.py`, computed independently in numpy), GM subspace, the two-pass SAM step, the
whole step, phases, end-to-end."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Subset

from mmbench.contract.context import TrainContext
from mmbench.schema.recipe import OptimizerConfig
from mmbench.testing import tiny_components, train_tiny
from mmbench.training.engine import build_model, collate
from mmbench.training.optim import build_optimizer
from mmbench_plugins.balancers.mie import (
    MIE,
    batch_mean_covariance,
    flat_projection,
    pair_layers,
    phase_of,
)

RTOL = 1e-5
ATOL = 1e-6
TAU = 0.4

X1 = torch.tensor([[1.0, 0, 2, 0], [0, 1, 1, 0], [1, 1, 0, 1]])
X2 = torch.tensor([[2.0, 1, 0, 0], [0, 0, 1, 1], [1, 0, 1, 0]])
C = torch.tensor([[1.44444, 0.777778, 1.33333, 0.555556], [0.777778, 0.555556, 0.888889, 0.333333],
                  [1.33333, 0.888889, 1.44444, 0.555556], [0.555556, 0.333333, 0.555556, 0.222222]])
P = torch.tensor([[0.862619, -0.071969, -0.124306, -0.052338], [-0.071969, 0.947032, -0.084203, -0.031234],
                  [-0.124306, -0.084203, 0.863670, -0.052127], [-0.052338, -0.031234, -0.052127, 0.979107]])
G = torch.tensor([[0.1, -0.2, 0.3, 0.0], [0.05, 0.0, -0.1, 0.2]])


def test_worked_vector_covariance_projection_and_gm():
    cov = batch_mean_covariance([X1, X2])
    torch.testing.assert_close(cov, C, rtol=RTOL, atol=ATOL)
    p, sigma = flat_projection(cov, TAU)
    assert sigma[:2].tolist() == pytest.approx([3.50831, 0.158354], rel=RTOL)
    assert sigma[2:].abs().max() < 1e-6
    torch.testing.assert_close(p.float(), P, rtol=RTOL, atol=ATOL)
    lam = torch.linalg.eigvalsh(p).flip(0)
    assert lam.tolist() == pytest.approx([1.0, 1.0, 0.982107, 0.670320], rel=RTOL)  # ∈ [e^{−τ}, 1]
    assert lam.min() == pytest.approx(math.exp(-TAU), rel=RTOL)
    torch.testing.assert_close(G @ p.float(), torch.tensor(
        [[0.063364, -0.221864, 0.263511, -0.014625], [0.045094, -0.001425, -0.103008, 0.198417]]),
        rtol=RTOL, atol=ATOL)


def test_flat_projection_degenerate_covariance_is_identity():
    p, _ = flat_projection(torch.zeros(3, 3), TAU)
    torch.testing.assert_close(p, torch.eye(3, dtype=p.dtype))


def test_phase_schedule_cycles():
    assert [phase_of(e, (1,)) for e in range(4)] == [0, 1, 2, 3]
    phases = [phase_of(e, (25, 50)) for e in range(130)]
    assert phases[24] == 0 and phases[25] == 1 and phases[74] == 1 and phases[75] == 2 and phases[100] == 3


def test_pairing_needs_identical_shapes():
    a = [nn.Sequential(nn.Linear(16, 8)), nn.Linear(8, 3)]
    b = [nn.Sequential(nn.Linear(64, 8)), nn.Linear(8, 3)]
    pairs = pair_layers(a, b, depth=None)
    assert pairs == [(a[1], b[1])]  # only the heads (8 -> 3) match; Linear(16, 8) vs Linear(64, 8) do not
    with pytest.raises(ValueError, match="identical shape"):
        pair_layers([nn.Linear(8, 3)], [nn.Linear(16, 3)], depth=1)


# ------------------------------------------------------------------------------------------ mechanism


def _context(params: dict, epoch: int = 0):
    components = tiny_components(MIE, balancer_params=params)
    torch.manual_seed(0)
    balancer = MIE(MIE.Params(**params))
    model = build_model(components, balancer)
    optimizer = build_optimizer(OptimizerConfig(name="sgd", lr=0.1, momentum=0.0), model.parameter_groups())
    train = components.task.splits()["train"]
    loader = DataLoader(train, batch_size=32, collate_fn=collate)

    def split_batches(split, indices=None, batch_size=None):
        return DataLoader(Subset(train, list(range(len(train))) if indices is None else indices),
                          batch_size=batch_size or 32, collate_fn=collate)

    ctx = TrainContext(model=model, optimizer=optimizer, task=components.task, device=torch.device("cpu"),
                       epochs=4, train_loader=loader, val_loader=loader, task_loss=F.cross_entropy,
                       evaluate=None, generator=torch.Generator().manual_seed(0), split_batches=split_batches,
                       train_size=len(train))
    balancer.setup(ctx)
    for ctx.epoch in range(epoch + 1):
        balancer.on_epoch_start(ctx)
    return balancer, ctx, next(iter(loader))


def _record_step(ctx):
    """Wrap optimizer.step to record every parameter's gradient and value at the step."""
    records, step = [], ctx.optimizer.step

    def recording_step(*args, **kwargs):
        records.append({p: (None if p.grad is None else p.grad.clone(), p.detach().clone())
                        for p in ctx.model.parameters()})
        return step(*args, **kwargs)

    ctx.optimizer.step = recording_step
    return records


def test_gm_gradient_lies_in_the_flat_subspace_of_the_previous_modality():
    """Phase 2 trains `slow`; its head's weight gradient is G·P with P from `fast`'s head inputs: components
    along the previous modality's high-energy direction are damped by e^{−τ}, the orthogonal ones kept."""
    tau = 30.0  # e^{−τ} ≈ 1e-13: the dominant direction is (numerically) projected out
    balancer, ctx, batch = _context({"rho": 0.0, "tau": tau, "reload_after": None}, epoch=1)
    assert balancer.active == "slow"
    model = ctx.model
    # the P built at the switch is exactly flat_projection of fast's head-input covariance
    seed = int(torch.randint(0, 2**31 - 1, (1,), generator=torch.Generator().manual_seed(0)))
    with torch.no_grad():  # the same batches of 12 as the balancer's covariance pass
        order = torch.randperm(ctx.train_size, generator=torch.Generator().manual_seed(seed)).tolist()
        loader = DataLoader(Subset(ctx.train_loader.dataset, order), batch_size=12, collate_fn=collate)
        feats = [model.encoders["fast"](b["fast"]) for b in loader]
    (layer, p_used), = balancer.projections
    assert layer is model.heads["slow"]
    _, sigma = flat_projection(batch_mean_covariance(feats), tau)
    assert balancer.spectra["fast"]["sigma_max"] == pytest.approx(float(sigma[0]), rel=1e-4)
    eigvals, eigvecs = torch.linalg.eigh(p_used.double())
    u = eigvecs[:, 0].float()  # the damped (sharpest) direction
    assert eigvals[0] < 1e-6 and eigvals[-1] == pytest.approx(1.0, abs=1e-5)

    records = _record_step(ctx)
    with torch.no_grad():
        z = model.encoders["slow"](batch["slow"])
    w = model.heads["slow"].weight.detach().clone().requires_grad_()
    raw = torch.autograd.grad(F.cross_entropy(F.linear(z, w, model.heads["slow"].bias), batch["label"]), [w])[0]
    balancer.train_step(ctx, batch)
    g = records[0][model.heads["slow"].weight][0]
    torch.testing.assert_close(g, raw @ p_used, rtol=1e-5, atol=1e-7)
    assert (g @ u).abs().max() < 1e-5 * raw.abs().max()  # nothing left along the sharp direction
    assert (raw @ u).abs().max() > 1e-3  # ... although the raw gradient had a component there
    # the bias and the encoder's (unpaired, gm_depth=1) gradients are not modified; the idle branch gets none
    for p in model.encoders["fast"].parameters():
        assert records[0][p][0] is None
    assert records[0][model.heads["fast"].weight][0] is None
    assert balancer.coefficients()["gm_kept"] < 1.0


def test_sam_step_uses_the_gradient_at_the_perturbed_point():
    rho = 0.5
    balancer, ctx, batch = _context({"rho": rho, "gm": False})
    assert balancer.active == "fast"
    model = ctx.model
    params = list(model.encoders["fast"].parameters()) + list(model.heads["fast"].parameters())
    theta = [p.detach().clone() for p in params]

    def loss_at(values):
        saved = [p.detach().clone() for p in params]
        with torch.no_grad():
            for p, v in zip(params, values):
                p.copy_(v)
        loss = F.cross_entropy(model.heads["fast"](model.encoders["fast"](batch["fast"])), batch["label"])
        grads = torch.autograd.grad(loss, params)
        with torch.no_grad():
            for p, v in zip(params, saved):
                p.copy_(v)
        return loss.detach(), grads

    loss0, g = loss_at(theta)
    norm = torch.sqrt(sum((x**2).sum() for x in g))
    loss1, g_sam = loss_at([t + rho * x / norm for t, x in zip(theta, g)])
    records = _record_step(ctx)
    loss, out = balancer.train_step(ctx, batch)
    torch.testing.assert_close(loss, loss0)
    for p, t, expected in zip(params, theta, g_sam):
        grad, value = records[0][p]
        torch.testing.assert_close(value, t)  # parameters restored before the step
        torch.testing.assert_close(grad, expected, rtol=1e-4, atol=1e-6)
    assert not torch.allclose(g_sam[0], g[0])
    assert balancer.coefficients()["sam_gap"] == pytest.approx(float(loss1 - loss0), rel=1e-4)
    for p in list(model.encoders["slow"].parameters()) + list(model.heads["slow"].parameters()):
        assert records[0][p][0] is None  # the idle branch is not trained
    assert set(out.unimodal) == {"fast", "slow"}


def _loss_and_grads(model, m: str, batch, values):
    """L and ∇L of modality m's branch (encoder, then head) at the parameter values `values`; model untouched."""
    encoder, head = model.encoders[m], model.heads[m]
    leaves = [v.detach().clone().requires_grad_() for v in values]
    n = len(list(encoder.parameters()))
    enc = dict(zip((k for k, _ in encoder.named_parameters()), leaves[:n], strict=True))
    hd = dict(zip((k for k, _ in head.named_parameters()), leaves[n:], strict=True))
    z = torch.func.functional_call(encoder, enc, (batch[m],))
    loss = F.cross_entropy(torch.func.functional_call(head, hd, (z,)), batch["label"])
    return loss.detach(), torch.autograd.grad(loss, leaves)


def test_whole_step_is_sam_then_gm_then_the_optimizer_step():
    """The whole step with SAM and GM both on: θ' = θ − lr·GM(∇L(θ + ε)), ε = ρ·∇L(θ)/‖∇L(θ)‖ over the active
    branch, GM right-multiplying the head's weight gradient by the P built from the previous modality; the idle
    branch does not move."""
    rho, lr = 0.5, 0.1  # _context's SGD: lr 0.1, no momentum, no weight decay
    balancer, ctx, batch = _context({"rho": rho, "tau": 2.0, "reload_after": None}, epoch=1)
    model = ctx.model
    assert balancer.active == "slow"
    (layer, p_used), = balancer.projections
    params = list(model.encoders["slow"].parameters()) + list(model.heads["slow"].parameters())
    theta = [p.detach().clone() for p in params]
    loss0, g = _loss_and_grads(model, "slow", batch, theta)
    norm = torch.sqrt(sum((x**2).sum() for x in g))
    loss1, g_sam = _loss_and_grads(model, "slow", batch, [t + rho * x / norm for t, x in zip(theta, g, strict=True)])
    expected = [t - lr * (x @ p_used if p is layer.weight else x) for p, t, x in zip(params, theta, g_sam, strict=True)]
    idle = [p.detach().clone() for part in (model.encoders["fast"], model.heads["fast"]) for p in part.parameters()]

    loss, out = balancer.train_step(ctx, batch)
    torch.testing.assert_close(loss, loss0)
    for p, want in zip(params, expected, strict=True):
        torch.testing.assert_close(p.detach(), want, rtol=1e-5, atol=1e-6)
    w = next(i for i, p in enumerate(params) if p is layer.weight)
    assert not torch.allclose(layer.weight.detach(), theta[w] - lr * g_sam[w], rtol=1e-5, atol=1e-6)  # GM acted
    after = [p for part in (model.encoders["fast"], model.heads["fast"]) for p in part.parameters()]
    assert all(torch.equal(a, b) for a, b in zip(after, idle, strict=True))
    coeffs = balancer.coefficients()
    assert coeffs["sam_gap"] == pytest.approx(float(loss1 - loss0), rel=1e-4) and coeffs["gm_kept"] < 1.0
    mean_p = (out.unimodal["fast"].softmax(1) + out.unimodal["slow"].softmax(1)) / 2
    torch.testing.assert_close(out.logits.exp(), mean_p)  # the step's prediction is MIE's late fusion


def test_average_fusion_and_missing_modality():
    balancer, ctx, batch = _context({})
    model = ctx.model
    with torch.no_grad():
        out = model(batch)
        fused = balancer.eval_logits(ctx, out)
        mean_p = (out.unimodal["fast"].softmax(1) + out.unimodal["slow"].softmax(1)) / 2
        torch.testing.assert_close(fused.exp(), mean_p)
        alone = balancer.eval_logits(ctx, model(batch, drop={"slow"}))
        torch.testing.assert_close(alone, out.unimodal["fast"].log_softmax(1))


def test_order_and_per_modality_rho_must_name_the_tasks_modalities():
    task = tiny_components(MIE).task
    assert MIE.check(MIE.Params(order=("slow", "fast"), rho_per_modality={"slow": 0.1}), task) == []
    assert MIE.check(MIE.Params(order=("fast", "fast"), rho_per_modality={"audio": 0.1}), task) == [
        "rho_per_modality names 'audio', which is not one of the task's modalities (fast, slow)",
        "order ['fast', 'fast'] must list each of the task's modalities (fast, slow) once"]
    with pytest.raises(ValueError, match="order"):
        train_tiny(MIE, balancer_params={"order": ("fast", "fast")})


# ------------------------------------------------------------------------------------------ end to end


@pytest.mark.parametrize("fusion", ["concat", "sum"])
def test_train_tiny(fusion):
    outcome = train_tiny(MIE, epochs=2, fusion=fusion)
    assert outcome.status == "ok"
    assert all(math.isfinite(h.train_loss) for h in outcome.history)
    first, second = (h.coefficients for h in outcome.history)
    assert first["active.fast"] == 1.0 and second["active.slow"] == 1.0  # alternating phases
    assert first["gm_kept"] == 1.0 and second["gm_kept"] < 1.0  # GM only once a previous phase exists
    assert "sigma_max.fast" in second and second["sam_gap"] != 0.0
    assert outcome.test.unimodal["fast"] == outcome.test.missing_modality["slow"]


@pytest.mark.parametrize("params", [{"fusion": "entropy", "gm_depth": None, "cov_batch_size": None},
                                    {"fusion": "entropy_batch", "rho": 0.0, "phase_epochs": (2,)}])
def test_train_tiny_variants(params):
    outcome = train_tiny(MIE, epochs=2, balancer_params=params)
    assert outcome.status == "ok" and all(math.isfinite(h.train_loss) for h in outcome.history)


def test_phase_switch_reloads_best_state_and_resets_optimizer():
    balancer, ctx, batch = _context({"rho": 0.0, "reload_after": 1})
    model = ctx.model
    best = {k: v.clone() for k, v in model.state_dict().items()}
    balancer.best_state = best
    ctx.optimizer = build_optimizer(OptimizerConfig(name="sgd", lr=0.1, momentum=0.9), model.parameter_groups())
    balancer.train_step(ctx, batch)
    assert ctx.optimizer.state  # momentum buffers exist
    assert not torch.equal(model.heads["fast"].weight, best["heads.fast.weight"])
    ctx.epoch = 1
    balancer.on_epoch_start(ctx)
    assert balancer.active == "slow" and not ctx.optimizer.state
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, best[k])


@pytest.mark.parametrize("params, switches, reloads", [
    ({}, [1, 2, 3], [False] * 3),  # default: one-epoch phases and reloads only after >= 25 epochs: never
    ({"reload_after": 1}, [1, 2, 3], [True] * 3),  # IGM: at every switch
    ({"phase_epochs": (1, 2), "reload_after": 2}, [1, 3, 4, 6], [False, True, False, True]),
    ({"phase_epochs": (25, 50)}, [25, 75], [True, True]),  # IGM's CREMA-D schedule: every phase is long enough
    ({"phase_epochs": (30,), "reload_after": None}, [30, 60], [False, False]),
])
def test_reload_only_after_long_enough_phases(params, switches, reloads):
    balancer, ctx, _ = _context({"rho": 0.0, **params})
    got = []
    for epoch in switches:
        balancer.best_state = {k: torch.zeros_like(v) for k, v in ctx.model.state_dict().items()}
        with torch.no_grad():
            ctx.model.heads["fast"].weight.fill_(1.0)
        ctx.epoch = epoch
        balancer.on_epoch_start(ctx)
        got.append(bool((ctx.model.heads["fast"].weight == 0).all()))
    assert got == reloads


def test_best_state_is_kept_only_when_a_reload_can_happen():
    for params, kept in [({}, False), ({"phase_epochs": (25, 50)}, True), ({"reload_after": 1}, True)]:
        balancer, ctx, _ = _context({"rho": 0.0, **params})
        stats = SimpleNamespace(val=SimpleNamespace(metrics={"accuracy": 0.5}))
        balancer.on_epoch_end(ctx, stats)
        assert (balancer.best_state is not None) == kept


def test_a_non_finite_score_is_never_the_best():
    balancer, ctx, _ = _context({"rho": 0.0, "reload_after": 1})
    balancer.on_epoch_end(ctx, SimpleNamespace(val=SimpleNamespace(metrics={"accuracy": None})))
    assert balancer.best_state is None and balancer.best_score is None


THREE = {"modalities": [{"name": "a", "dim": 8, "signal": 4.0}, {"name": "b", "dim": 12, "signal": 2.0},
                        {"name": "c", "dim": 6, "signal": 1.0, "code": "sign"}]}


def test_three_modalities_cycle_with_the_previous_modality_projection():
    outcome = train_tiny(MIE, epochs=3, task_params=THREE)
    assert outcome.status == "ok"
    active = [max((v, k) for k, v in h.coefficients.items() if k.startswith("active."))[1] for h in outcome.history]
    assert active == ["active.a", "active.b", "active.c"]
    assert "sigma_max.a" in outcome.history[1].coefficients and "sigma_max.b" in outcome.history[2].coefficients
