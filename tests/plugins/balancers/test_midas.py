"""MIDAS: the soft weights, hard-sample weight and α rule on worked numbers, the misaligned loss against a
line-by-line transcription of the official arithmetic (Seong-HyeonHwang/MIDAS_NeurIPS2025 @ d25b225222f5,
`models/model_midas_cremad.py` L104–171), and what a real step trains (warm-up, then the full loss)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mmbench.running.cells import incompatibility
from mmbench.testing import assert_trained, tiny_components, tiny_context, train_tiny
from mmbench_plugins.balancers.midas import MIDAS, WARMUP, alpha_step, confidence, hard_weight, misaligned_loss


def test_confidence_and_hard_weight():
    # the confidence of logits log(p) at the label is p
    labels = torch.tensor([0])
    assert float(confidence(torch.tensor([[0.9, 0.1]]).log(), labels)) == pytest.approx(0.9)
    # cos = 0.2 -> 1 + (0.2 + 1)/2 = 1.6
    original, swapped = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.2, 0.9797959]])
    assert float(hard_weight(original, swapped)) == pytest.approx(1.6, rel=1e-6)


@pytest.mark.parametrize(("uni", "mm", "before", "after"), [
    (2.0, 3.0, 1.0, 1.05),   # audio strong, misaligned lean further to audio: α up
    (2.0, 1.5, 1.0, 1.0),    # audio strong, less lean: α down, floored at 1
    (2.0, 1.5, 1.2, 1.15),
    (0.5, 0.4, 1.0, 1.05),   # video strong, misaligned lean further to video (smaller ratio): α up
    (0.5, 0.6, 1.3, 1.25),
    (1.0, 0.9, 1.0, 1.05),   # uni_ratio = 1 counts as "video strong" (the code's else branch)
])
def test_alpha_rule(uni, mm, before, after):
    alpha = alpha_step(torch.tensor(before), torch.tensor(uni), torch.tensor(mm), 0.05)
    assert float(alpha) == pytest.approx(after)


def test_soft_weights_on_the_papers_example():
    # c_a(i) = 0.9, c_v(π(i)) = 0.3 -> w_a = 0.75, w_v = 0.25 (the paper's worked example). A fusion that ignores
    # its input (logits 0: CE = ln 2 for either label) and orthogonal swapped features (hard weight 1.5) make
    # pair 1 = 1.5·(0.75 + 0.25)·ln 2; with α = 2 on the weak (video) term: 1.5·(0.75 + 2·0.25)·ln 2
    fuse = lambda f: torch.zeros(2, 2)  # noqa: E731
    features = {"a": torch.eye(2), "v": torch.eye(2)}
    conf = {"a": torch.tensor([0.9, 0.9]), "v": torch.tensor([0.3, 0.3])}
    labels, perm = torch.tensor([0, 1]), torch.tensor([1, 0])
    ln2 = torch.log(torch.tensor(2.0))
    # pair 2 mirrors it: w_a = c_a(π(i))/(c_a(π(i)) + c_v(i)) = 0.75 again, the video term again × α
    for alpha, expected in ((1.0, 1.5 * 1.0 * ln2), (2.0, 1.5 * 1.25 * ln2)):
        loss, uni_ratio, _ = misaligned_loss(fuse, features, labels, conf, perm, torch.tensor(alpha))
        assert float(uni_ratio) == pytest.approx(3.0)
        assert float(loss) == pytest.approx(float(expected) * 2 / 2, rel=1e-6)  # (pair 1 + pair 2)/2 per sample


def _official(fuse, f_a, f_v, label, audio_conf, video_conf, idx, alpha):
    """The official code's two pairs, transcribed as written (audio/video, pair 1 then pair 2)."""
    ce = torch.nn.CrossEntropyLoss(reduction="none")
    uni_ratio = audio_conf.mean() / video_conf.mean()
    mixed_logits = fuse({"a": f_a, "v": f_v[idx]})
    audio_weight = audio_conf / (audio_conf + video_conf[idx])
    video_weight = 1 - audio_weight
    p = F.softmax(mixed_logits, dim=1)
    mm_ratio_1 = p.gather(1, label.unsqueeze(1)).mean() / p.gather(1, label[idx].unsqueeze(1)).mean()
    if uni_ratio > 1:
        loss = audio_weight * ce(mixed_logits, label) + alpha * video_weight * ce(mixed_logits, label[idx])
    else:
        loss = alpha * audio_weight * ce(mixed_logits, label) + video_weight * ce(mixed_logits, label[idx])
    mixed = (1 + (F.cosine_similarity(f_v, f_v[idx], dim=1) + 1) / 2) * loss
    mixed_logits = fuse({"a": f_a[idx], "v": f_v})
    audio_weight = audio_conf[idx] / (audio_conf[idx] + video_conf)
    video_weight = 1 - audio_weight
    p = F.softmax(mixed_logits, dim=1)
    mm_ratio_2 = p.gather(1, label[idx].unsqueeze(1)).mean() / p.gather(1, label.unsqueeze(1)).mean()
    if uni_ratio > 1:
        loss = audio_weight * ce(mixed_logits, label[idx]) + alpha * video_weight * ce(mixed_logits, label)
    else:
        loss = alpha * audio_weight * ce(mixed_logits, label[idx]) + video_weight * ce(mixed_logits, label)
    mixed = mixed + (1 + (F.cosine_similarity(f_a, f_a[idx], dim=1) + 1) / 2) * loss
    return mixed.mean() / 2, uni_ratio, (mm_ratio_1 + mm_ratio_2) / 2


@pytest.mark.parametrize("audio_strong", [True, False])
def test_misaligned_loss_matches_the_official_arithmetic(audio_strong):
    torch.manual_seed(1)
    head = torch.nn.Linear(6, 4)
    fuse = lambda f: head(torch.cat([f["a"], f["v"]], dim=1))  # noqa: E731  (the code's concat + linear)
    f_a, f_v, label = torch.randn(8, 3), torch.randn(8, 3), torch.randint(0, 4, (8,))
    conf_a, conf_v = torch.rand(8) * 0.5 + 0.5, torch.rand(8) * 0.5
    if not audio_strong:
        conf_a, conf_v = conf_v, conf_a
    perm, alpha = torch.randperm(8), torch.tensor(1.3)
    ours = misaligned_loss(fuse, {"a": f_a, "v": f_v}, label, {"a": conf_a, "v": conf_v}, perm, alpha)
    official = _official(fuse, f_a, f_v, label, conf_a, conf_v, perm, alpha)
    for got, want in zip(ours, official, strict=True):
        torch.testing.assert_close(got, want)
    assert (float(ours[1]) > 1) == audio_strong
    # α changes the loss (the weak modality's term is weighted)
    unweighted = misaligned_loss(fuse, {"a": f_a, "v": f_v}, label, {"a": conf_a, "v": conf_v}, perm, torch.tensor(1.0))
    assert float(unweighted[0].detach()) < float(ours[0].detach())


def _step_grads(balancer, ctx, batch):
    seen = {}
    ctx.optimizer.step = lambda *a, **k: seen.update(
        {p: None if p.grad is None else p.grad.clone() for p in ctx.model.parameters()})
    loss, _ = balancer.train_step(ctx, batch)
    return loss, seen


def test_warm_up_trains_the_heads_alone_then_the_full_loss():
    balancer, ctx, batch = tiny_context(tiny_components("midas", {"warmup_epochs": 1}), epochs=3)
    groups = ctx.model.parameter_groups()
    assert balancer.stage(ctx) == WARMUP and not WARMUP.selectable
    loss, grads = _step_grads(balancer, ctx, batch)
    assert all(grads[p] is None for p in groups["fusion"])
    assert all(grads[p] is not None for m in ctx.model.modalities for p in groups[f"head.{m}"])
    assert float(balancer.alpha) == 1.0
    ctx.epoch = 1
    assert balancer.stage(ctx).name == "train"
    out = ctx.model(batch.inputs)
    generator_state = balancer.generator.get_state()
    loss, grads = _step_grads(balancer, ctx, batch)
    assert all(grads[p] is not None and grads[p].abs().sum() > 0 for p in groups["fusion"])
    # the step's loss: CE(z) + L_mis + mean unimodal CE, L_mis with the balancer's own permutation
    perm = torch.randperm(batch.label.shape[0], generator=torch.Generator().set_state(generator_state))
    y = batch.label
    conf = {m: confidence(out.unimodal[m], y) for m in ctx.model.modalities}
    mis, _, _ = misaligned_loss(lambda f: ctx.model.fusion(f).logits, out.features, y, conf, perm, torch.tensor(1.0))
    unimodal = sum(F.cross_entropy(out.unimodal[m], y) for m in ctx.model.modalities) / 2
    torch.testing.assert_close(loss, (F.cross_entropy(out.logits, y) + mis + unimodal).detach())
    assert float(balancer.alpha) in (pytest.approx(1.0), pytest.approx(1.05))


def test_two_modalities_and_a_late_fusion_are_required():
    three = {"modalities": [{"name": n, "dim": 8, "signal": 2.0, "coverage": 1.0, "code": "linear"}
                            for n in ("a", "b", "c")]}
    task = tiny_components("joint", task_params=three).task
    mlp = {m: tiny_components("joint").encoders["fast"][0] for m in task.modalities}
    concat = tiny_components("joint").fusion[0]
    assert incompatibility(MIDAS, task, mlp, concat) == "midas handles 2..2 modalities; 'synthetic' has 3"


def test_trains_end_to_end_with_the_warm_up_unselected():
    outcome = train_tiny(MIDAS, epochs=3, balancer_params={"warmup_epochs": 1})
    assert_trained(outcome, 3)
    assert [e.stage for e in outcome.history] == ["warmup", None, None]
    assert outcome.best_epoch in (1, 2)
    assert {"alpha", "uni_ratio", "mm_ratio", "mis_loss"} <= set(outcome.history[-1].coefficients)
    assert set(outcome.history[0].coefficients) == {"alpha"}
