"""Assembles encoders + fusion (+ per-modality linear heads) into one model with declared parameter groups.

It is also the one place that knows what "dropping" a modality means, for missing-modality and unimodal
evaluation (see `MultimodalModel`).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import cast

import torch
from torch import Tensor, nn

from mmbench.contract.batch import Inputs, ModelOutput
from mmbench.contract.encoder import Encoder
from mmbench.contract.fusion import Fusion


class MultimodalModel(nn.Module):
    """One encoder per modality, a fusion, optionally one linear head per modality, and any modules a
    balancer adds (`extras`). A balancer that forms its own predictions (`Requirements.ignores_fusion`) gets no
    fusion: its outputs carry no fused logits and it predicts through `Balancer.eval_logits`.

    `drop` removes modalities from a forward pass: the prediction may use no sample-specific information from
    a dropped modality. Its pooled features (its token sequence, for a fusion over tokens) are replaced with
    zeros (also in the returned `ModelOutput.features`, so balancers that rebuild logits from features see the
    drop). An intermediate fusion mixes modalities inside the encoders, so there the dropped inputs are also
    replaced, before encoding, by what the encoder declares an absent input to be (`Encoder.absent_input`); a
    single-stream joint fusion (`Fusion.single_stream`) gets only that, since its features all carry every input.
    Balancers select parameters through `parameter_groups()`, never by name.
    """

    def __init__(
        self,
        encoders: Mapping[str, Encoder],
        fusion: Fusion | None,
        num_classes: int,
        unimodal_heads: bool = False,
        extras: Mapping[str, nn.Module] | None = None,
    ) -> None:
        super().__init__()
        self.modalities = tuple(encoders)
        self.encoders = nn.ModuleDict(encoders)
        self.fusion = fusion
        self.heads = nn.ModuleDict(
            {m: nn.Linear(enc.out_dim, num_classes) for m, enc in encoders.items()} if unimodal_heads else {}
        )
        self.extras = nn.ModuleDict(extras or {})

    @property
    def drives_encoders(self) -> bool:
        return self.fusion is not None and self.fusion.drives_encoders

    @property
    def uses_tokens(self) -> bool:
        return self.fusion is not None and self.fusion.uses_tokens

    def fusion_inputs(self, inputs: Mapping[str, Inputs], dropped: Collection[str] = ()) -> dict[str, Tensor]:
        """What the fusion reads: pooled features, or token sequences for a fusion over tokens; `dropped` tells
        an intermediate fusion which inputs are absent stand-ins."""
        if self.fusion is not None and self.fusion.drives_encoders:
            encoders = {m: self.encoder(m) for m in self.modalities}
            return self.fusion.encode({m: inputs[m] for m in self.modalities}, encoders, frozenset(dropped))
        if self.uses_tokens:
            return {m: self.encoder(m).tokens(inputs[m]) for m in self.modalities}
        return {m: self.encoders[m](inputs[m]) for m in self.modalities}

    def encoder(self, modality: str) -> Encoder:
        """Modality `modality`'s encoder, as its class (`encoders` holds them as modules)."""
        return cast(Encoder, self.encoders[modality])

    def pool(self, encoded: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Pooled features from `fusion_inputs` (token sequences are averaged over time)."""
        return {m: z.mean(1) for m, z in encoded.items()} if self.uses_tokens else dict(encoded)

    def encode(self, inputs: Mapping[str, Inputs], dropped: Collection[str] = ()) -> dict[str, Tensor]:
        """Pooled features `(B, D_m)` of every modality."""
        return self.pool(self.fusion_inputs(inputs, dropped))

    def head(self, encoded: Mapping[str, Tensor], drop: Collection[str] = ()) -> ModelOutput:
        """Fusion and heads on already computed `fusion_inputs` (lets evaluation reuse one encoder pass)."""
        zeroed = set(drop) if self.fusion is None or not self.fusion.single_stream else set()
        kept = {m: torch.zeros_like(z) if m in zeroed else z for m, z in encoded.items()}
        features = self.pool(kept)
        unimodal = {m: self.heads[m](features[m]) for m in self.heads}
        if self.fusion is None:
            return ModelOutput(None, features, {}, unimodal, frozenset(drop))
        fused = self.fusion(kept)
        return ModelOutput(fused.logits, features, fused.contributions, unimodal, frozenset(drop), kept)

    def without(self, inputs: Mapping[str, Inputs], drop: Collection[str]) -> dict[str, Inputs]:
        """The inputs with each dropped modality replaced by its encoder's absent input."""
        return {m: self.encoder(m).absent_input(inputs[m]) if m in drop else inputs[m] for m in self.modalities}

    def forward(self, inputs: Mapping[str, Inputs], drop: Collection[str] = ()) -> ModelOutput:
        if drop and self.drives_encoders:
            return self.head(self.fusion_inputs(self.without(inputs, drop), drop), drop)
        return self.head(self.fusion_inputs(inputs), drop)

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """`encoder.<m>`, `fusion`, `head.<m>`, `extra.<name>` -> parameters; each parameter in exactly one."""
        groups = {f"encoder.{m}": list(self.encoders[m].parameters()) for m in self.modalities}
        groups["fusion"] = list(self.fusion.parameters()) if self.fusion is not None else []
        groups.update({f"head.{m}": list(h.parameters()) for m, h in self.heads.items()})
        groups.update({f"extra.{n}": list(x.parameters()) for n, x in self.extras.items()})
        return groups

    def parameter_counts(self) -> dict[str, int]:
        params = list(self.parameters())
        return {
            "total": sum(p.numel() for p in params),
            "trainable": sum(p.numel() for p in params if p.requires_grad),
        }
