"""Task metrics, all computed by torchmetrics on a whole split's logits (never hand-written)."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import Tensor


def load():
    """torchmetrics' classification functions, imported on first use: importing torchmetrics pulls in
    torchvision's model zoo, seconds that commands which evaluate nothing should not pay."""
    from torchmetrics.functional import classification

    return classification


# A metric takes (logits (N, C), targets, num_classes) and returns a scalar tensor.
MetricFn = Callable[[Tensor, Tensor, int], Tensor]

#: decision threshold on sigmoid probabilities for multi-label predictions
MULTILABEL_THRESHOLD = 0.5


def _samples_f1(logits: Tensor, target: Tensor, num_classes: int) -> Tensor:
    # Sample-averaged F1 (sklearn's average="samples") is macro F1 over the transposed problem:
    # each sample becomes a "label" whose F1 is computed across the classes. A sample with neither true nor
    # predicted labels scores 0, as sklearn's default (which the reference implementations call) does.
    if len(logits) == 1:  # one sample (torchmetrics needs two "labels"): its own F1 over the classes
        return load().binary_f1_score(logits[0].sigmoid(), target[0], threshold=MULTILABEL_THRESHOLD, zero_division=0)
    probs = logits.sigmoid().T.contiguous()
    return load().multilabel_f1_score(
        probs, target.T.contiguous(), num_labels=probs.shape[1], average="macro",
        threshold=MULTILABEL_THRESHOLD, zero_division=0,
    )


def _multiclass_micro_ap(logits: Tensor, target: Tensor, num_classes: int) -> Tensor:
    one_hot = torch.nn.functional.one_hot(target, num_classes)
    return load().multilabel_average_precision(logits.softmax(-1), one_hot, num_labels=num_classes, average="micro")


SINGLE_LABEL: dict[str, MetricFn] = {
    "accuracy": lambda x, y, c: load().multiclass_accuracy(x, y, num_classes=c, average="micro"),
    "macro_f1": lambda x, y, c: load().multiclass_f1_score(x, y, num_classes=c, average="macro"),
    "micro_f1": lambda x, y, c: load().multiclass_f1_score(x, y, num_classes=c, average="micro"),
    "map_macro": lambda x, y, c: load().multiclass_average_precision(x.softmax(-1), y, num_classes=c, average="macro"),
    "map_micro": _multiclass_micro_ap,
    "ece": lambda x, y, c: load().multiclass_calibration_error(x.softmax(-1), y, num_classes=c, n_bins=15, norm="l1"),
}

MULTI_LABEL: dict[str, MetricFn] = {
    "f1_micro": lambda x, y, c: load().multilabel_f1_score(
        x.sigmoid(), y, num_labels=c, average="micro", threshold=MULTILABEL_THRESHOLD),
    "f1_macro": lambda x, y, c: load().multilabel_f1_score(
        x.sigmoid(), y, num_labels=c, average="macro", threshold=MULTILABEL_THRESHOLD),
    "f1_weighted": lambda x, y, c: load().multilabel_f1_score(
        x.sigmoid(), y, num_labels=c, average="weighted", threshold=MULTILABEL_THRESHOLD),
    "f1_samples": _samples_f1,
    "map_macro": lambda x, y, c: load().multilabel_average_precision(x.sigmoid(), y, num_labels=c, average="macro"),
    "map_micro": lambda x, y, c: load().multilabel_average_precision(x.sigmoid(), y, num_labels=c, average="micro"),
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
    target = target.detach().cpu()
    if multilabel:
        target = target.long()
    return {name: float(table[name](logits, target, num_classes)) for name in names}


def better(name: str, a: float, b: float) -> bool:
    """Whether score `a` beats score `b` on metric `name`."""
    return a < b if name in LOWER_IS_BETTER else a > b
