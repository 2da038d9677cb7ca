"""How confident each modality is on a batch, in the forms several balancers share."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor


def true_class_score_sums(logits: Mapping[str, Tensor], labels: Tensor) -> Tensor:
    """`s_m = Σ_i softmax(o_m)[i, y_i]` for each modality's logits `o_m` (a batch *sum*, as OGM, OPM and InfoReg
    compute it), a detached float32 `(M,)` tensor in the order of `logits`."""
    stacked = torch.stack([o.detach().float() for o in logits.values()])  # (M, B, C)
    index = labels.view(1, -1, 1).expand(stacked.shape[0], -1, 1)
    return stacked.softmax(-1).gather(-1, index).squeeze(-1).sum(-1)


def ratio_to_weakest(scores: Tensor) -> Tensor:
    """`s_m / min_j s_j`: with two modalities the dominant one's ratio to the other, and 1 for the weaker; the
    denominator is clamped at the smallest positive float, so underflowed scores give 0, never NaN."""
    return scores / scores.min().clamp_min(torch.finfo(scores.dtype).tiny)
