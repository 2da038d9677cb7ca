"""`mmbt`: the Supervised Multimodal Bitransformer (Kiela, Bhooshan, Firooz, Perez, Testuggine, "Supervised
Multimodal Bitransformers for Classifying Images and Text", 2019; facebookresearch/mmbt @ ad71e9c54bee) — image
tokens projected into BERT's input space and read by BERT together with the text, one stream.

With the image encoder's N tokens `(B, N, D_img)` (`Encoder.tokens`: ResNet-152's pooled grid, N = 3 in MMBT)
and BERT as the text encoder (as the released `mmbt/models/mmbt.py` and `mmbt/models/image.py`):

* image segment: `[CLS]` word embedding, the N tokens through a new Linear(D_img -> D) (bias), the `[SEP]`
  word embedding — N + 2 vectors given BERT's own position embeddings 0..N+1, segment 0, LayerNorm and dropout
  (`Encoder.embed_vectors`; the tables are the text encoder's, shared);
* text segment: the task's word pieces without their leading `[CLS]`, segment 1, positions restarting at 0
  (BERT's ordinary embedding of the shortened text);
* the sequence [image ; text] through every BERT layer, attention mask ones over the image segment and the
  text's padding mask, then BERT's pooler on position 0 (the image segment's `[CLS]`), Dropout(0.1) and
  Linear(D -> C).

Features: the text modality's is that pooled joint `[CLS]` (it carries both modalities: `single_stream`), the
image modality's is the mean of its N tokens (the image encoder's own pooled feature, which per-modality heads
read). The logits cannot be split per modality (`offers_contributions` is False); balancers that need
unimodal logits use heads. A missing modality is its encoder's absent input only (`[CLS] [SEP]` text: the text
segment is the single `[SEP]`; an all-zero image).

Differences from the released code: the `[CLS]`/`[SEP]` ids are read from the batch (the text's first and last
real word pieces), so no vocabulary is named; the text keeps the tokenizer's trailing `[SEP]` (MMBT drops it for
single sentences); the image segment's dropout is BERT's embedding dropout (same rate, 0.1) rather than a second
module; the recipe's freezing of the CNN (3 epochs) and of BERT (5 epochs) is not part of the model.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from pydantic import Field
from torch import Tensor, nn

from mmbench.api import Encoder, Fusion, FusionOutput, Incompatible, Inputs, Params, hookimpl
from mmbench_plugins.encoders.narrow import named_inputs
from mmbench_plugins.fusions.mmbv import is_sequence_encoder


class MMBTParams(Params):
    dropout: float = Field(0.1, ge=0.0, lt=1.0, description="dropout on the pooled [CLS] before the classifier")
    text: str | None = Field(None, description="the text modality, whose encoder reads both (null: the task's first "
                                               "modality, `text` in the image-text tasks)")


def can_embed_vectors(encoder: Encoder) -> bool:
    return is_sequence_encoder(encoder) and all(
        getattr(type(encoder), name) is not getattr(Encoder, name) for name in ("token_vectors", "embed_vectors"))


class MMBTFusion(Fusion):
    """ResNet image tokens in BERT's input space, one BERT stream, classifier on its pooled [CLS]."""

    name = "mmbt"
    Params = MMBTParams
    drives_encoders = True
    single_stream = True
    max_modalities = 2

    def __init__(self, feature_dims: Mapping[str, int], num_classes: int, params: MMBTParams) -> None:
        if len(feature_dims) != 2:
            raise Incompatible(f"mmbt joins one text and one image modality, got {list(feature_dims)}")
        super().__init__(feature_dims, num_classes, params)
        names = list(feature_dims)
        if params.text is not None and params.text not in names:
            raise ValueError(f"mmbt: text modality {params.text!r} is not one of the task's modalities {names}")
        self.text = params.text or names[0]
        self.image = names[1 - names.index(self.text)]
        self.project = nn.Linear(feature_dims[self.image], feature_dims[self.text])
        self.dropout = nn.Dropout(params.dropout)
        self.classifier = nn.Linear(feature_dims[self.text], num_classes)

    def bind(self, encoders: Mapping[str, Encoder]) -> None:
        text, image = encoders[self.text], encoders[self.image]
        if not can_embed_vectors(text) or type(image).tokens is Encoder.tokens:
            raise Incompatible(f"mmbt needs a text encoder that embeds foreign vectors (bert) for {self.text!r} and "
                               f"an image encoder that gives tokens (resnet152) for {self.image!r}; got "
                               f"{text.name!r} and {image.name!r}")

    def encode(self, inputs: Mapping[str, Inputs], encoders: Mapping[str, Encoder],
               dropped: frozenset[str] = frozenset()) -> dict[str, Tensor]:
        bert, text = encoders[self.text], named_inputs(inputs[self.text], f"mmbt (text modality {self.text!r})")
        image_tokens = encoders[self.image].tokens(inputs[self.image])
        ids, mask = text["input_ids"], text["attention_mask"]
        last = mask.sum(1).clamp_min(1) - 1
        cls, sep = bert.token_vectors(ids[:, :1]), bert.token_vectors(ids.gather(1, last[:, None]))
        image_part = bert.embed_vectors(torch.cat([cls, self.project(image_tokens), sep], dim=1), segment=0)
        rest = {"input_ids": ids[:, 1:], "attention_mask": mask[:, 1:],
                "token_type_ids": torch.ones_like(ids[:, 1:])}
        text_part, text_mask = bert.embed_input(rest)
        if text_mask is None:
            raise TypeError(f"mmbt joins the image tokens to the text's padding mask; the {bert.name!r} encoder "
                            f"gives none")
        hidden = torch.cat([image_part, text_part], dim=1)
        joint_mask = torch.cat([torch.ones(hidden.shape[0], image_part.shape[1], dtype=torch.bool,
                                           device=hidden.device), text_mask], dim=1)
        for i in range(len(bert.blocks())):
            hidden = bert.run_block(i, hidden, joint_mask)
        return {self.text: bert.readout(hidden), self.image: image_tokens.mean(1)}

    def forward(self, features: Mapping[str, Tensor]) -> FusionOutput:
        return FusionOutput(self.classifier(self.dropout(features[self.text])))


@hookimpl
def mmbench_fusions():
    return [MMBTFusion]
