"""MLA: worked vectors (the OWM projector, projected gradients and entropy gating of the official `GSPlugin` and
`main.py`, Cecile-hi/Multimodal-Learning-with-Alternating-Unimodal-Adaptation @ ab6c184579f9, computed
independently in numpy), the alternating step, end-to-end."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from mmbench.contract.context import TrainContext
from mmbench.schema.recipe import OptimizerConfig, TrainRecipe
from mmbench.testing import tiny_components, train_tiny
from mmbench.training.engine import build_model, collate, train
from mmbench.training.late_fusion import fuse_logits, gate_weights, mask_weights, presence
from mmbench.training.optim import build_optimizer
from mmbench_plugins.balancers.mla import (
    HEAD,
    MLA,
    owm_alpha,
    owm_update,
    project_gradient,
)

RTOL = 1e-5
ATOL = 1e-6

P1 = torch.tensor([[0.265140, -0.155965, -0.155965, -0.155965],
                   [-0.155965, 0.499087, -0.077982, -0.077982],
                   [-0.155965, -0.077982, 0.499087, -0.077982],
                   [-0.155965, -0.077982, -0.077982, 0.499087]])
P2 = torch.tensor([[0.173351, -0.014508, -0.179717, -0.014508],
                   [-0.014508, 0.397870, -0.104877, -0.300124],
                   [-0.179717, -0.104877, 0.603129, -0.104877],
                   [-0.014508, -0.300124, -0.104877, 0.397870]])


def test_worked_vector_projector_and_projected_gradients():
    assert owm_alpha(0, 4) == pytest.approx(0.1, rel=RTOL)
    assert owm_alpha(1, 4) == pytest.approx(0.0562341, rel=RTOL)
    # step 1 (visual, batch 0): P0 = I
    f_v = torch.tensor([[0.5, 0.5, 0.0, 1.0], [1.5, 0.5, 1.0, 0.0]])
    p1 = owm_update(torch.eye(4), f_v, owm_alpha(0, 4))
    torch.testing.assert_close(p1, P1, rtol=RTOL, atol=ATOL)
    g = torch.tensor([[0.2, -0.1, 0.0, 0.3], [0.0, 0.1, -0.2, 0.1]])
    torch.testing.assert_close(project_gradient(g, p1), torch.tensor(
        [[0.0218351, -0.104496, -0.0467894, 0.126331], [0.0, 0.0577069, -0.115414, 0.0577069]]),
        rtol=RTOL, atol=ATOL)
    torch.testing.assert_close(project_gradient(g, p1, "additive"), torch.tensor(
        [[0.221835, -0.204496, -0.0467894, 0.426331], [0.0, 0.157707, -0.315414, 0.157707]]),
        rtol=RTOL, atol=ATOL)
    # step 2 (audio, batch 1)
    f_a = torch.tensor([[1.0, 1.0, 1.0, 1.0], [0.0, 1.0, 0.0, 1.0]])
    p2 = owm_update(p1, f_a, owm_alpha(1, 4))
    torch.testing.assert_close(p2, P2, rtol=RTOL, atol=ATOL)
    g = torch.tensor([[0.1, 0.1, 0.1, 0.1], [-0.1, 0.0, 0.2, 0.0]])
    torch.testing.assert_close(project_gradient(g, p2), torch.tensor(
        [[-0.003538, -0.002164, 0.021366, -0.002164], [-0.053278, -0.019525, 0.138597, -0.019525]]),
        rtol=RTOL, atol=ATOL)


def test_worked_vector_entropy_gating():
    o_a = torch.tensor([[2.0, 0.0, -1.0], [1.0, 0.5, 0.0]])
    o_v = torch.tensor([[0.2, 0.1, 0.0], [0.0, 0.3, 0.1]])
    w = gate_weights([o_a, o_v], "entropy_batch")
    assert w.shape == (2, 1)
    assert w[:, 0].tolist() == pytest.approx([0.559957, 0.440043], rel=RTOL)
    fused = fuse_logits([o_a, o_v], w)
    torch.testing.assert_close(fused[0], torch.tensor([1.20792, 0.0440043, -0.559957]), rtol=RTOL, atol=ATOL)
    w = gate_weights([o_a, o_v], "entropy")
    assert w.shape == (2, 2)
    assert w[0].tolist() == pytest.approx([0.638999, 0.517604], rel=RTOL)
    torch.testing.assert_close(w.sum(0), torch.ones(2))
    # a dropped (zeroed) modality gets weight 0: the fusion is exactly the remaining modality's logits
    mask = presence(("a", "v"), {"v"}, torch.device("cpu"))
    torch.testing.assert_close(fuse_logits([o_a, o_v], mask_weights(w, mask)), o_a)


# ------------------------------------------------------------------------------------------ mechanism


def _context(params: dict, fusion: str = "concat", batch_size: int = 32):
    components = tiny_components(MLA, balancer_params=params, fusion=fusion)
    torch.manual_seed(0)
    balancer = MLA(MLA.Params(**params))
    model = build_model(components, balancer)
    optimizer = build_optimizer(OptimizerConfig(name="sgd", lr=0.1, momentum=0.0), model.parameter_groups())
    train = components.task.splits()["train"]
    loader = DataLoader(train, batch_size=batch_size, collate_fn=collate)
    ctx = TrainContext(model=model, optimizer=optimizer, task=components.task, device=torch.device("cpu"),
                       epochs=1, train_loader=loader, val_loader=loader, task_loss=F.cross_entropy,
                       evaluate=None, generator=torch.Generator().manual_seed(0))
    balancer.setup(ctx)
    return balancer, ctx, next(iter(loader))


def _record_steps(ctx):
    """Wrap optimizer.step to record, at every call, which parameters carry a gradient, the shared head's
    weight gradient and its weight and bias (the values the step's forward used)."""
    records, step = [], ctx.optimizer.step
    head = ctx.model.extras[HEAD]

    def recording_step(*args, **kwargs):
        with_grad = {id(p) for p in ctx.model.parameters() if p.grad is not None}
        records.append((with_grad, head.weight.grad.clone(), head.weight.detach().clone(),
                        head.bias.detach().clone()))
        return step(*args, **kwargs)

    ctx.optimizer.step = recording_step
    return records


def _raw_weight_grad(features, labels, weight, bias):
    weight = weight.clone().requires_grad_()
    return torch.autograd.grad(F.cross_entropy(F.linear(features, weight, bias), labels), [weight])[0]


def test_alternating_steps_touch_one_encoder_and_the_shared_head():
    balancer, ctx, batch = _context({})
    records = _record_steps(ctx)
    model, head = ctx.model, ctx.model.extras[HEAD]
    balancer.train_step(ctx, batch)
    assert len(records) == 2  # one optimizer step per modality
    head_ids = {id(p) for p in head.parameters()}
    for record, m in zip(records, model.modalities):
        own = {id(p) for p in model.encoders[m].parameters()}
        assert record[0] == own | head_ids  # the other encoder and the cell's fusion get nothing


def test_projection_uses_the_current_batch_and_one_shared_projector():
    balancer, ctx, batch = _context({})
    records = _record_steps(ctx)
    model, y = ctx.model, batch["label"]
    fast, slow = model.modalities
    with torch.no_grad():
        features = model.encode(batch)
    ctx.step_in_epoch = 0
    balancer.train_step(ctx, batch)
    # step 0, the very first of training: gradient not projected
    _, g0, w0, b0 = records[0]
    torch.testing.assert_close(g0, _raw_weight_grad(features[fast], y, w0, b0), rtol=1e-5, atol=1e-7)
    # step 1: P1 = update(I, mean slow feature, α(0)); grad = raw · P1ᵀ
    _, g1, w1, b1 = records[1]
    p1 = owm_update(torch.eye(w1.shape[1]), features[slow], owm_alpha(0, ctx.steps_per_epoch))
    torch.testing.assert_close(g1, _raw_weight_grad(features[slow], y, w1, b1) @ p1.T, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(balancer.P, p1)
    coeffs = balancer.coefficients()
    assert coeffs["kept.fast"] == pytest.approx(1.0) and coeffs["kept.slow"] < 1.0
    # next batch (index 1): the same P keeps accumulating, now with the fast features, and α(1)
    with torch.no_grad():
        features = model.encode(batch)
    ctx.step_in_epoch = 1
    balancer.train_step(ctx, batch)
    _, g2, w2, b2 = records[2]
    p2 = owm_update(p1, features[fast], owm_alpha(1, ctx.steps_per_epoch))
    torch.testing.assert_close(g2, _raw_weight_grad(features[fast], y, w2, b2) @ p2.T, rtol=1e-5, atol=1e-7)


def test_without_projection_the_gradient_is_untouched():
    balancer, ctx, batch = _context({"project_gradients": False})
    records = _record_steps(ctx)
    for _ in range(2):
        balancer.train_step(ctx, batch)
    torch.testing.assert_close(balancer.P, torch.eye(balancer.P.shape[0]))
    assert balancer.coefficients()["p_eff_rank"] == pytest.approx(balancer.P.shape[0])
    assert len(records) == 4


def test_unequal_feature_dims_are_refused():
    with pytest.raises(ValueError, match="feature sizes must be equal"):
        MLA(MLA.Params()).extra_modules({"a": 8, "v": 16}, 3)


def test_fixed_weights_length_checked():
    task = tiny_components(MLA).task
    assert MLA.check(MLA.Params(fusion="fixed", fixed_weights=(0.2, 0.3, 0.5)), task) == [
        "fixed_weights has 3 entries for the task's 2 modalities (fast, slow)"]
    with pytest.raises(ValueError, match="fixed_weights"):
        train_tiny(MLA, balancer_params={"fusion": "fixed", "fixed_weights": (0.2, 0.3, 0.5)})


# ------------------------------------------------------------------------------------------ end to end


@pytest.mark.parametrize("fusion", ["concat", "sum"])
def test_train_tiny(fusion):
    outcome = train_tiny(MLA, epochs=2, fusion=fusion)
    assert outcome.status == "ok"
    assert all(math.isfinite(h.train_loss) for h in outcome.history)
    for h in outcome.history:
        assert {"loss.fast", "loss.slow", "kept.fast", "gate.slow", "p_eff_rank"} <= set(h.coefficients)
        assert h.coefficients["gate.fast"] + h.coefficients["gate.slow"] == pytest.approx(1.0)
    assert outcome.history[-1].coefficients["p_eff_rank"] < 8  # P has projected directions out


class KeepsContext(MLA):
    last = None

    def setup(self, ctx):
        super().setup(ctx)
        type(self).last = ctx


def test_a_dropped_modality_gets_no_weight_at_evaluation():
    """'m alone' is exactly the shared head on m's features; the dropped modality adds nothing."""
    components = tiny_components(KeepsContext)
    outcome = train(components, TrainRecipe(epochs=2, batch_size=32, device="cpu"), seed=0)
    model = KeepsContext.last.model.eval()
    test = components.task.splits()["test"]
    for m in ("fast", "slow"):
        with torch.no_grad():
            pred = model.extras[HEAD](model.encoders[m](test.tensors[m])).argmax(-1)
        expected = (pred == test.labels).float().mean().item()
        assert outcome.test.unimodal[m]["accuracy"] == pytest.approx(expected)
    assert outcome.test.unimodal["fast"]["accuracy"] != outcome.test.unimodal["slow"]["accuracy"]


@pytest.mark.parametrize("params", [{"fusion": "entropy_batch"}, {"fusion": "fixed"},
                                    {"project_gradients": False, "projection": "additive"}])
def test_train_tiny_variants(params):
    outcome = train_tiny(MLA, epochs=1, balancer_params=params)
    assert outcome.status == "ok" and math.isfinite(outcome.history[0].train_loss)


def test_three_modalities():
    task = {"modalities": [{"name": "a", "dim": 8, "signal": 4.0}, {"name": "b", "dim": 12, "signal": 2.0},
                           {"name": "c", "dim": 6, "signal": 1.0, "code": "sign"}]}
    outcome = train_tiny(MLA, epochs=1, task_params=task, balancer_params={"fusion": "fixed"})
    assert outcome.status == "ok"
    assert {"loss.a", "loss.b", "loss.c"} <= set(outcome.history[0].coefficients)
    assert outcome.history[0].coefficients["gate.c"] == pytest.approx(0.40)  # official a/v/t = .35/.25/.40
