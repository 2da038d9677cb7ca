"""`Fusion`: pooled features (or token sequences) of every modality -> class logits."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import ClassVar

from torch import Tensor, nn

from mmbench.contract.batch import Inputs
from mmbench.contract.encoder import Encoder
from mmbench.schema.params import NoParams
from mmbench.schema.params import Params as AnyParams  # `Params` is each class's own attribute


@dataclass
class FusionOutput:
    """Class logits, plus each modality's exact additive share of them when the fusion can offer it."""

    logits: Tensor
    contributions: dict[str, Tensor] = field(default_factory=dict)


class Fusion(nn.Module):
    """Combines pooled per-modality features into class logits.

    A late fusion only sees the pooled features. An intermediate fusion (`drives_encoders = True`) also
    runs the encoders block by block in `encode` (using `Encoder.blocks()`), exchanging information between
    modalities inside them; its `forward` still maps the pooled features to logits.
    A fusion over tokens (`uses_tokens = True`) receives in `forward` every modality's token sequence
    `(B, T_m, D_m)` (`Encoder.tokens`) instead of its pooled feature; the model pools the sequences (mean over
    T) into the features that heads and balancers see.

    A fusion with `offers_contributions = True` returns, for every modality, logits that are exactly that
    modality's part of the fused logits (the sum over modalities equals the logits); balancers such as OGM
    read them. Fusions that cannot split their output exactly must leave `contributions` empty.
    """

    name: ClassVar[str]
    Params: ClassVar[type[AnyParams]] = NoParams
    offers_contributions: ClassVar[bool] = False
    #: the fusion needs every modality's feature to have the same size
    equal_dims: ClassVar[bool] = False
    #: an intermediate fusion: it runs the encoders itself (`encode`) and exchanges information inside them
    drives_encoders: ClassVar[bool] = False
    #: `forward` reads each modality's token sequence `(B, T_m, D_m)` from `Encoder.tokens`, not its pooled feature
    uses_tokens: ClassVar[bool] = False
    #: a single-stream joint fusion: every pooled feature comes out of one stream that read every modality, so
    #: a dropped modality is represented by its absent input alone (its feature is not zeroed as well)
    single_stream: ClassVar[bool] = False
    #: the most modalities the fusion combines (None: any); a task with more makes the cell skipped
    max_modalities: ClassVar[int | None] = None

    def __init__(self, feature_dims: Mapping[str, int], num_classes: int, params: AnyParams) -> None:
        super().__init__()
        self.feature_dims = dict(feature_dims)
        self.num_classes = num_classes
        self.params = params

    def forward(self, features: Mapping[str, Tensor]) -> FusionOutput:  # pragma: no cover - protocol
        raise NotImplementedError

    def bind(self, encoders: Mapping[str, Encoder]) -> None:
        """For fusions with `drives_encoders = True`: called once with the built encoders, before the
        optimizer exists, so the fusion can size its inner modules from the encoders' blocks (or raise
        `Incompatible`)."""

    def encode(self, inputs: Mapping[str, Inputs], encoders: Mapping[str, Encoder],
               dropped: frozenset[str] = frozenset()) -> dict[str, Tensor]:
        """Pooled features of every modality, for fusions with `drives_encoders = True`. `dropped` names the
        modalities whose inputs were replaced by absent inputs (a missing-modality or unimodal evaluation
        pass), for fusions that keep statistics of the real ones."""
        raise NotImplementedError(f"fusion {self.name!r} does not drive the encoders")

    def classifier_blocks(self) -> dict[str, tuple[Tensor, Tensor | None]]:
        """Per-modality `(weight block, bias share)` of the final linear layer, for fusions that have one."""
        raise NotImplementedError(f"fusion {self.name!r} has no per-modality linear blocks")
