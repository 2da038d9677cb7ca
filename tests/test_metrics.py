import pytest
import torch

from mmbench import metrics


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


def test_ece_is_lower_is_better_and_zero_for_confident_correct_predictions():
    logits = torch.tensor([[50.0, 0.0], [0.0, 50.0]])
    out = metrics.compute(["ece"], logits, torch.tensor([0, 1]), 2, multilabel=False)
    assert out["ece"] == pytest.approx(0.0, abs=1e-6)
    assert metrics.better("ece", 0.1, 0.2) and not metrics.better("accuracy", 0.1, 0.2)
