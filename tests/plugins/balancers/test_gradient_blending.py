"""OGR-GB: a worked vector (w_k ∝ ΔG_k / ΔO_k² of Wang et al., CVPR 2020, computed independently in numpy),
safeguards, estimation on model copies, end-to-end training."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from mmbench.contract.context import TrainContext
from mmbench.testing import tiny_components, train_tiny
from mmbench.training.engine import build_model, collate
from mmbench_plugins.balancers.gradient_blending import GradientBlending, blend_weights

RTOL = 1e-5
WORKED_LOSSES = {
    "audio": (1.60, 1.50, 1.20, 0.90),
    "video": (1.75, 1.70, 1.60, 1.40),
    "multi": (1.50, 1.40, 1.10, 0.70),
}


def test_worked_vector():
    weights, raw = blend_weights(WORKED_LOSSES)
    assert raw["audio"] == pytest.approx(15.0, rel=RTOL)
    assert raw["video"] == pytest.approx(13.3333, rel=RTOL)
    assert raw["multi"] == pytest.approx(7.77778, rel=RTOL)
    assert weights == pytest.approx({"audio": 0.415385, "video": 0.369231, "multi": 0.215385}, rel=RTOL)


def test_safeguards():
    # ΔO = 0 would divide by zero: ΔO² is clamped at 1e-8
    weights, raw = blend_weights({"a": (1.0, 1.0, 0.5, 0.5), "b": (1.0, 1.2, 0.9, 1.0)})
    assert raw["a"] == pytest.approx(0.5 / 1e-8) and weights["a"] > 0.99
    # a configuration whose validation loss rose gets weight 0, or |ΔG| with negative_gain="abs"
    worse = {"a": (1.0, 1.0, 0.5, 1.2), "b": (1.0, 1.2, 0.9, 1.0)}
    assert blend_weights(worse)[0]["a"] == 0.0
    assert blend_weights(worse, negative_gain="abs")[0]["a"] > 0.0
    assert blend_weights({"a": (1.0, 1.0, 0.5, 1.2)}) == (None, {"a": 0.0})
    assert blend_weights({"a": (1.0, 1.0, math.nan, math.nan), "b": (1.0, 1.2, 0.9, 1.0)})[0] is None  # diverged


def _context(fusion: str = "concat", optimizer: str = "sgd"):
    params = {"super_epoch": 1}
    components = tiny_components(GradientBlending, balancer_params=params, fusion=fusion)
    torch.manual_seed(0)
    balancer = GradientBlending(GradientBlending.Params(**params))
    model = build_model(components, balancer)
    groups = [{"params": ps, "name": n, "lr": 0.05 * (i + 1)}
              for i, (n, ps) in enumerate(model.parameter_groups().items())]
    opt = (torch.optim.SGD(groups, lr=0.05, momentum=0.9) if optimizer == "sgd"
           else torch.optim.AdamW(groups, lr=1e-3))
    splits = components.task.splits()
    ctx = TrainContext(model=model, optimizer=opt, task=components.task, device=torch.device("cpu"), epochs=2,
                       train_loader=DataLoader(splits["train"], batch_size=32, shuffle=True, collate_fn=collate),
                       val_loader=DataLoader(splits["val"], batch_size=64, collate_fn=collate), task_loss=F.cross_entropy,
                       evaluate=None)
    balancer.setup(ctx)
    return balancer, ctx


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_fresh_optimizer_copies_type_and_group_settings_not_state(optimizer):
    balancer, ctx = _context(optimizer=optimizer)
    clone = copy.deepcopy(ctx.model)
    fresh = balancer.fresh_optimizer(ctx.optimizer, ctx.model, clone)
    assert type(fresh) is type(ctx.optimizer)
    assert [g["lr"] for g in fresh.param_groups] == [g["lr"] for g in ctx.optimizer.param_groups]
    clone_ids = {id(p) for p in clone.parameters()}
    assert all(id(p) in clone_ids for g in fresh.param_groups for p in g["params"])
    assert len(fresh.state) == 0


def test_estimate_trains_copies_and_leaves_the_run_untouched():
    balancer, ctx = _context()
    state = copy.deepcopy(ctx.model.state_dict())
    balancer.on_epoch_start(ctx)  # epoch 0: estimate
    for name, value in ctx.model.state_dict().items():
        assert torch.equal(value, state[name]), name
    assert len(ctx.optimizer.state) == 0
    weights = balancer.weights
    assert set(weights) == {"fast", "slow", "fused"}
    assert sum(weights.values()) == pytest.approx(1.0)
    assert all(w >= 0 for w in weights.values())
    assert weights != {k: 1 / 3 for k in weights}  # the estimate replaced the uniform start
    coeffs = balancer.coefficients()
    # one epoch of training from initialisation lowers the fused model's validation loss
    assert coeffs["dG.fused"] > 0 and weights["fused"] > 0
    expected_raw = {k: max(coeffs[f"dG.{k}"], 0.0) / max(coeffs[f"dO.{k}"] ** 2, 1e-8) for k in weights}
    total = sum(expected_raw.values())
    assert weights == pytest.approx({k: v / total for k, v in expected_raw.items()}, rel=1e-6)


def test_loss_is_the_blend():
    balancer, ctx = _context()
    balancer.weights = {"fast": 0.2, "slow": 0.5, "fused": 0.3}
    batch = next(iter(ctx.train_loader))
    out = ctx.model(batch)
    y = batch["label"]
    expected = (0.3 * F.cross_entropy(out.logits, y) + 0.2 * F.cross_entropy(out.unimodal["fast"], y)
                + 0.5 * F.cross_entropy(out.unimodal["slow"], y))
    torch.testing.assert_close(balancer.loss(ctx, batch, out), expected)


def test_online_reestimates_every_super_epoch_offline_once():
    calls = []
    for mode, expected in (("online", [0, 2]), ("offline", [0])):
        balancer = GradientBlending(GradientBlending.Params(super_epoch=2, mode=mode))
        balancer.estimate = lambda ctx: calls.append(ctx.epoch)
        calls.clear()
        for epoch in range(4):
            balancer.on_epoch_start(type("Ctx", (), {"epoch": epoch})())
        assert calls == expected


@pytest.mark.parametrize("epochs, expected", [(10, [0, 2, 4, 6, 8]), (100, [0, 20, 40, 60, 80]), (3, [0, 1, 2])])
def test_default_super_epoch_is_a_fifth_of_the_run(epochs, expected):
    """Online G-Blend re-estimates five times per run by default; a fixed 10 on a 10-epoch run estimated once."""
    balancer = GradientBlending(GradientBlending.Params())
    calls = []
    balancer.estimate = lambda ctx: calls.append(ctx.epoch)
    for epoch in range(epochs):
        balancer.on_epoch_start(type("Ctx", (), {"epoch": epoch, "epochs": epochs})())
    assert calls == expected


@pytest.mark.parametrize("fusion", ["concat", "sum"])
def test_train_tiny(fusion):
    outcome = train_tiny(GradientBlending, epochs=2, fusion=fusion,
                         balancer_params={"super_epoch": 1, "train_eval_samples": 64})
    assert outcome.status == "ok"
    assert len(outcome.history) == 2
    for stats in outcome.history:
        assert math.isfinite(stats.train_loss)
        w = [stats.coefficients[f"w.{k}"] for k in ("fast", "slow", "fused")]
        assert sum(w) == pytest.approx(1.0) and all(x >= 0 for x in w)
        assert {"dG.fused", "dO.fused"} <= set(stats.coefficients)
