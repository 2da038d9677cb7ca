"""`bert`: BERT (transformers `BertModel`) for word-piece inputs `{"input_ids", "attention_mask",
"token_type_ids"}`, each `(B, L)`; the pooled feature is BERT's pooler output (dense + tanh on [CLS]), 768-d for
BERT-base, as the BERT classifiers of MMBT's and Dynamic UDA's code use it.

Defaults are BERT-base's sizes (109,482,240 parameters with the pooler); `pretrained: bert-base-uncased` (or a
local folder) loads weights, null initialises at random (offline). A missing text is `[CLS] [SEP]`: the
absent input keeps each row's first word piece ([CLS]) and its last real one ([SEP]), so it needs no vocabulary.
Joint fusions run it as embed_input (word + position + segment embeddings, LayerNorm) -> layers -> pooler, and
may embed vectors of their own in its word-embedding space (`embed_vectors`: MMBT's image tokens).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from mmbench.api import Encoder, Inputs, ModalitySpec, hookimpl
from mmbench.api import Params as AnyParams  # `Params` is each class's own attribute
from mmbench_plugins.encoders.narrow import named_inputs
from mmbench_plugins.encoders.transformer import SMOKE, TransformerParams, build, identity, layer_list, run_layer


class BertParams(TransformerParams):
    vocab_size: int = 30522


class BertEncoder(Encoder):
    """BERT on word pieces -> pooled [CLS] feature (see the module docstring)."""

    name = "bert"
    Params = BertParams
    accepts = frozenset({"tokens"})
    params: BertParams

    def __init__(self, modality: ModalitySpec, params: BertParams) -> None:
        super().__init__(modality, params)
        from transformers import BertConfig, BertModel

        self.model = build(BertModel, BertConfig, params, vocab_size=params.vocab_size)
        self.layers = layer_list(self.model)
        self.out_dim = self.model.config.hidden_size

    @classmethod
    def weights_identity(cls, params: AnyParams) -> str | None:
        return identity(params)

    @classmethod
    def fake_params(cls, params: AnyParams) -> AnyParams:
        return params.model_copy(update={**SMOKE})

    def forward(self, x: Mapping[str, Tensor]) -> Tensor:
        return self.model(input_ids=x["input_ids"], attention_mask=x["attention_mask"],
                          token_type_ids=x["token_type_ids"]).pooler_output

    def absent_input(self, x: Inputs) -> dict[str, Tensor]:
        x = named_inputs(x, self.name)
        ids = x["input_ids"]
        last = x["attention_mask"].sum(1).clamp_min(1) - 1
        absent = torch.zeros_like(ids)
        absent[:, 0] = ids[:, 0]
        absent[:, 1] = ids.gather(1, last[:, None]).squeeze(1)
        mask = torch.zeros_like(x["attention_mask"])
        mask[:, :2] = 1
        return {"input_ids": absent, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids)}

    def blocks(self) -> list[nn.Module]:
        return list(self.layers)

    def embed_input(self, x: Inputs) -> tuple[Tensor, Tensor]:
        x = named_inputs(x, self.name)
        hidden = self.model.embeddings(input_ids=x["input_ids"], token_type_ids=x["token_type_ids"])
        return hidden, x["attention_mask"].bool()

    def run_block(self, index: int, hidden: Tensor, mask: Tensor | None) -> Tensor:
        return run_layer(self.layers[index], hidden, mask)

    def token_vectors(self, ids: Tensor) -> Tensor:
        return self.model.embeddings.word_embeddings(ids)

    def embed_vectors(self, vectors: Tensor, segment: int) -> Tensor:
        segments = torch.full(vectors.shape[:2], segment, dtype=torch.long, device=vectors.device)
        return self.model.embeddings(inputs_embeds=vectors, token_type_ids=segments)

    def readout(self, hidden: Tensor) -> Tensor:
        if self.model.pooler is None:
            raise TypeError("bert reads out through BERT's pooler; this model was built without one")
        return self.model.pooler(hidden)


@hookimpl
def mmbench_encoders():
    return [BertEncoder]
