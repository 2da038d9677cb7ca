"""Diagnosing & Re-learning: the strength and the move on the worked numbers, purity by hand, the torch k-means
against scikit-learn's (the official code's `KMeans(n_clusters=C, random_state=0)`), what a re-initialisation does
to a model, and its schedule in a run."""

from __future__ import annotations

import pytest
import torch
from sklearn.cluster import KMeans

from mmbench.testing import assert_trained, tiny_components, tiny_context, train_tiny
from mmbench_plugins.balancers.relearning import (
    Relearning,
    kmeans,
    minmax_scale,
    purity,
    relearning_strength,
)


def test_strength_and_move_on_the_worked_numbers():
    # P_train = 0.9, P_held = 0.6, λ = 3: α = tanh(0.9) = 0.716298; θ_init = 0, θ = 1 -> 1 − α = 0.283702
    alpha = relearning_strength(torch.tensor(0.9), torch.tensor(0.6), 3.0)
    assert float(alpha) == pytest.approx(0.716298, rel=1e-5)
    assert float(relearning_strength(torch.tensor(0.6), torch.tensor(0.9), 3.0)) == pytest.approx(0.716298, rel=1e-5)
    assert float(torch.tensor(1.0).lerp(torch.tensor(0.0), alpha)) == pytest.approx(0.283702, rel=1e-5)


def test_purity_and_scaling_by_hand():
    # clusters {0: labels 1,1,0 -> majority 1 (2 right)}, {1: labels 2,2 (2 right)}, {3: label 0 (1 right)} -> 5/6
    clusters, labels = torch.tensor([0, 0, 0, 1, 1, 3]), torch.tensor([1, 1, 0, 2, 2, 0])
    assert float(purity(clusters, labels)) == pytest.approx(5 / 6)
    x = torch.tensor([[0.0, 5.0, 2.0], [1.0, 5.0, 4.0], [0.5, 5.0, 0.0]])
    assert minmax_scale(x).tolist() == [[-1.0, -1.0, 0.0], [1.0, -1.0, 1.0], [0.0, -1.0, -1.0]]


@pytest.mark.parametrize(("spread", "tolerance"), [(0.3, 0.0), (3.0, 0.02)], ids=["separated", "overlapping"])
def test_kmeans_purity_matches_scikit_learn(spread, tolerance):
    g = torch.Generator().manual_seed(0)
    classes, per_class, dim = 6, 60, 16
    centres = torch.randn(classes, dim, generator=g) * 2
    labels = torch.arange(classes).repeat_interleave(per_class)
    x = minmax_scale(centres[labels] + spread * torch.randn(len(labels), dim, generator=g))
    ours = float(purity(kmeans(x, classes, torch.Generator().manual_seed(1)), labels))
    reference = KMeans(n_clusters=classes, random_state=0, n_init=10).fit_predict(x.numpy())
    theirs = float(purity(torch.from_numpy(reference).long(), labels))
    assert ours == pytest.approx(theirs, abs=tolerance)
    assert (ours == 1.0) == (spread < 1)  # separated blobs are recovered exactly; overlapping ones are not


def test_a_reinitialisation_moves_each_encoder_by_its_own_strength():
    balancer, ctx, batch = tiny_context(tiny_components("relearning", {"kmeans_restarts": 2}))
    ctx.initial_state = {n: p.detach().clone() for n, p in ctx.model.named_parameters()}
    for _ in range(20):  # move the weights away from their start
        balancer.train_step(ctx, batch)
    train = [batch]
    held = [type(batch)({m: x.flip(0) for m, x in batch.inputs.items()}, batch.label.roll(1))]
    ctx.split_batches = lambda split, indices=None, batch_size=None: train if split == "train" else held
    before = {n: p.detach().clone() for n, p in ctx.model.named_parameters()}
    balancer.relearn(ctx)
    report = balancer.coefficients()
    groups = ctx.model.parameter_groups()
    names = {id(p): n for n, p in ctx.model.named_parameters()}
    for m in ctx.model.modalities:
        alpha = report[f"alpha.{m}"]
        gap = abs(report[f"purity_train.{m}"] - report[f"purity_held.{m}"])
        assert alpha == pytest.approx(float(torch.tanh(torch.tensor(3.0 * gap))), rel=1e-6)
        for p in groups[f"encoder.{m}"]:
            n = names[id(p)]
            torch.testing.assert_close(p.detach(), alpha * ctx.initial_state[n] + (1 - alpha) * before[n])
    assert any(report[f"alpha.{m}"] > 0 for m in ctx.model.modalities)  # the labels were shuffled for held-out
    for name in ("fusion",):
        for p in groups[name]:
            torch.testing.assert_close(p.detach(), before[names[id(p)]])
    assert balancer.done == 1


def test_schedule_and_holdout_in_a_run():
    outcome = train_tiny(Relearning, epochs=5,
                         balancer_params={"reinit_every": 1, "reinit_num": 2, "holdout": "train"})
    assert_trained(outcome, 5)
    reinits = [e.coefficients["reinits"] for e in outcome.history]
    assert reinits == [0, 0, 1, 2, 2]  # after epochs 1 and 2 (epoch 0 never triggers), then the limit
    diagnosed = [e.epoch for e in outcome.history if "purity_train.fast" in e.coefficients]
    assert diagnosed == [2, 3]


def test_the_held_out_part_is_carved_from_the_training_split_and_not_trained_on():
    balancer, ctx, _ = tiny_context(tiny_components("relearning", {"holdout": "train"}))
    ctx.train_size = 256
    balancer.setup(ctx)
    trained = list(balancer.epoch_data(ctx).indices)
    assert len(balancer.held) == round(256 * 744 / 6698) == 28
    assert sorted(trained + balancer.held) == list(range(256))
    balancer.params = balancer.params.model_copy(update={"holdout": "val"})
    balancer.setup(ctx)
    assert balancer.epoch_data(ctx) is None and balancer.held is None
