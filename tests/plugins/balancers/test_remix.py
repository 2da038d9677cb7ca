"""Data Remixing: the KL-to-uniform confidence and the assignment (worked vector computed by hand), the remixed
step (only the assigned modality learns), the epoch composition, end-to-end with two and three modalities."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mmbench.api import Batch
from mmbench.testing import assert_trained, tiny_components, tiny_context, train_tiny
from mmbench_plugins.balancers.remix import Remix, assign, kl_to_uniform_bits

THREE = {"modalities": [{"name": "fast", "dim": 16, "signal": 5.0, "coverage": 0.8, "code": "linear"},
                        {"name": "slow", "dim": 64, "signal": 2.5, "coverage": 1.0, "code": "sign"},
                        {"name": "mid", "dim": 32, "signal": 1.5, "coverage": 1.0, "code": "linear"}]}


def test_worked_vector_kl_to_uniform_and_assignment():
    # p_a = [0.5, 0.1 x5]: 0.5·log2(3) + 5·0.1·log2(0.6) = 0.423998 bits
    # p_v = [0.9, 0.02 x5]: 0.9·log2(5.4) + 5·0.02·log2(0.12) = 1.883774 bits
    p = torch.tensor([[0.5] + [0.1] * 5, [0.9] + [0.02] * 5])
    kl = kl_to_uniform_bits(p)
    assert kl.tolist() == pytest.approx([0.423998, 1.883774], abs=1e-6)
    assert kl_to_uniform_bits(torch.full((6,), 1 / 6)).item() == pytest.approx(0.0, abs=1e-7)
    # the sample goes to the less confident modality (audio); ties go to the later modality (official `<`)
    assert assign(kl.view(2, 1)).tolist() == [0]
    assert assign(torch.tensor([[1.0, 2.0, 0.5], [1.0, 1.0, 3.0], [0.2, 3.0, 3.0]])).tolist() == [2, 1, 0]
    assert assign(torch.tensor([[1.0], [1.0]])).tolist() == [1]


def _tagged(batch: Batch, tag: int) -> Batch:
    n = batch.label.shape[0]
    return Batch(batch.inputs, batch.label, meta={"index": torch.arange(n), "tag": torch.full((n,), tag)})


def test_a_remixed_batch_trains_only_its_modality_with_the_fused_and_its_head_loss():
    balancer, ctx, batch = tiny_context(tiny_components(Remix, {"remix_weight": 2.0}))
    model = ctx.model
    with torch.no_grad():
        features = model.encode(batch.inputs)
        zeroed = {"fast": features["fast"], "slow": torch.zeros_like(features["slow"])}
        expected = (F.cross_entropy(model.fusion(zeroed).logits, batch.label)
                    + 2.0 * F.cross_entropy(model.heads["fast"](features["fast"]), batch.label))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    loss, out = balancer.train_step(ctx, _tagged(batch, 0))  # every sample assigned to `fast`
    torch.testing.assert_close(loss, expected)
    assert torch.equal(out.features["slow"], torch.zeros_like(out.features["slow"]))
    moved = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert any(n.startswith("encoders.fast") for n in moved) and "heads.fast.weight" in moved
    assert not any(n.startswith(("encoders.slow", "heads.slow")) for n in moved)


def test_warm_up_adds_each_unimodal_ce_to_the_fused_ce():
    balancer, ctx, batch = tiny_context(tiny_components(Remix, {"warmup_weight": 0.5}))
    out = ctx.model(batch.inputs)
    y = batch.label
    expected = F.cross_entropy(out.logits, y) + 0.5 * sum(F.cross_entropy(out.unimodal[m], y) for m in out.unimodal)
    torch.testing.assert_close(balancer.loss(ctx, batch, out), expected)


def test_each_sample_is_assigned_once_to_its_least_confident_modality():
    balancer, ctx, batch = tiny_context(tiny_components(Remix, {"warmup_epochs": 0}), batch_size=32)
    n = batch.label.shape[0]
    ctx.train_size = n
    ctx.split_batches = lambda split, indices=None, batch_size=None: [_tagged(batch, 0)]
    balancer.on_epoch_start(ctx)
    plan = balancer.epoch_data(ctx)
    assert plan is not None and list(plan.indices) == list(range(n)) and plan.group_by_tag
    with torch.no_grad():
        out = ctx.model.eval()(batch.inputs)
        kl = torch.stack([kl_to_uniform_bits(out.unimodal[m].softmax(-1)) for m in ("fast", "slow")])
    assert list(plan.tags) == assign(kl).tolist()
    coeffs = balancer.coefficients()
    assert coeffs["share.fast"] + coeffs["share.slow"] == pytest.approx(1.0)


@pytest.mark.parametrize("task_params", [None, THREE])
def test_end_to_end_warm_up_then_remixed_epochs(task_params):
    outcome = train_tiny(Remix, epochs=3, balancer_params={"warmup_epochs": 1}, task_params=task_params)
    assert_trained(outcome, 3)
    modalities = ("fast", "slow", "mid") if task_params else ("fast", "slow")
    first, last = outcome.history[0].coefficients, outcome.history[-1].coefficients
    assert first[f"share.{modalities[0]}"] == pytest.approx(1 / len(modalities))
    assert sum(last[f"share.{m}"] for m in modalities) == pytest.approx(1.0)
    assert all(last[f"kl.{m}"] > 0 for m in modalities)
