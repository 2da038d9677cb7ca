"""Each modality's exact share of a fusion's logits (`offers_contributions`), and the logits they add up to."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from torch import Tensor


def block_logits(features: Mapping[str, Tensor],
                 blocks: Mapping[str, tuple[Tensor, Tensor | None]]) -> dict[str, Tensor]:
    """Modality m's share `z_m W_mᵀ + b_m` of a linear head's logits, from its `classifier_blocks()`."""
    return {m: features[m] @ w.T if b is None else features[m] @ w.T + b for m, (w, b) in blocks.items()}


def summed(shares: Iterable[Tensor]) -> Tensor:
    """The logits the shares add up to, added as Python's `sum` adds them (from 0)."""
    total = sum(shares)
    if not isinstance(total, Tensor):
        raise ValueError("a fusion's logits need the share of at least one modality")
    return total
