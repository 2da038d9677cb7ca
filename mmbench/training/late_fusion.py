"""Late fusion of per-modality logits, for balancers that form their own predictions (MLA, MIE).

A dropped modality (missing-modality and unimodal evaluation, `ModelOutput.dropped`) gets weight 0 and the
others are renormalised, as a missing branch would be; with one modality left the fusion is exactly its logits.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Literal

import torch
from torch import Tensor


def gate_weights(logits: list[Tensor], mode: Literal["entropy", "entropy_batch"] = "entropy") -> Tensor:
    """Entropy gating weights `softmax_m(−H_m)`: shape (M, B) per sample, or (M, 1) for the batch variant.

    `entropy`: H_m[i] = −Σ_c p log p with p = softmax(o_m[i]) over classes (MLA's uncertainty gating).
    `entropy_batch`: MLA's official code: p = softmax(o_m, dim=0) over the batch and H_m summed over B × C.
    """
    if mode == "entropy":
        logp = [torch.log_softmax(o.float(), dim=1) for o in logits]
        h = torch.stack([-(lp.exp() * lp).sum(1) for lp in logp])  # (M, B)
    else:
        logp = [torch.log_softmax(o.float(), dim=0) for o in logits]
        h = torch.stack([-(lp.exp() * lp).sum() for lp in logp]).unsqueeze(1)  # (M, 1)
    return torch.softmax(-h, dim=0)


def fuse_logits(logits: list[Tensor], weights: Tensor) -> Tensor:
    """Σ_m w_m o_m with weights of shape (M, B) or (M, 1)."""
    return sum(w.unsqueeze(-1) * o.float() for w, o in zip(weights, logits))


def presence(modalities: Sequence[str], dropped: Collection[str], device: torch.device) -> Tensor:
    """(M, 1) mask: 0 for the dropped modalities, 1 for the others."""
    return torch.tensor([[float(m not in dropped)] for m in modalities], device=device)


def mask_weights(weights: Tensor, mask: Tensor) -> Tensor:
    """Zero the weights of absent modalities and renormalise over the rest; shapes (M, B) or (M, 1).

    When every modality is absent the weights are kept as they are. Tensor ops only (no host sync).
    """
    kept = weights * mask
    total = kept.sum(0, keepdim=True)
    return torch.where(total > 0, kept / total.clamp_min(1e-30), weights.expand_as(kept))
