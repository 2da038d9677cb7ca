"""`mmbv`: the Multimodal BERT-ViT of Dynamic UDA (Monter-Aldana, López-Monroy, Sánchez-Vega, "Dynamic
Regularization in UDA for Transformers in Multimodal Classification", ACL 2023, §3) — two transformer
streams that exchange their [CLS] tokens block by block, classified on both [CLS] vectors.

The authors published no MMBV code (their repository,
IvonneMont/Dynamic-UDA-for-Transformers-in-Multimodal-Classification @ b1ecf2a0882c, has BERT, ResNet-152 and MMBT
classifiers only); this follows the paper's text, with our choices where it is silent (marked "our choice"). With
`H_a`, `H_b` the two streams' token sequences (each [CLS] at position 0), block i of each stream
(`Encoder.run_block`) and `Encoder.embed_input` / `Encoder.readout` around them:

* after block 1: APPEND — each stream gets the other's [CLS] (as block 1 left it) as one more token at its end;
  a padded stream's mask gets one more real position (after its padding; the foreign token has no position or
  segment embedding: the paper adds no fusion parameters);
* after every later block: REPLACE — the last token (what the block made of the foreign [CLS]) is overwritten
  by the other stream's new [CLS]. Both [CLS] are read before either sequence changes (a simultaneous swap),
  built out of place, and stay attached to the graph (cross-modal gradients are the point).
* Streams of different depth (tiny test configs) exchange after each of their first min(L_a, L_b) blocks; the
  deeper stream runs its remaining blocks alone (our choice). BERT-base and ViT-B/16 both have 12.
* Readout (our choice: the paper does not detail its head): BERT's pooler on the text [CLS], as the notebook's
  BERT classifier, ViT's final LayerNorm on the image [CLS] (the encoders' own readouts), then Dropout(0.1) and
  one Linear on [CLS_a; CLS_b] (1536 -> C): the concat head, so each stream's
  exact share of the logits is its column block (plus half the bias) and `offers_contributions` holds.
* A missing modality is its encoder's absent input (an all-zero image; `[CLS] [SEP]` for BERT), and the exchange
  runs as usual (our choice: the paper's Table 4 feeds one modality without saying how the other is absent); the
  model also zeroes the dropped stream's [CLS] feature before the head.

Both streams must be sequence encoders of one width (`embed_input`, `run_block`, `readout`; `equal_dims`).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from pydantic import Field
from torch import Tensor, nn

from mmbench.api import Encoder, FusionOutput, Incompatible, Inputs, Params, hookimpl
from mmbench_plugins.fusions.concat import ConcatFusion


class MMBVParams(Params):
    dropout: float = Field(0.1, ge=0.0, lt=1.0, description="dropout on the two [CLS] features before the head")


def is_sequence_encoder(encoder: Encoder) -> bool:
    """Whether the encoder exposes embed_input -> run_block -> readout (overrides all three of the protocol)."""
    return all(getattr(type(encoder), name) is not getattr(Encoder, name)
               for name in ("embed_input", "run_block", "readout"))


def with_token(hidden: Tensor, mask: Tensor | None, token: Tensor, replace: bool) -> tuple[Tensor, Tensor | None]:
    """`hidden` with `token` (B, 1, D) appended (and the mask grown by one real position) or put in place of
    the last token."""
    if replace:
        return torch.cat([hidden[:, :-1], token], dim=1), mask
    if mask is not None:
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
    return torch.cat([hidden, token], dim=1), mask


class MMBVFusion(ConcatFusion):
    """BERT and ViT exchanging [CLS] tokens block by block; concat head on both [CLS] (module docstring)."""

    name = "mmbv"
    Params = MMBVParams
    drives_encoders = True
    equal_dims = True
    max_modalities = 2
    offers_contributions = True

    def __init__(self, feature_dims: Mapping[str, int], num_classes: int, params: MMBVParams) -> None:
        if len(feature_dims) != 2:
            raise Incompatible(f"mmbv joins exactly two streams, got {len(feature_dims)}: {list(feature_dims)}")
        super().__init__(feature_dims, num_classes, params)
        self.dropout = nn.Dropout(params.dropout)

    def bind(self, encoders: Mapping[str, Encoder]) -> None:
        plain = [m for m, e in encoders.items() if not is_sequence_encoder(e)]
        if plain:
            raise Incompatible(f"mmbv exchanges tokens between transformer streams; the encoders of {plain} do not "
                               "expose embed_input/run_block/readout (use bert and vit)")

    def encode(self, inputs: Mapping[str, Inputs], encoders: Mapping[str, Encoder],
               dropped: frozenset[str] = frozenset()) -> dict[str, Tensor]:
        a, b = self.slices
        (ha, ma), (hb, mb) = encoders[a].embed_input(inputs[a]), encoders[b].embed_input(inputs[b])
        depth = {m: len(encoders[m].blocks()) for m in (a, b)}
        paired = min(depth.values())
        for i in range(paired):
            ha, hb = encoders[a].run_block(i, ha, ma), encoders[b].run_block(i, hb, mb)
            cls_a, cls_b = ha[:, :1], hb[:, :1]
            ha, ma = with_token(ha, ma, cls_b, replace=i > 0)
            hb, mb = with_token(hb, mb, cls_a, replace=i > 0)
        for i in range(paired, depth[a]):
            ha = encoders[a].run_block(i, ha, ma)
        for i in range(paired, depth[b]):
            hb = encoders[b].run_block(i, hb, mb)
        return {a: encoders[a].readout(ha), b: encoders[b].readout(hb)}

    def forward(self, features: Mapping[str, Tensor]) -> FusionOutput:
        return super().forward({m: self.dropout(z) for m, z in features.items()})


@hookimpl
def mmbench_fusions():
    return [MMBVFusion]
