"""AGM: a worked vector (the official `GradMod` / `train` arithmetic, lihong2303/AGM_ICCV2023 @ 5a65542c70b1,
computed independently in numpy), Shapley efficiency, which gradients the hooks scale, the window flag, the
conditional clip, and end-to-end training."""

from __future__ import annotations

import math

import pytest
import torch
from torch.utils.data import DataLoader

from mmbench.contract.context import TrainContext
from mmbench.schema.recipe import OptimizerConfig
from mmbench.testing import assert_trained, tiny_components, train_tiny
from mmbench.training.engine import build_model, collate, task_loss_fn
from mmbench.training.optim import build_optimizer
from mmbench_plugins.balancers.agm import (
    AGM,
    agm_coefficients,
    agm_scores,
    conditional_clip_,
    scale_grad,
    shapley_outputs,
    update_running_mean,
)

RTOL = 1e-5
T = torch.tensor([[2.0, 0.5, -1.0], [0.2, 1.5, 0.3], [-0.5, 0.1, 1.2]])
P_V = torch.tensor([[1.5, 0.2, -0.5], [0.0, 1.0, 0.1], [-0.2, 0.0, 0.6]])  # f(a, 0)
P_A = torch.tensor([[0.4, 0.3, -0.2], [0.3, 0.4, 0.2], [-0.1, 0.2, 0.5]])  # f(0, v)
Z = torch.tensor([[0.1, 0.0, 0.0]] * 3)
Y = torch.tensor([0, 1, 2])
THREE = {"modalities": [
    {"name": "fast", "dim": 16, "signal": 5.0, "coverage": 0.8, "code": "linear"},
    {"name": "slow", "dim": 64, "signal": 2.5, "coverage": 1.0, "code": "sign"},
    {"name": "third", "dim": 8, "signal": 1.0, "coverage": 1.0, "code": "linear"},
]}


def _outputs(t=T, pv=P_V, pa=P_A):
    return {frozenset("av"): t, frozenset("a"): pv, frozenset("v"): pa, frozenset(): Z}


def _close(actual, expected):
    torch.testing.assert_close(actual, torch.tensor(expected, dtype=actual.dtype), rtol=RTOL, atol=1e-6)


# ------------------------------------------------------------------------------------- worked vector


def test_worked_vector_unimodal_outputs_and_scores():
    u = shapley_outputs(_outputs(), ["a", "v"])
    _close(u["a"], [[1.55, 0.2, -0.65], [-0.05, 1.05, 0.1], [-0.3, -0.05, 0.65]])
    _close(u["v"], [[0.45, 0.3, -0.35], [0.25, 0.45, 0.2], [-0.2, 0.15, 0.55]])
    _close(u["a"] + u["v"], T.tolist())
    phi = shapley_outputs(_outputs(), ["a", "v"], exact=True)
    _close(phi["a"], [[1.5, 0.2, -0.65], [-0.1, 1.05, 0.1], [-0.35, -0.05, 0.65]])
    scores = agm_scores([u["a"], u["v"]], Y)
    _close(scores, [0.496660, 0.851295])


@pytest.mark.parametrize("running, n, r_bar, k, dT, dPv, running_after", [
    ([0.0, 0.0], 1, [1.0, 1.0], [0.528089, 1.56495], 1.04652, -0.518432, [0.496660, 0.851295]),
    ([0.9, 1.1], 101, [1.22140, 0.818731], [0.736102, 1.19238], 0.964242, -0.228139, [0.896007, 1.09754]),
])
def test_worked_vector_coefficients_and_gradient_multipliers(running, n, r_bar, k, dT, dPv, running_after):
    t, pv, pa = (x.clone().requires_grad_() for x in (T, P_V, P_A))
    u = shapley_outputs(_outputs(t, pv, pa), ["a", "v"])
    scores = agm_scores([u["a"], u["v"]], Y)
    r, rb, coeff = agm_coefficients(scores, torch.tensor(running), alpha=1.5, clip=10.0)
    _close(r, [1.42566, 0.701429])
    _close(rb, r_bar)
    _close(coeff, k)
    _close(update_running_mean(torch.tensor(running), scores, n), running_after)
    fused = scale_grad(u["a"], coeff[0]) + scale_grad(u["v"], coeff[1])
    _close(fused.detach(), T.tolist())  # the hooks do not change the forward value
    fused.backward(torch.ones_like(fused))  # g = dL/do = 1 everywhere
    _close(t.grad, [[dT] * 3] * 3)
    _close(pv.grad, [[dPv] * 3] * 3)
    _close(pa.grad, [[-dPv] * 3] * 3)


def test_worked_vector_three_modalities():
    r, r_bar, k = agm_coefficients(torch.tensor([0.8, 1.2, 1.0]), torch.tensor([0.9, 1.0, 1.1]), alpha=4.0, clip=7.0)
    _close(r, [1.34986, 0.740818, 1.0])
    _close(r_bar, [1.16183, 1.0, 0.860708])
    _close(k, [0.471376, 2.81997, 0.572829])


def test_clip_bounds_the_exponent():
    scores, running = torch.tensor([3.0, 0.0]), torch.tensor([0.0, 3.0])  # r̄_a − r_a = e³ − e⁻³ ≈ 20
    _, _, clipped = agm_coefficients(scores, running, alpha=1.0, clip=10.0)
    _, _, free = agm_coefficients(scores, running, alpha=1.0, clip=None)
    assert clipped[0].item() == pytest.approx(math.exp(10.0), rel=RTOL)
    assert free[0].item() == pytest.approx(math.exp(math.exp(3) - math.exp(-3)), rel=RTOL)


def test_score_floor():
    u = torch.tensor([[100.0, -100.0]])  # p(y=1) underflows to 0 → −log(1e-8)
    assert agm_scores([u], torch.tensor([1])).item() == pytest.approx(-math.log(1e-8), rel=RTOL)


# ---------------------------------------------------------------------------------- Shapley efficiency


def _ctx(params=None, fusion="concat", task_params=None, batch_size=32):
    components = tiny_components(AGM, params, fusion=fusion, task_params=task_params)
    balancer = AGM(AGM.Params(**(params or {})))
    torch.manual_seed(0)
    model = build_model(components, balancer)
    splits = components.task.splits()
    loader = DataLoader(splits["train"], batch_size=batch_size, shuffle=False, collate_fn=collate)
    ctx = TrainContext(
        model=model, optimizer=build_optimizer(OptimizerConfig(lr=0.05), model.parameter_groups()),
        task=components.task, device=torch.device("cpu"), epochs=2, train_loader=loader,
        val_loader=DataLoader(splits["val"], batch_size=batch_size, collate_fn=collate), task_loss=task_loss_fn(False),
        evaluate=lambda loader: None,
    )
    balancer.setup(ctx)
    balancer.on_epoch_start(ctx)
    return balancer, ctx, next(iter(loader))


@pytest.mark.parametrize("fusion", ["concat", "sum"])
def test_efficiency_on_a_model_with_three_modalities(fusion):
    balancer, ctx, batch = _ctx({"exact_shapley": True}, fusion=fusion, task_params=THREE)
    mods = ctx.model.modalities
    with torch.no_grad():
        outputs = balancer._subset_outputs(ctx, batch)
        outputs[frozenset(mods)] = ctx.model(batch).logits
    phi = shapley_outputs(outputs, mods, exact=True)
    u = shapley_outputs(outputs, mods, exact=False)
    full, empty = outputs[frozenset(mods)], outputs[frozenset()]
    assert not torch.allclose(full, empty)  # the check below is not trivially true
    torch.testing.assert_close(sum(phi.values()), full - empty, rtol=1e-5, atol=1e-5)  # Shapley efficiency
    torch.testing.assert_close(sum(u.values()), full, rtol=1e-5, atol=1e-5)  # the code's outputs sum to f(all)
    for m in mods:
        torch.testing.assert_close(u[m], phi[m] + empty / 3, rtol=1e-5, atol=1e-5)
    # the official 3-modality formula (model/URFunny_net.py: Modality_Text), with t = "third"
    f = {frozenset(k): v for k, v in outputs.items()}
    a, v, t = "fast", "slow", "third"
    pad = lambda *gone: f[frozenset(set(mods) - set(gone))]  # noqa: E731
    official_t = (full - pad(t) + pad(v, a)) / 3 + (pad(v) - pad(a, t) + pad(a) - pad(v, t)) / 6
    torch.testing.assert_close(u[t], official_t, rtol=1e-5, atol=1e-5)


def test_subset_passes_zero_the_inputs_in_eval_mode():
    balancer, ctx, batch = _ctx(params={"exact_shapley": True})
    calls = []
    ctx.model.fusion.register_forward_hook(lambda mod, inp, out: calls.append(ctx.model.training))
    with torch.no_grad():
        outputs = balancer._subset_outputs(ctx, batch)
    assert calls == [False, False, False] and ctx.model.training  # ∅, {fast}, {slow}; train mode restored
    only_fast = {**batch, "slow": torch.zeros_like(batch["slow"])}
    torch.testing.assert_close(outputs[frozenset({"fast"})], ctx.model(only_fast).logits)


@pytest.mark.parametrize("exact, passes", [(False, 3), (True, 4)])
def test_forward_passes_per_step(exact, passes):
    balancer, ctx, batch = _ctx({"exact_shapley": exact})
    calls = []
    ctx.model.fusion.register_forward_hook(lambda *args: calls.append(1))
    balancer.train_step(ctx, batch)
    assert len(calls) == passes


# ------------------------------------------------------------------------------------ hook mechanism


class _NoStep:
    """Keeps the parameters fixed so gradients can be compared after `train_step`."""

    def __init__(self, optimizer):
        self.param_groups = optimizer.param_groups

    def zero_grad(self, set_to_none=True):
        for group in self.param_groups:
            for p in group["params"]:
                p.grad = None

    def step(self):
        pass


def _grads(model):
    return [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in model.parameters()]


def _reference_grads(ctx, batch, scale):
    """Gradients of the hooked loss, built by hand: Σ_m scale_m·u_m against g = ∂CE/∂o at the fused logits."""
    model = ctx.model
    model.zero_grad(set_to_none=True)
    full = model(batch).logits
    model.eval()
    only = {m: model({**batch, **{k: torch.zeros_like(batch[k]) for k in model.modalities if k != m}}).logits
            for m in model.modalities}
    model.train()
    u_fast = 0.5 * (full - only["slow"] + only["fast"])
    u_slow = 0.5 * (full - only["fast"] + only["slow"])
    o = (u_fast + u_slow).detach().requires_grad_()
    g, = torch.autograd.grad(ctx.task_loss(o, batch["label"]), o)
    (g * (scale[0] * u_fast + scale[1] * u_slow)).sum().backward()
    return _grads(model)


@pytest.mark.parametrize("fusion", ["concat", "sum"])
def test_hooks_scale_the_gradients_of_every_pass(fusion):
    balancer, ctx, batch = _ctx({"grad_clip_threshold": None}, fusion=fusion)
    ctx.optimizer = _NoStep(ctx.optimizer)
    balancer.train_step(ctx, batch)
    got = _grads(ctx.model)
    scale = balancer.scale.clone()
    assert abs(scale[0].item() - scale[1].item()) > 1e-3  # unequal coefficients: the passes matter
    expected = _reference_grads(ctx, batch, scale)
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    # ...which differs from plain joint training's gradient
    ctx.model.zero_grad(set_to_none=True)
    ctx.task_loss(ctx.model(batch).logits, batch["label"]).backward()
    joint = _grads(ctx.model)
    assert any(not torch.allclose(a, b, atol=1e-6) for a, b in zip(got, joint))


def test_unit_coefficients_give_the_joint_gradient():
    balancer, ctx, batch = _ctx({"alpha": 0.0, "grad_clip_threshold": None})
    ctx.optimizer = _NoStep(ctx.optimizer)
    loss, out = balancer.train_step(ctx, batch)
    got = _grads(ctx.model)
    ctx.model.zero_grad(set_to_none=True)
    logits = ctx.model(batch).logits
    joint_loss = ctx.task_loss(logits, batch["label"])
    joint_loss.backward()
    torch.testing.assert_close(loss, joint_loss.detach())
    torch.testing.assert_close(out.logits, logits.detach())
    for a, b in zip(got, _grads(ctx.model)):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-7)


# ----------------------------------------------------------------------------------- state and window


def test_running_mean_is_carried_across_steps_and_epochs():
    balancer, ctx, batch = _ctx()
    seen = []
    for step in range(3):
        ctx.step, ctx.epoch = step, step // 2
        u = shapley_outputs({**balancer._subset_outputs(ctx, batch), frozenset(ctx.model.modalities):
                             ctx.model(batch).logits}, ctx.model.modalities)
        seen.append(agm_scores([u[m] for m in ctx.model.modalities], batch["label"]))
        balancer.train_step(ctx, batch)
    torch.testing.assert_close(balancer.running, torch.stack(seen).double().mean(0), rtol=1e-5, atol=1e-6)


def test_running_mean_does_not_drift_over_a_long_run():
    """The run-long mean is kept in float64 (the code's Python floats): after 20,000 steps alternating the
    float32 scores (0.3, 1.7) and (0.9, 1.1) it is their exact mean; a float32 mean drifts ~2e-5 relative."""
    balancer, _, _ = _ctx()
    scores = torch.tensor([[0.3, 1.7], [0.9, 1.1]])  # float32, as agm_scores gives them
    for n in range(1, 20_001):
        balancer.observe(scores[n % 2], n)
    exact = torch.tensor([(0.300000011920929 + 0.899999976158142) / 2, (1.70000004768372 + 1.10000002384186) / 2],
                         dtype=torch.float64)
    torch.testing.assert_close(balancer.running, exact, rtol=1e-9, atol=0)


@pytest.mark.parametrize("reset", [False, True])
def test_scale_outside_the_window(reset):
    balancer, ctx, batch = _ctx({"modulation_starts": 1, "modulation_ends": 1, "reset_outside_window": reset})
    ones = torch.ones(2, dtype=torch.float64)
    balancer.train_step(ctx, batch)  # epoch 0: before the window
    torch.testing.assert_close(balancer.scale, ones)
    ctx.epoch, ctx.step = 1, 1
    balancer.train_step(ctx, batch)
    inside = balancer.scale.clone()
    assert not torch.allclose(inside, ones)
    ctx.epoch, ctx.step = 2, 2
    balancer.train_step(ctx, batch)  # after the window: the code keeps the last coefficients
    torch.testing.assert_close(balancer.scale, ones if reset else inside)
    coefficients = balancer.coefficients()
    assert coefficients["scale.fast"] != pytest.approx(coefficients["k.fast"])


def test_conditional_clip():
    w = torch.nn.Parameter(torch.zeros(2, 2))
    b = torch.nn.Parameter(torch.zeros(2))
    w.grad, b.grad = torch.tensor([[3.0, 0.0], [0.0, 0.5]]), torch.tensor([4.0, 0.0])
    assert conditional_clip_([w, b], [w], threshold=1.0, max_norm=1.0).item()
    total = torch.cat([w.grad.flatten(), b.grad]).norm()
    assert total.item() == pytest.approx(1.0, rel=1e-5)
    w.grad, b.grad = torch.tensor([[0.9, 0.0], [0.0, 0.5]]), torch.tensor([4.0, 0.0])  # bias is not watched
    assert not conditional_clip_([w, b], [w], threshold=1.0, max_norm=1.0).item()
    torch.testing.assert_close(b.grad, torch.tensor([4.0, 0.0]))


@pytest.mark.parametrize("threshold, clipped", [(1e-9, True), (1e9, False)])
def test_train_step_clips_when_a_fusion_weight_gradient_is_large(threshold, clipped):
    balancer, ctx, batch = _ctx({"grad_clip_threshold": threshold, "grad_clip_norm": 1e-3})
    ctx.optimizer = _NoStep(ctx.optimizer)
    balancer.train_step(ctx, batch)
    norm = torch.nn.utils.get_total_norm([p.grad for p in ctx.model.parameters() if p.grad is not None])
    assert (norm.item() <= 1e-3 * (1 + 1e-4)) is clipped
    assert balancer.coefficients()["clip_rate"] == (1.0 if clipped else 0.0)


def test_window_validation():
    with pytest.raises(ValueError):
        AGM.Params(modulation_starts=3, modulation_ends=2)
    with pytest.raises(ValueError):
        AGM.Params(unknown=1)


# ------------------------------------------------------------------------------------------ end to end


@pytest.mark.parametrize("fusion", ["concat", "sum"])
def test_train_tiny(fusion):
    outcome = train_tiny(AGM, epochs=2, fusion=fusion)
    assert_trained(outcome, 2, {"k.fast", "k.slow", "scale.fast", "scale.slow", "r.fast", "r.slow", "score.fast",
                                "score.slow", "clip_rate"})
    assert all(epoch.coefficients["score.fast"] > 0 for epoch in outcome.history)
    assert outcome.test.metrics["accuracy"] > 0.5  # 4 classes; joint reaches about 0.78 here
