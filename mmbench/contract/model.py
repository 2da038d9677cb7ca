"""`Model`: the part of the engine's assembled model that a balancer may use.

The engine builds one `nn.Module` per cell (its encoders, the fusion, optional per-modality heads, and the
modules a balancer adds); balancers see it through this protocol, so they depend on the contract and never on
the engine's class.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping
from typing import Any, Protocol

from torch import Tensor, nn

from mmbench.contract.batch import Inputs, ModelOutput
from mmbench.contract.fusion import Fusion


class Model(Protocol):
    """Encoders + fusion (+ heads, + a balancer's extras), as the engine assembled them.

    `drop` removes modalities from a forward pass: the prediction may use no sample-specific information from a
    dropped modality (missing-modality and unimodal evaluation). Balancers select parameters through
    `parameter_groups()`, never by name.
    """

    #: the task's modality names, in order
    modalities: tuple[str, ...]
    #: one `Encoder` per modality
    encoders: nn.ModuleDict
    #: None for a balancer that forms its own predictions (`Requirements.ignores_fusion`). A late fusion
    #: (`Requirements.late_fusion`) maps pooled features to a `FusionOutput`: `fusion(features)`
    fusion: Fusion | None
    #: one linear head per modality, when the balancer requires them (`Requirements.unimodal_heads`)
    heads: nn.ModuleDict
    #: the modules the balancer added (`Balancer.extra_modules`, `TrainContext.add_module`), by name
    extras: nn.ModuleDict
    training: bool

    def __call__(self, inputs: Mapping[str, Inputs], drop: Collection[str] = ()) -> ModelOutput:
        """The forward pass, without the modalities in `drop`."""
        ...

    def encode(self, inputs: Mapping[str, Inputs], dropped: Collection[str] = ()) -> dict[str, Tensor]:
        """Pooled features `(B, D_m)` of every modality."""
        ...

    def without(self, inputs: Mapping[str, Inputs], drop: Collection[str]) -> dict[str, Inputs]:
        """The inputs with each dropped modality replaced by its encoder's absent input."""
        ...

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """`encoder.<m>`, `fusion`, `head.<m>`, `extra.<name>` -> parameters; each parameter in exactly one."""
        ...

    def parameters(self, recurse: bool = True) -> Iterator[nn.Parameter]: ...

    def named_parameters(self, *args: Any, **kwargs: Any) -> Iterator[tuple[str, nn.Parameter]]: ...

    def state_dict(self, *args: Any, **kwargs: Any) -> Any: ...

    def load_state_dict(self, *args: Any, **kwargs: Any) -> Any: ...

    def train(self, mode: bool = True) -> Any: ...

    def eval(self) -> Any: ...
