"""The pairing shared by the fusions in which one modality acts on the other (`film`, `gated`)."""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import Field

from mmbench.api import Incompatible, Params


class PairParams(Params):
    acting: str | None = Field(
        None, description="the modality that conditions or gates the other; null: the task's first modality "
                          "(audio in the audio-visual tasks, as MLB)")


def pair(feature_dims: Mapping[str, int], acting: str | None, fusion: str) -> tuple[str, str]:
    """(acting modality, acted-on modality) of a two-modality task."""
    names = list(feature_dims)
    if len(names) != 2:
        raise Incompatible(f"{fusion} fuses exactly two modalities, got {len(names)}: {names}")
    if acting is None:
        return names[0], names[1]
    if acting not in names:
        raise ValueError(f"{fusion}: acting modality {acting!r} is not one of the task's modalities {names}")
    return acting, names[1 - names.index(acting)]
