import math

import pytest
import torch

from mmbench.training import metrics


def test_single_label_metrics_on_a_hand_computed_case():
    # predictions: 0, 1, 1, 2 ; targets: 0, 1, 2, 2
    logits = torch.tensor([[3.0, 0, 0], [0, 3.0, 0], [0, 3.0, 0], [0, 0, 3.0]])
    target = torch.tensor([0, 1, 2, 2])
    out = metrics.compute(["accuracy", "macro_f1", "micro_f1"], logits, target, 3, multilabel=False)
    assert out["accuracy"] == pytest.approx(0.75)
    # per-class F1: class0 1.0, class1 P=0.5 R=1 -> 2/3, class2 P=1 R=0.5 -> 2/3
    assert out["macro_f1"] == pytest.approx((1 + 2 / 3 + 2 / 3) / 3)
    assert out["micro_f1"] == pytest.approx(0.75)


def test_micro_average_precision_of_a_perfect_ranking_is_one():
    logits = torch.tensor([[5.0, 0.0], [0.0, 5.0], [4.0, 1.0]])
    target = torch.tensor([0, 1, 0])
    out = metrics.compute(["map_micro", "map_macro"], logits, target, 2, multilabel=False)
    assert out == {"map_micro": pytest.approx(1.0), "map_macro": pytest.approx(1.0)}


def test_samples_f1_averages_per_sample_f1():
    # sample 0: pred {0,1}, true {0} -> F1 = 2/3 ; sample 1: pred {2}, true {2} -> 1 ; sample 2: pred {}, true {1} -> 0
    logits = torch.tensor([[5.0, 5.0, -5.0], [-5.0, -5.0, 5.0], [-5.0, -5.0, -5.0]])
    target = torch.tensor([[1, 0, 0], [0, 0, 1], [0, 1, 0]])
    out = metrics.compute(["f1_samples", "f1_micro"], logits, target, 3, multilabel=True)
    assert out["f1_samples"] == pytest.approx((2 / 3 + 1 + 0) / 3)
    # micro: TP=2, FP=1, FN=1 -> 2*2/(2*2+1+1)
    assert out["f1_micro"] == pytest.approx(4 / 6)
    for row, expected in ((0, 2 / 3), (1, 1.0), (2, 0.0)):  # a split of one sample scores that sample
        alone = metrics.compute(["f1_samples"], logits[row:row + 1], target[row:row + 1], 3, multilabel=True)
        assert alone["f1_samples"] == pytest.approx(expected)


def test_ece_is_lower_is_better_and_zero_for_confident_correct_predictions():
    logits = torch.tensor([[50.0, 0.0], [0.0, 50.0]])
    out = metrics.compute(["ece"], logits, torch.tensor([0, 1]), 2, multilabel=False)
    assert out["ece"] == pytest.approx(0.0, abs=1e-6)
    assert metrics.better("ece", 0.1, 0.2) and not metrics.better("accuracy", 0.1, 0.2)
    # a tie is not better, so the earliest of equally good epochs stays selected
    assert not metrics.better("ece", 0.1, 0.1) and not metrics.better("accuracy", 0.1, 0.1)


# ---------------------------------------------------------------- against scikit-learn on the same arrays


def _multilabel_case(n=300, c=6, seed=0):
    gen = torch.Generator().manual_seed(seed)
    target = (torch.rand(n, c, generator=gen) < torch.linspace(0.1, 0.6, c)).long()
    logits = 2.0 * (target.float() - 0.5) + 1.5 * torch.randn(n, c, generator=gen)  # informative, imperfect
    return logits, target


def test_multilabel_metrics_agree_with_scikit_learn():
    from sklearn.metrics import average_precision_score, f1_score

    logits, target = _multilabel_case()
    pred = (logits.sigmoid() > 0.5).long().numpy()
    y = target.numpy()
    out = metrics.compute(list(metrics.MULTI_LABEL), logits, target, target.shape[1], multilabel=True)
    expected = {f"f1_{avg}": f1_score(y, pred, average=avg, zero_division=0)
                for avg in ("micro", "macro", "weighted", "samples")}
    expected |= {f"map_{avg}": average_precision_score(y, logits.sigmoid().numpy(), average=avg)
                 for avg in ("micro", "macro")}
    assert out == pytest.approx(expected, rel=1e-5)
    assert out["f1_macro"] != pytest.approx(out["f1_micro"], rel=1e-3)  # the case tells the averages apart


def test_single_label_metrics_agree_with_scikit_learn():
    from sklearn.metrics import accuracy_score, average_precision_score, f1_score

    gen = torch.Generator().manual_seed(1)
    target = torch.randint(0, 5, (400,), generator=gen)
    logits = 1.5 * torch.nn.functional.one_hot(target, 5).float() + torch.randn(400, 5, generator=gen)
    out = metrics.compute(["accuracy", "macro_f1", "micro_f1", "map_macro", "map_micro"], logits, target, 5,
                          multilabel=False)
    pred, y = logits.argmax(-1).numpy(), target.numpy()
    probs = logits.softmax(-1).numpy()
    one_hot = torch.nn.functional.one_hot(target, 5).numpy()
    assert out == pytest.approx({
        "accuracy": accuracy_score(y, pred), "macro_f1": f1_score(y, pred, average="macro"),
        "micro_f1": f1_score(y, pred, average="micro"),
        "map_macro": average_precision_score(one_hot, probs, average="macro"),
        "map_micro": average_precision_score(one_hot, probs, average="micro"),
    }, rel=1e-5)


def _ece(probs, target, bins):
    """Expected calibration error, written out: |accuracy - confidence| per equal-width bin, sample-weighted."""
    confidence, pred = probs.max(-1)
    correct = (pred == target).float()
    total = 0.0
    edges = torch.linspace(0, 1, bins + 1)
    for lo, hi in zip(edges[:-1], edges[1:]):
        inside = (confidence > lo) & (confidence <= hi)
        if inside.any():
            total += inside.float().mean() * (correct[inside].mean() - confidence[inside].mean()).abs()
    return float(total)


def test_ece_uses_fifteen_equal_width_bins():
    gen = torch.Generator().manual_seed(2)
    target = torch.randint(0, 3, (500,), generator=gen)
    logits = 2.0 * torch.randn(500, 3, generator=gen) + torch.nn.functional.one_hot(target, 3)
    out = metrics.compute(["ece"], logits, target, 3, multilabel=False)["ece"]
    probs = logits.softmax(-1)
    assert out == pytest.approx(_ece(probs, target, 15), rel=1e-4)
    assert abs(_ece(probs, target, 10) - _ece(probs, target, 15)) > 1e-3  # the case tells 10 from 15 bins


def test_ece_keeps_the_lowest_and_the_highest_bins_apart():
    """By hand: confidences 0.06 and 0.10 (bins 1 and 2 of 15), 0.90 and 0.95 (bins 14 and 15), of twenty
    classes, with gaps +0.94, -0.10, -0.90, +0.05, so merging either pair of bins changes the mean."""
    confidences, correct = [0.06, 0.10, 0.90, 0.95], [True, False, False, True]
    logits = torch.zeros(4, 20)
    logits[:, 0] = torch.tensor([math.log(p * 19 / (1 - p)) for p in confidences])  # softmax max = p, class 0
    target = torch.tensor([0 if c else 1 for c in correct])
    out = metrics.compute(["ece"], logits, target, 20, multilabel=False)["ece"]
    assert out == pytest.approx((0.94 + 0.10 + 0.90 + 0.05) / 4, abs=1e-6)


def test_ties_absent_classes_and_label_free_columns_score_as_scikit_learn_does():
    from sklearn.metrics import average_precision_score, f1_score

    # scores rounded to one decimal: many ties, which form one threshold each
    gen = torch.Generator().manual_seed(3)
    target = (torch.rand(60, 4, generator=gen) < 0.4).long()
    target[:, 3] = 0  # a label no sample has: its AP and F1 are 0 and still count in the macro averages
    logits = torch.logit((torch.rand(60, 4, generator=gen) * 10).round().clamp(1, 9) / 10)
    out = metrics.compute(["map_macro", "map_micro", "f1_macro"], logits, target, 4, multilabel=True)
    probs, y = logits.sigmoid().numpy(), target.numpy()
    assert out == pytest.approx({
        "map_macro": average_precision_score(y[:, :3], probs[:, :3], average=None).sum() / 4,
        "map_micro": average_precision_score(y, probs, average="micro"),
        "f1_macro": f1_score(y, (probs > 0.5).astype(int), average="macro", zero_division=0),
    }, rel=1e-5)
    # single label: a class neither present nor predicted is left out of the macro-F1, as scikit-learn does
    logits = torch.tensor([[3.0, 0, 0, 0], [0, 3.0, 0, 0], [3.0, 0, 0, 0]])
    target = torch.tensor([0, 1, 1])
    macro = metrics.compute(["macro_f1"], logits, target, 4, multilabel=False)["macro_f1"]
    assert macro == pytest.approx(f1_score([0, 1, 1], [0, 1, 0], average="macro")) == pytest.approx((2 / 3 + 2 / 3) / 2)
