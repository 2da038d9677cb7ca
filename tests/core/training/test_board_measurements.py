"""What a cell measures for the board's balance and cost columns: every coalition's test scores, by the rule of
the missing-modality evaluation, and the FLOPs of its first training step."""

import torch
from torch.utils.flop_counter import FlopCounterMode

from mmbench.testing import tiny_components, tiny_context, train_tiny
from mmbench.training.evaluation import coalition_scores, evaluate


def test_the_test_split_records_every_coalition_with_the_missing_modality_rule():
    out = train_tiny("joint", epochs=1)
    coalitions = out.test.coalitions
    assert set(coalitions) == {"", "fast", "slow", "fast+slow"}
    assert coalitions["fast+slow"] == out.test.metrics
    assert coalitions["fast"] == out.test.missing_modality["slow"] == out.test.unimodal["fast"]
    assert coalitions["slow"] == out.test.missing_modality["fast"]
    assert out.val.coalitions == {} and all(h.val.coalitions == {} for h in out.history)  # the test split only


def test_with_no_modality_kept_every_sample_gets_the_same_prediction():
    balancer, ctx, batch = tiny_context(tiny_components("joint"))
    scores = coalition_scores(ctx.model, ctx, balancer, [batch])
    counts = torch.bincount(batch.label, minlength=ctx.task.num_classes).float() / len(batch.label)
    assert any(abs(scores[""]["accuracy"] - share) < 1e-6 for share in counts.tolist())
    assert scores["fast+slow"] == evaluate(ctx.model, ctx, balancer, [batch]).metrics


def test_the_first_step_is_counted_at_the_cells_shapes():
    balancer, ctx, batch = tiny_context(tiny_components("joint"))
    with FlopCounterMode(display=False) as counter:
        balancer.train_step(ctx, batch)
    joint = train_tiny("joint", epochs=1).profile["step_flops"]
    assert joint == counter.get_total_flops() > 0  # the engine's batches are 32, as tiny_context's
    # AGM runs the model again for every proper non-empty subset of the modalities: its step costs more
    assert train_tiny("agm", epochs=1).profile["step_flops"] > 1.5 * joint
