"""What the Hugging Face transformer encoders (`bert`, `vit`) share: building the model from a hub name, a
local folder or a config made in code (random initialisation, offline), its weights identity, and the
embed_input -> blocks -> readout door that joint fusions (`mmbv`) use.

transformers 5.x returns a tensor from one layer call, 4.x a tuple; `run_layer` accepts both.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import torch
from pydantic import Field
from torch import Tensor, nn

from mmbench.api import Params
from mmbench_plugins.encoders.narrow import own_params
from mmbench_plugins.encoders.weights import local_path, weights_identity

if TYPE_CHECKING:
    from transformers import PreTrainedConfig, PreTrainedModel

M = TypeVar("M", bound="PreTrainedModel")


class TransformerParams(Params):
    pretrained: str | None = Field(None, description="hub name or local folder (save_pretrained) of the weights; "
                                                     "null: random initialisation from the sizes below")
    revision: str | None = Field(None, description="hub revision (a commit) pinned with a hub name")
    hidden_size: int = Field(768, ge=8, description="width (random initialisation; a checkpoint brings its own)")
    num_hidden_layers: int = Field(12, ge=1, le=48)
    num_attention_heads: int = Field(12, ge=1)
    intermediate_size: int = Field(3072, ge=8)


#: the configuration of `--fake-data` smoke runs: random weights, two narrow layers
SMOKE = {"pretrained": None, "revision": None, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
         "intermediate_size": 64}


def build(model_cls: type[M], config_cls: Callable[..., PreTrainedConfig], params: TransformerParams,
          **config: Any) -> M:
    """`model_cls` from the pretrained source, or randomly initialised from a config of the given sizes and
    `config` (a checkpoint brings its own configuration)."""
    if params.pretrained is None:
        return model_cls(config_cls(hidden_size=params.hidden_size, num_hidden_layers=params.num_hidden_layers,
                                    num_attention_heads=params.num_attention_heads,
                                    intermediate_size=params.intermediate_size, **config))
    path = local_path(params.pretrained)
    source = str(path) if path is not None else params.pretrained
    return model_cls.from_pretrained(
        source, revision=params.revision)  # type: ignore[arg-type]  # None: the default branch


def identity(params: Params) -> str | None:
    """The weights identity of a transformer encoder's parameters (its `weights_identity`)."""
    own = own_params(TransformerParams, params)
    return weights_identity(own.pretrained, own.revision)


def additive_mask(mask: Tensor | None, dtype: torch.dtype) -> Tensor | None:
    """A (B, T) bool padding mask -> the (B, 1, 1, T) additive form the layers take (0 or the dtype's minimum)."""
    if mask is None:
        return None
    return (~mask)[:, None, None, :].to(dtype) * torch.finfo(dtype).min


def run_layer(layer: nn.Module, hidden: Tensor, mask: Tensor | None) -> Tensor:
    out = layer(hidden, attention_mask=additive_mask(mask, hidden.dtype))
    return out[0] if isinstance(out, tuple) else out


def layer_list(model: nn.Module) -> nn.ModuleList:
    """The block stack of a BERT or ViT model, in transformers 4.x (`encoder.layer`) or 5.x (`layers`) layout."""
    for path in ("encoder.layer", "layers", "encoder.layers"):
        module: object = model
        for part in path.split("."):
            module = getattr(module, part, None)
        if isinstance(module, nn.ModuleList):
            return module
    raise TypeError(f"{type(model).__name__} has no block list where BERT or ViT keep theirs")
