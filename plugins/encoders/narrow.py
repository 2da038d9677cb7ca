"""What an encoder's overrides of the contract narrow, with a clear error when it is not what the encoder reads:
the parameters its classmethods receive (typed as any component's `Params`; the registry has validated them
against the encoder's own model) and a batch's inputs (a tensor, or a mapping of named tensors; fusions that
run the encoders read them too)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar

from torch import Tensor

from mmbench.api import Inputs, Params

P = TypeVar("P", bound=Params)


def own_params(kind: type[P], params: Params) -> P:
    """`params` as the encoder's own parameter model `kind`."""
    if not isinstance(params, kind):
        raise TypeError(f"expected {kind.__name__}, got {type(params).__name__}")
    return params


def tensor_input(x: Inputs, reader: str) -> Tensor:
    """A batch that `reader` (an encoder or fusion) reads as one tensor."""
    if isinstance(x, Mapping):
        raise TypeError(f"{reader} reads one tensor; got a mapping with keys {sorted(x)}")
    return x


def named_inputs(x: Inputs, reader: str) -> Mapping[str, Tensor]:
    """A batch that `reader` (an encoder or fusion) reads as a mapping of named tensors."""
    if not isinstance(x, Mapping):
        raise TypeError(f"{reader} reads a mapping of named tensors; got one tensor of shape {tuple(x.shape)}")
    return x
