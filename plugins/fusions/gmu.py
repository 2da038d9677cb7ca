"""`gmu`: the Gated Multimodal Unit (Arevalo et al. 2017) followed by its maxout-MLP classifier.

For two modalities a, b (in the order the task lists them) with pooled features x_a, x_b:

    u_m = W_m · drop(BN_m(x_m)) (+ b_m)          per-modality projection to h units
    z   = σ(W_z · [u_a; u_b] (+ b_z))             gate on the projections (released code, default)
        = σ(W_z · [BN_a(x_a); BN_b(x_b)] (+ b_z))  gate on the inputs (`gate: inputs`, the paper's equations)
    v   = z ⊙ tanh(u_a) + (1 − z) ⊙ tanh(u_b)     (tanh(v) with `output_tanh`, as in PM+MO's port)

and the classifier BN → Maxout(h→h) → BN → Maxout(h→h) → BN → Linear(h→C) on v.

Defaults follow the released Theano code (johnarevalo/gmu-mmimdb @ 95226b0d2657, `gmu.json`, `generators/gmu.py`,
`model.py`): h = 512, no biases in the unit, 2 maxout pieces, dropout 0.5 on the input of every linear layer (the
projections, both maxout layers and the output layer; the gate has none), weights ~ U(±init_range/2) with init_range
0.01 and zero biases. PM+MO's PyTorch port (JasonArmitage-res/PM-MO @ 3c2ad7a747d4, `models/models.py`) is
reproduced with `hidden: 3000, bias: true, gate: inputs, output_tanh: true, maxout_pieces: 5, dropout: 0.9,
dropout_at: between_maxouts, init_range: null`; its port also re-normalises the concatenated inputs before the gate,
which is omitted here (batch-normalising features that are already batch-normalised only adds an affine map).

Max-norm (`max_norm`, the repo's optional constraint) clips each row of every linear weight to that norm. It is
applied before every use of a layer (a forward pre-hook, so PM+MO's direct calls of the unit and the classifier
get it too), which gives every forward the weights a clip after the previous update
would have left (and needs no hook into the optimizer).

The mix is not separable into per-modality logits, so the fusion offers no contributions; `gmu()` returns the
gate activations z alongside v for analysis. The unit (`self.unit`) and the classifier (`self.classifier`)
are separate sub-modules because PM+MO trains them with different objectives.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Literal

import torch
from pydantic import Field
from torch import Tensor, nn

from mmbench.api import Fusion, FusionOutput, Incompatible, Params, hookimpl


class GMUParams(Params):
    hidden: int = Field(512, ge=1, description="width h of the unit and the classifier (repo 512; PM+MO 3000)")
    gate: Literal["projected", "inputs"] = Field(
        "projected", description="gate on the projections u (released code) or on the normalised inputs (paper)")
    bias: bool = Field(False, description="biases in the projections and the gate (repo: none; PM+MO: yes)")
    input_norm: bool = Field(True, description="BatchNorm1d on each modality's features before its projection")
    output_tanh: bool = Field(False, description="apply tanh to the mixed output v (PM+MO's port)")
    maxout_pieces: int = Field(2, ge=1, le=16, description="linear pieces per maxout unit (repo 2; PM+MO 5)")
    dropout: float = Field(0.5, ge=0.0, lt=1.0, description="dropout probability (repo 0.5; PM+MO 0.9)")
    dropout_at: Literal["linear_inputs", "between_maxouts"] = Field(
        "linear_inputs",
        description="linear_inputs: on the input of every linear layer (repo); between_maxouts: once, between "
                    "the two maxout layers (PM+MO's port)")
    init_range: float | None = Field(
        0.01, gt=0.0, le=10.0,
        description="weights ~ U(-init_range/2, init_range/2), biases 0 (repo); null: PyTorch's default init")
    max_norm: float | None = Field(
        None, gt=0.0, description="max-norm: each output unit's incoming weight vector (a row of every linear "
                                  "layer) clipped to this L2 norm after every update (repo: off by default, "
                                  "random search U(5, 20)); null: off")


def gated_mix(u_first: Tensor, u_second: Tensor, gate_logits: Tensor,
              output_tanh: bool = False) -> tuple[Tensor, Tensor]:
    """`v = z·tanh(u_first) + (1−z)·tanh(u_second)` with `z = σ(gate_logits)`; returns (v, z)."""
    z = torch.sigmoid(gate_logits)
    v = z * torch.tanh(u_first) + (1 - z) * torch.tanh(u_second)
    return (torch.tanh(v) if output_tanh else v), z


@torch.no_grad()
def clip_rows(linear: nn.Linear, inputs: tuple, max_norm: float) -> None:
    """Max-norm, as a forward pre-hook: each row of the layer's weight rescaled to `max_norm` when longer."""
    linear.weight.renorm_(2, 0, max_norm)


class Maxout(nn.Module):
    """`max_j (W_j x + b_j)` over `pieces` linear maps, computed as one Linear(in, pieces·out)."""

    def __init__(self, in_dim: int, out_dim: int, pieces: int) -> None:
        super().__init__()
        self.out_dim, self.pieces = out_dim, pieces
        self.linear = nn.Linear(in_dim, out_dim * pieces)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(x).unflatten(-1, (self.pieces, self.out_dim)).amax(dim=-2)


class GMUUnit(nn.Module):
    """The gated unit: features of two modalities -> (v, z), both `(B, hidden)`."""

    def __init__(self, feature_dims: Mapping[str, int], params: GMUParams) -> None:
        super().__init__()
        self.order = tuple(feature_dims)
        self.gate_on_inputs = params.gate == "inputs"
        self.output_tanh = params.output_tanh
        h = params.hidden
        self.norm = nn.ModuleDict(
            {m: nn.BatchNorm1d(d) if params.input_norm else nn.Identity() for m, d in feature_dims.items()})
        self.proj = nn.ModuleDict({m: nn.Linear(d, h, bias=params.bias) for m, d in feature_dims.items()})
        gate_in = sum(feature_dims.values()) if self.gate_on_inputs else 2 * h
        self.gate = nn.Linear(gate_in, h, bias=params.bias)
        self.drop = nn.Dropout(params.dropout if params.dropout_at == "linear_inputs" else 0.0)

    def forward(self, features: Mapping[str, Tensor]) -> tuple[Tensor, Tensor]:
        x = {m: self.norm[m](features[m]) for m in self.order}
        u = [self.proj[m](self.drop(x[m])) for m in self.order]
        gate_in = torch.cat([x[m] for m in self.order] if self.gate_on_inputs else u, dim=-1)
        return gated_mix(u[0], u[1], self.gate(gate_in), self.output_tanh)


class MaxoutClassifier(nn.Module):
    """BN → Maxout → BN → Maxout → BN → Linear, with dropout where `dropout_at` says."""

    def __init__(self, hidden: int, num_classes: int, params: GMUParams) -> None:
        super().__init__()
        everywhere = params.dropout_at == "linear_inputs"
        p = params.dropout

        def drop(here: bool) -> nn.Module:
            return nn.Dropout(p) if here and p > 0 else nn.Identity()

        self.net = nn.Sequential(
            nn.BatchNorm1d(hidden), drop(everywhere), Maxout(hidden, hidden, params.maxout_pieces),
            nn.BatchNorm1d(hidden), drop(True), Maxout(hidden, hidden, params.maxout_pieces),
            nn.BatchNorm1d(hidden), drop(everywhere), nn.Linear(hidden, num_classes),
        )

    def forward(self, v: Tensor) -> Tensor:
        return self.net(v)


class GMUFusion(Fusion):
    """Gated Multimodal Unit + maxout-MLP classifier, for exactly two modalities (see the module docstring)."""

    name = "gmu"
    Params = GMUParams
    offers_contributions = False
    #: the released unit mixes two modalities with one gate z and 1 − z
    max_modalities = 2

    def __init__(self, feature_dims: Mapping[str, int], num_classes: int, params: GMUParams) -> None:
        super().__init__(feature_dims, num_classes, params)
        if len(feature_dims) != 2:
            raise Incompatible(f"gmu fuses exactly two modalities, got {len(feature_dims)}: {list(feature_dims)}")
        self.unit = GMUUnit(feature_dims, params)
        self.classifier = MaxoutClassifier(params.hidden, num_classes, params)
        if params.init_range is not None:
            half = params.init_range / 2
            for module in self.modules():
                if isinstance(module, nn.Linear):
                    nn.init.uniform_(module.weight, -half, half)
                    if module.bias is not None:
                        nn.init.zeros_(module.bias)
        if params.max_norm is not None:
            for module in self.modules():
                if isinstance(module, nn.Linear):
                    module.register_forward_pre_hook(functools.partial(clip_rows, max_norm=params.max_norm))

    def gmu(self, features: Mapping[str, Tensor]) -> tuple[Tensor, Tensor]:
        """The unit's output v and its gate activations z (z weights the first modality)."""
        return self.unit(features)

    def forward(self, features: Mapping[str, Tensor]) -> FusionOutput:
        v, _ = self.unit(features)
        return FusionOutput(self.classifier(v))


@hookimpl
def mmbench_fusions():
    return [GMUFusion]
