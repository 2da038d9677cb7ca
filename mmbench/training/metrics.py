"""Task metrics on a whole split's logits, with scikit-learn's definitions (the reference implementations
score with scikit-learn), written in torch: no import cost and microseconds per call, where a metric library
cost seconds to import and milliseconds per call on every epoch's evaluation.
`tests/core/training/test_metrics.py` checks each against scikit-learn on the same arrays, ties and absent
classes included."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable

import torch
from torch import Tensor

# A metric takes (logits (N, C), targets, num_classes) and returns a scalar tensor.
MetricFn = Callable[[Tensor, Tensor, int], Tensor]

#: decision threshold on sigmoid probabilities for multi-label predictions
MULTILABEL_THRESHOLD = 0.5

#: equal-width confidence bins of the expected calibration error
ECE_BINS = 15


def _ratio(num: Tensor, den: Tensor) -> Tensor:
    """num / den, 0 where den is 0 (scikit-learn's zero_division=0)."""
    return torch.where(den > 0, num / den.clamp(min=1), torch.zeros_like(num))


def _f1_counts(pred: Tensor, true: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Per-column true positives, false positives and false negatives of 0/1 matrices (N, K)."""
    pred, true = pred.float(), true.float()
    tp = (pred * true).sum(0)
    return tp, (pred * (1 - true)).sum(0), ((1 - pred) * true).sum(0)


def _f1(tp: Tensor, fp: Tensor, fn: Tensor) -> Tensor:
    return _ratio(2 * tp, 2 * tp + fp + fn)


def _indicator_f1(pred: Tensor, true: Tensor, average: str) -> Tensor:
    """F1 of indicator matrices (N, K) averaged as scikit-learn's f1_score(average=...)."""
    if average == "samples":  # each sample's F1 over its labels, then the mean over samples
        return _f1(*_f1_counts(pred.T, true.T)).mean()
    tp, fp, fn = _f1_counts(pred, true)
    if average == "micro":
        return _f1(tp.sum(), fp.sum(), fn.sum())
    per_label = _f1(tp, fp, fn)
    if average == "weighted":
        support = tp + fn
        return _ratio((per_label * support).sum(), support.sum())
    return per_label.mean()


def _one_hot(target: Tensor, num_classes: int) -> Tensor:
    return torch.nn.functional.one_hot(target, num_classes)


def _macro_f1(logits: Tensor, target: Tensor, num_classes: int) -> Tensor:
    # scikit-learn averages over the classes that occur in the targets or the predictions
    pred, true = _one_hot(logits.argmax(-1), num_classes), _one_hot(target, num_classes)
    seen = (pred + true).sum(0) > 0
    return _f1(*_f1_counts(pred, true))[seen].mean()


def _average_precision(scores: Tensor, true: Tensor) -> Tensor:
    """Per-column average precision of scores (N, K) against 0/1 targets: Σ (R_k − R_{k−1}) P_k over the
    distinct thresholds, tied scores forming one threshold; a column without positives scores 0."""
    scores, order = scores.sort(0, descending=True)
    hits = true.float().gather(0, order)
    tps = hits.cumsum(0)
    ranks = torch.arange(1, len(scores) + 1).unsqueeze(1)
    last_of_tie = torch.ones_like(scores, dtype=torch.bool)
    last_of_tie[:-1] = scores[1:] != scores[:-1]
    # true positives up to the latest threshold; their increase is each threshold's gain in recall
    at_threshold = torch.where(last_of_tie, tps, torch.zeros_like(tps)).cummax(0).values
    gain = torch.diff(at_threshold, dim=0, prepend=torch.zeros_like(tps[:1]))
    return _ratio((gain * tps / ranks).sum(0), tps[-1])


def _calibration_error(logits: Tensor, target: Tensor, num_classes: int) -> Tensor:
    """Expected calibration error: |accuracy − confidence| in each of ECE_BINS equal-width bins of the top
    softmax probability, weighted by the bin's share of the samples (bins are right-closed)."""
    confidence, pred = logits.softmax(-1).max(-1)
    correct = (pred == target).float()
    edges = torch.linspace(0, 1, ECE_BINS + 1, dtype=confidence.dtype)
    bins = torch.bucketize(confidence, edges[1:-1])
    gap = torch.zeros(ECE_BINS).index_add_(0, bins, correct - confidence)
    return gap.abs().sum() / len(target)


def _multiclass_ap(logits: Tensor, target: Tensor, num_classes: int, average: str) -> Tensor:
    probs, true = logits.softmax(1), _one_hot(target, num_classes)
    if average == "micro":
        return _average_precision(probs.reshape(-1, 1), true.reshape(-1, 1))[0]
    return _average_precision(probs, true).mean()


def _multilabel_pred(logits: Tensor) -> Tensor:
    return (logits.sigmoid() > MULTILABEL_THRESHOLD).long()


def _accuracy(logits: Tensor, target: Tensor, num_classes: int) -> Tensor:
    return (logits.argmax(-1) == target).float().mean()


SINGLE_LABEL: dict[str, MetricFn] = {
    "accuracy": _accuracy,
    "macro_f1": _macro_f1,
    "micro_f1": _accuracy,  # with one label and one guess per sample, micro-F1 is the accuracy
    "map_macro": lambda x, y, c: _multiclass_ap(x, y, c, "macro"),
    "map_micro": lambda x, y, c: _multiclass_ap(x, y, c, "micro"),
    "ece": _calibration_error,
}

def _multilabel_f1(logits: Tensor, y: Tensor, classes: int, average: str) -> Tensor:
    return _indicator_f1(_multilabel_pred(logits), y, average)


MULTI_LABEL: dict[str, MetricFn] = {
    **{f"f1_{average}": functools.partial(_multilabel_f1, average=average)
       for average in ("micro", "macro", "weighted", "samples")},
    "map_macro": lambda x, y, c: _average_precision(x.sigmoid(), y).mean(),
    "map_micro": lambda x, y, c: _average_precision(x.sigmoid().reshape(-1, 1), y.reshape(-1, 1))[0],
}

#: metrics where smaller is better; everything else is maximised
LOWER_IS_BETTER = frozenset({"ece"})


def available(multilabel: bool) -> dict[str, MetricFn]:
    return MULTI_LABEL if multilabel else SINGLE_LABEL


def compute(
    names: Iterable[str], logits: Tensor, target: Tensor, num_classes: int, multilabel: bool
) -> dict[str, float]:
    """Evaluate the named metrics on one split's logits and targets (on CPU, float32)."""
    table = available(multilabel)
    logits = logits.detach().float().cpu()
    target = target.detach().cpu().long()
    return {name: float(table[name](logits, target, num_classes)) for name in names}


def better(name: str, a: float, b: float) -> bool:
    """Whether score `a` beats score `b` on metric `name`."""
    return a < b if name in LOWER_IS_BETTER else a > b
