"""SMV: the Shapley contributions and copy rules (worked vectors computed by hand), the valuation and the grown epoch,
the masked step, end-to-end at sample and modality level, with two and three modalities."""

from __future__ import annotations

from collections import Counter

import pytest
import torch
import torch.nn.functional as F

from mmbench.api import Batch
from mmbench.testing import assert_trained, tiny_components, tiny_context, train_tiny
from mmbench_plugins.balancers.kept import ALL
from mmbench_plugins.balancers.smv import SMV, modality_copies, sample_copies, shapley_values, subsets

THREE = {"modalities": [{"name": "fast", "dim": 16, "signal": 5.0, "coverage": 0.8, "code": "linear"},
                        {"name": "slow", "dim": 64, "signal": 2.5, "coverage": 1.0, "code": "sign"},
                        {"name": "mid", "dim": 32, "signal": 1.5, "coverage": 1.0, "code": "linear"}]}


def _correct(pattern: dict[frozenset[int], list[int]]) -> dict[frozenset[int], torch.Tensor]:
    return {s: torch.tensor(v) for s, v in pattern.items()}


def test_worked_vector_two_modalities():
    a, v, av = frozenset({0}), frozenset({1}), frozenset({0, 1})
    # sample 0: full correct, audio alone correct, video alone wrong: φ_a = (1 + 2 − 0)/2 = 1.5, φ_v = (0 + 2 − 1)/2
    # sample 1: only the full set correct: φ = (0 + 2 − 0)/2 = 1 each; sample 2: all wrong except video alone:
    # φ_a = (0 + 0 − 1)/2 = −0.5, φ_v = (1 + 0 − 0)/2 = 0.5
    phi = shapley_values(_correct({a: [1, 0, 0], v: [0, 0, 1], av: [1, 1, 0]}), 2)
    assert phi.tolist() == [[1.5, 1.0, -0.5], [0.5, 1.0, 0.5]]
    # copies: 0.4 < φ < 1 -> 1, −0.1 < φ < 0.4 -> 2, φ < −0.1 -> 3, φ ≥ 1 -> 0
    assert sample_copies(phi).tolist() == [[0, 0, 3], [1, 0, 1]]
    assert sample_copies(torch.tensor([0.0, 0.39, 0.41, 0.99, -0.11, 1.0])).tolist() == [2, 2, 1, 1, 3, 0]


def test_worked_vector_three_modalities():
    # only {0} and the full set correct: φ_0 = (1/3)·1 + (1/6)·(0 + 0) + (1/3)·3 = 4/3,
    # φ_1 = φ_2 = (1/3)·0 + (1/6)·(−1 + 0) + (1/3)·(3 − 0) = 5/6; the values sum to v(full) = 3
    correct = {s: torch.tensor([float(s in (frozenset({0}), frozenset({0, 1, 2})))]) for s in subsets(3)}
    phi = shapley_values(correct, 3)
    torch.testing.assert_close(phi.squeeze(1), torch.tensor([4 / 3, 5 / 6, 5 / 6]))


def test_worked_vector_modality_level():
    # mean φ_a = 0.4, φ_v = 1.0: gaps 0.6 / 0 -> 0.6/3·2·1·1000 = 399.99… -> 399 audio-only copies (α = 1; the
    # official order of operations rounds down to 399, not 400)
    assert modality_copies(torch.tensor([0.4, 1.0], dtype=torch.float64), 1.0, 1000) == (399, 0)
    # gaps −0.5 / 0.5: 1.0/3·2·0.5·300 = 100 copies keeping the video, the weaker
    assert modality_copies(torch.tensor([1.5, 0.5]), 0.5, 300) == (100, 1)


def test_the_sample_level_epoch_holds_every_sample_once_and_the_copies_its_contributions_ask_for():
    balancer, ctx, batch = tiny_context(tiny_components(SMV, {"warmup_epochs": 0}))
    n = batch.label.shape[0]
    ctx.train_size = n
    meta = {"index": torch.arange(n)}
    ctx.split_batches = lambda split, indices=None, batch_size=None: [Batch(batch.inputs, batch.label, meta=meta)]
    balancer.on_epoch_start(ctx)
    plan = balancer.epoch_data(ctx)
    with torch.no_grad():
        f = ctx.model.encode(batch.inputs)
        zero = {m: torch.zeros_like(x) for m, x in f.items()}
        right = {s: ctx.model.fusion({m: f[m] if i in s else zero[m] for i, m in enumerate(("fast", "slow"))})
                 .logits.argmax(-1).eq(batch.label) for s in subsets(2)}
    copies = sample_copies(shapley_values(right, 2))
    assert plan is not None and list(plan.indices[:n]) == list(range(n)) and list(plan.tags[:n]) == [ALL] * n
    got = Counter(zip(plan.indices[n:], plan.tags[n:], strict=True))
    assert got == Counter({(j, i): int(copies[i, j]) for i in range(2) for j in range(n) if copies[i, j]})


def test_a_copy_trains_the_fused_head_on_its_modality_alone():
    balancer, ctx, batch = tiny_context(tiny_components(SMV))
    n = batch.label.shape[0]
    tags = torch.tensor([ALL, 0, 1, 1] * (n // 4))
    with torch.no_grad():
        f = ctx.model.encode(batch.inputs)
        keep_fast = ((tags == ALL) | (tags == 0)).float().unsqueeze(1)
        keep_slow = ((tags == ALL) | (tags == 1)).float().unsqueeze(1)
        expected = F.cross_entropy(ctx.model.fusion({"fast": f["fast"] * keep_fast, "slow": f["slow"] * keep_slow})
                                   .logits, batch.label)
    loss, out = balancer.train_step(ctx, Batch(batch.inputs, batch.label, meta={"tag": tags}))
    torch.testing.assert_close(loss, expected)
    assert torch.equal(out.features["slow"][1], torch.zeros_like(out.features["slow"][1]))
    assert not torch.equal(out.features["slow"][0], torch.zeros_like(out.features["slow"][0]))


@pytest.mark.parametrize("method", ["sample", "modality"])
@pytest.mark.parametrize("task_params", [None, THREE])
def test_end_to_end(method, task_params):
    outcome = train_tiny(SMV, epochs=3, balancer_params={"warmup_epochs": 1, "method": method},
                         task_params=task_params)
    assert_trained(outcome, 3)
    first, last = outcome.history[0].coefficients, outcome.history[-1].coefficients
    assert all(v == 0.0 for k, v in first.items() if k.startswith("copies."))
    modalities = ("fast", "slow", "mid") if task_params else ("fast", "slow")
    assert sum(last[f"phi.{m}"] for m in modalities) <= len(modalities)  # Σφ = v(full) ≤ M per sample
