"""UMT: the stage schedule, a teacher-stage step (each encoder only from its own head; the fusion untouched), the
switch (frozen eval-mode teachers, student encoders put back to their initial weights), a student step's loss
recomputed by hand, the stages end to end (only student epochs selectable), three modalities, the contract."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mmbench.testing import check_balancer, tiny_components, tiny_context, train_tiny
from mmbench_plugins.balancers.umt import STUDENT, TEACHERS, UMT, distillation_loss, teacher_epochs

THREE = {"modalities": [{"name": "a", "dim": 8, "signal": 4.0}, {"name": "b", "dim": 12, "signal": 2.0},
                        {"name": "c", "dim": 6, "signal": 1.0, "code": "sign"}]}


def test_teacher_epochs_default_to_half_and_leave_the_student_one():
    assert teacher_epochs(None, 10) == 5
    assert teacher_epochs(8, 10) == 8
    assert teacher_epochs(12, 10) == 9
    assert teacher_epochs(None, 1) == 0


def test_distillation_is_the_elementwise_mean_squared_difference():
    torch.testing.assert_close(distillation_loss(torch.tensor([[1.0, 2.0]]), torch.tensor([[0.0, 0.0]])),
                               torch.tensor(2.5))


def test_teacher_stage_trains_each_encoder_from_its_own_head_only():
    balancer, ctx, batch = tiny_context(tiny_components(UMT), epochs=4)
    assert balancer.stage(ctx) == TEACHERS
    out = ctx.model(batch.inputs)
    loss = balancer.loss(ctx, batch, out)
    expected = sum(F.cross_entropy(out.unimodal[m], batch.label) for m in ("fast", "slow"))
    torch.testing.assert_close(loss, expected)
    loss.backward()
    assert all(p.grad is None for p in ctx.model.fusion.parameters())
    # the fast encoder's gradient is that of its own head's loss alone
    ctx.model.zero_grad()
    out = ctx.model(batch.inputs)
    F.cross_entropy(out.unimodal["fast"], batch.label).backward()
    alone = [p.grad.clone() for p in ctx.model.encoders["fast"].parameters()]
    ctx.model.zero_grad()
    balancer.loss(ctx, batch, ctx.model(batch.inputs)).backward()
    for a, p in zip(alone, ctx.model.encoders["fast"].parameters(), strict=True):
        torch.testing.assert_close(p.grad, a)


def test_switch_freezes_teachers_and_restarts_the_student_then_distils():
    balancer, ctx, batch = tiny_context(tiny_components(UMT, {"scaling": 3.0}), epochs=4)
    initial = {k: v.clone() for k, v in ctx.model.encoders.state_dict().items()}
    with torch.no_grad():
        for p in ctx.model.encoders.parameters():
            p.add_(0.5)  # what the teacher stage learnt
    trained = {k: v.clone() for k, v in ctx.model.encoders.state_dict().items()}
    ctx.epoch = 2
    assert balancer.stage(ctx) == STUDENT
    balancer.on_epoch_start(ctx)
    for k, v in ctx.model.encoders.state_dict().items():
        torch.testing.assert_close(v, initial[k])
    teachers = balancer.teachers
    assert teachers is not None and not teachers.training
    assert not any(p.requires_grad for p in teachers.parameters())
    for k, v in teachers.state_dict().items():
        torch.testing.assert_close(v, trained[k])
    out = ctx.model(batch.inputs)
    with torch.no_grad():
        targets = {m: teachers[m](batch.inputs[m]) for m in ("fast", "slow")}
    expected = F.cross_entropy(out.logits, batch.label) + 3.0 * sum(
        F.mse_loss(out.features[m], targets[m]) for m in ("fast", "slow"))
    torch.testing.assert_close(balancer.loss(ctx, batch, out), expected)


def test_stages_end_to_end_and_only_student_epochs_are_selected():
    outcome = train_tiny(UMT, epochs=4)
    assert outcome.status == "ok"
    assert [e.stage for e in outcome.history] == ["teachers", "teachers", "student", "student"]
    assert outcome.best_epoch in (2, 3)
    assert set(outcome.history[0].coefficients) == {"teacher_ce.fast", "teacher_ce.slow"}
    assert set(outcome.history[3].coefficients) == {"distill.fast", "distill.slow"}


def test_three_modalities():
    outcome = train_tiny(UMT, epochs=2, task_params=THREE)
    assert outcome.status == "ok"
    assert set(outcome.history[1].coefficients) == {"distill.a", "distill.b", "distill.c"}


def test_contract():
    with pytest.warns(UserWarning, match="one epoch"):
        check_balancer(UMT)
