"""`Encoder`: one modality's network, with the optional faces that fusions working inside encoders use."""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

import torch
from torch import Tensor, nn

from mmbench.contract.batch import Inputs
from mmbench.contract.task import ModalitySpec
from mmbench.schema.params import NoParams
from mmbench.schema.params import Params as AnyParams  # `Params` is each class's own attribute


class Encoder(nn.Module):
    """One modality's network: a batch of its inputs (a tensor `(B, *shape)` or a mapping of tensors) ->
    pooled features `(B, out_dim)`."""

    name: ClassVar[str]
    Params: ClassVar[type[AnyParams]] = NoParams
    #: modality kinds this encoder accepts (None: any)
    accepts: ClassVar[frozenset[str] | None] = None

    def __init__(self, modality: ModalitySpec, params: AnyParams) -> None:
        super().__init__()
        self.modality = modality
        self.params = params
        self.out_dim: int = 0

    @classmethod
    def weights_identity(cls, params: AnyParams) -> str | None:
        """What identifies the pretrained weights these parameters load (a hub name and revision, or a hash of
        a local file); None for random initialisation. Part of a cell's identity."""
        return None

    @classmethod
    def fake_params(cls, params: AnyParams) -> AnyParams:
        """The parameters a `--fake-data` smoke run builds this encoder with (default: the grid's own). An
        encoder that loads pretrained weights, or is too large for a CPU smoke run, returns a small randomly
        initialised configuration that reads the same inputs: a fake run checks the wiring, never the model."""
        return params

    def absent_input(self, x: Inputs) -> Inputs:
        """The input that stands for a missing modality, shaped like the batch `x` (default: zeros). A text
        encoder, say, returns only the special tokens."""
        if isinstance(x, Mapping):
            return {k: torch.zeros_like(v) for k, v in x.items()}
        return torch.zeros_like(x)

    def blocks(self) -> list[nn.Module]:
        """The encoder as a sequence of blocks whose composition is `forward`, for fusions that work inside
        the encoders (intermediate fusion). Optional."""
        raise NotImplementedError(f"encoder {self.name!r} does not expose its blocks")

    # A sequence encoder (a transformer) may also expose its forward as embed_input -> every block -> readout, so a
    # joint fusion can act on the token sequences between blocks (insert, replace or exchange tokens).

    def embed_input(self, x: Inputs) -> tuple[Tensor, Tensor | None]:
        """The token sequence `(B, T, D)` the first block reads, and its padding mask `(B, T)` (True: a real
        token; None: no padding). Optional."""
        raise NotImplementedError(f"encoder {self.name!r} does not expose its embedding step")

    def run_block(self, index: int, hidden: Tensor, mask: Tensor | None) -> Tensor:
        """Block `index` of `blocks()` on a sequence `(B, T, D)` whose padding mask is `mask` (T may differ from
        the embedded length: a fusion may have added tokens). Optional."""
        raise NotImplementedError(f"encoder {self.name!r} does not run its blocks on token sequences")

    def readout(self, hidden: Tensor) -> Tensor:
        """The pooled feature `(B, out_dim)` from the last block's sequence; `readout(run_block(... embed_input(x)))`
        over every block is `forward(x)`. Optional."""
        raise NotImplementedError(f"encoder {self.name!r} does not expose its readout")

    def token_vectors(self, ids: Tensor) -> Tensor:
        """The input embeddings `(B, N, D)` of vocabulary ids `(B, N)` (a text encoder's word embeddings), for
        joint fusions that build token sequences of their own. Optional."""
        raise NotImplementedError(f"encoder {self.name!r} has no vocabulary")

    def embed_vectors(self, vectors: Tensor, segment: int) -> Tensor:
        """Vectors `(B, N, D)` in the input-embedding space turned into a sequence the blocks read, as the
        embedding step treats word vectors (positions 0..N-1, segment id `segment`): how a joint fusion feeds
        another modality into this encoder (MMBT's image tokens into BERT). Optional."""
        raise NotImplementedError(f"encoder {self.name!r} does not embed foreign vectors")

    def tokens(self, x: Inputs) -> Tensor:
        """The sequence `(B, T, out_dim)` whose mean over T is `forward(x)`, for fusions that read token
        sequences (`Fusion.uses_tokens`). Optional."""
        raise NotImplementedError(f"encoder {self.name!r} does not expose token sequences")
