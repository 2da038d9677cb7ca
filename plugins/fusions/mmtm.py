"""`mmtm`: Multimodal Transfer Modules between the encoders' blocks, one classifier head per branch.

The intermediate-fusion network of Greedy (Wu et al., ICML 2022; official `src/model.py::MMTM_MVCNN` and
`src/balanced_mmtm.py::MMTM_mitigate`, non-SE, non-shared configuration), generalised from two ResNet-18s to
any encoders that expose `blocks()`:

* Every modality keeps its own branch (its encoder) and its own linear head `l_m = W_m z_m + b_m`. The
  prediction is the mean of the heads, `o = (1/M) Σ_m l_m`, so modality m's exact share is `l_m / M`
  (`offers_contributions`). Greedy trains on `Σ_m CE(l_m)` (`branch_logits`); other balancers see `o`.
* An MMTM follows each of the last `positions` blocks of every encoder (the official model: after layer2,
  layer3 and layer4, the last three of ResNet-18's four stages). With block outputs `X_m`:

      q = [S(X_1); …; S(X_M)]         S = squeeze: global average over everything but the channels
      h = ReLU(W_sq q + b_sq)          W_sq: Σ C_m -> int(2 Σ C_m / ratio)
      g_m = σ(W_m h + b_m)             one gate per channel of modality m (plain sigmoid, no ×2)
      X_m <- X_m ⊙ g_m                 broadcast over the non-channel dimensions

  For vector blocks `(B, C)` (e.g. the `mlp` encoder) the squeeze is the feature itself: there is nothing
  to pool. Feature maps `(B, C, …)` are pooled over their trailing dimensions like the official conv maps
  (`channels: first`); token sequences `(B, T, C)` need `channels: last`.
* Encoders with different numbers of blocks are paired from the end: with `n_m` blocks, the first
  `n_m − L` run alone and MMTMs follow each of the last `L = min(positions, n_1, …, n_M)` blocks. Modules
  the pairing leaves unused (when `L < positions`) become empty parameters that never train. An encoder
  without `blocks()` makes the cell incompatible (skipped), as does a single-modality task.

Modes a balancer switches (plain attributes, read at every forward; none synchronises with the device):

* `curation`: None (normal) or a bool tensor `(M,)` on the model's device. Where it is True, modality m's
  gates are replaced by their running means broadcast over the batch (Greedy's "curation" / re-balancing
  step), so branch m gets no sample-specific information from the other modalities and its gate layers get
  no gradient; the other branches are unchanged. Applied in training forwards, and in evaluation only
  when `curate_in_eval` is True (the official code passes its flag to validation forwards too).
* Running means `ḡ_m ← (mean_batch(g_m) + ḡ_m·t)/(t + 1)` (detached, never reset) are updated by every
  training forward before the replacement, as in the official code, and by evaluation forwards only when
  `track_eval` is True (official: every forward). `shared_gate_mean` reproduces the official bug where
  every modality's running mean tracks modality 0's gate (needs equal widths).
* `isolate`: every modality's gate is computed from its own squeeze and the *mean* squeezes of the others
  over the training forwards since `reset_squeeze_means()` (the official `turnoff_cross_modal_flow`
  evaluation mode, used to estimate conditional utilisation rates).

Differences from the official module: M ≥ 2 modalities (the official is fixed to two); the squeeze-mean
used by `isolate` is a running mean over training forwards rather than a separate recording pass over the
training set with the final model.

The core builds the fusion from the pooled feature sizes only, so the MMTM widths (those of intermediate
blocks) are unknown until the first forward: the MMTM parameters are created uninitialised
(`torch.nn.UninitializedParameter`, registered before the optimizer is built so it holds them) and
materialised in place, with `nn.Linear`'s initialisation, by the first `encode`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn
from torch.nn.parameter import is_lazy

from mmbench.hookspecs import hookimpl
from mmbench.protocols import Encoder, Fusion, FusionOutput, Incompatible, Params


def running_mean(mean: Tensor, count: Tensor, value: Tensor) -> Tensor:
    """The official cumulative mean after one more value: `(value + mean·count)/(count + 1)`."""
    return (value + mean * count) / (count + 1)


class MMTM(nn.Module):
    """One Multimodal Transfer Module over M modalities (formulas in the module docstring).

    `dims` (channels per modality) may be None: the parameters are then materialised by the first call.
    """

    def __init__(self, num_modalities: int, ratio: float, dims: Sequence[int] | None = None,
                 channels: Literal["first", "last"] = "first") -> None:
        super().__init__()
        self.num_modalities = num_modalities
        self.ratio = ratio
        self.channels_last = channels == "last"
        self.squeeze_weight = nn.UninitializedParameter()
        self.squeeze_bias = nn.UninitializedParameter()
        self.gate_weight = nn.ParameterList([nn.UninitializedParameter() for _ in range(num_modalities)])
        self.gate_bias = nn.ParameterList([nn.UninitializedParameter() for _ in range(num_modalities)])
        for i in range(num_modalities):
            self.register_buffer(f"gate_mean_{i}", nn.UninitializedBuffer())
            self.register_buffer(f"squeeze_mean_{i}", nn.UninitializedBuffer())
        self.register_buffer("count", torch.zeros((), dtype=torch.float64))
        self.register_buffer("squeeze_count", torch.zeros((), dtype=torch.float64))
        if dims is not None:
            self.materialize(dims)

    # ------------------------------------------------------------------------------ parameters

    @property
    def materialized(self) -> bool:
        return not is_lazy(self.squeeze_weight)

    @property
    def dims(self) -> tuple[int, ...] | None:
        return tuple(b.shape[0] for b in self.gate_bias) if self.materialized else None

    def _lazy_tensors(self) -> list[Tensor]:
        return [self.squeeze_weight, self.squeeze_bias, *self.gate_weight, *self.gate_bias,
                *(self.gate_means()), *(self.squeeze_means())]

    def materialize(self, dims: Sequence[int]) -> None:
        """Create the parameters for block widths `dims`, initialised like `nn.Linear`."""
        if len(dims) != self.num_modalities:
            raise ValueError(f"MMTM over {self.num_modalities} modalities got {len(dims)} widths")
        total = sum(dims)
        hidden = max(1, int(2 * total / self.ratio))
        self.squeeze_weight.materialize((hidden, total))
        self.squeeze_bias.materialize((hidden,))
        for i, c in enumerate(dims):
            self.gate_weight[i].materialize((c, hidden))
            self.gate_bias[i].materialize((c,))
            for buf in (self.gate_means()[i], self.squeeze_means()[i]):
                buf.materialize((c,))
        self.reset_parameters()

    def materialize_empty(self) -> None:
        """Turn a module the pairing leaves unused into empty tensors (no parameters to train)."""
        for t in self._lazy_tensors():
            if is_lazy(t):
                t.materialize((0,))

    @torch.no_grad()
    def reset_parameters(self) -> None:
        pairs = [(self.squeeze_weight, self.squeeze_bias), *zip(self.gate_weight, self.gate_bias)]
        for weight, bias in pairs:  # nn.Linear's initialisation
            nn.init.kaiming_uniform_(weight, a=math.sqrt(5))
            bound = 1 / math.sqrt(weight.shape[1]) if weight.shape[1] > 0 else 0.0
            nn.init.uniform_(bias, -bound, bound)
        for buf in (*self.gate_means(), *self.squeeze_means()):
            buf.zero_()
        self.count.zero_()
        self.squeeze_count.zero_()

    def gate_means(self) -> list[Tensor]:
        return [getattr(self, f"gate_mean_{i}") for i in range(self.num_modalities)]

    def squeeze_means(self) -> list[Tensor]:
        return [getattr(self, f"squeeze_mean_{i}") for i in range(self.num_modalities)]

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003
        # a fresh (uninitialised) module takes its shapes from the state being loaded
        named = [("squeeze_weight", self.squeeze_weight), ("squeeze_bias", self.squeeze_bias)]
        named += [(f"gate_weight.{i}", p) for i, p in enumerate(self.gate_weight)]
        named += [(f"gate_bias.{i}", p) for i, p in enumerate(self.gate_bias)]
        named += [(f"gate_mean_{i}", b) for i, b in enumerate(self.gate_means())]
        named += [(f"squeeze_mean_{i}", b) for i, b in enumerate(self.squeeze_means())]
        for name, t in named:
            if is_lazy(t) and prefix + name in state_dict:
                t.materialize(state_dict[prefix + name].shape)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    # --------------------------------------------------------------------------------- forward

    def squeeze(self, x: Tensor) -> Tensor:
        """`(B, C)` as is; otherwise the mean over every dimension but batch and channels."""
        if x.dim() == 2:
            return x
        if self.channels_last:
            return x.flatten(1, -2).mean(1)
        return x.flatten(2).mean(-1)

    def _excite(self, x: Tensor, gate: Tensor) -> Tensor:
        if x.dim() == 2:
            return x * gate
        if self.channels_last:
            return x * gate.view(gate.shape[0], *([1] * (x.dim() - 2)), gate.shape[1])
        return x * gate.view(*gate.shape, *([1] * (x.dim() - 2)))

    def gates(self, squeezes: Sequence[Tensor], isolate: bool = False) -> list[Tensor]:
        """Per-modality gates `σ(W_m ReLU(W_sq q + b_sq) + b_m)`; with `isolate`, modality m's q holds the
        other modalities' mean squeezes instead of their sample values."""
        if not isolate:
            h = F.relu(F.linear(torch.cat(list(squeezes), -1), self.squeeze_weight, self.squeeze_bias))
            return [torch.sigmoid(F.linear(h, w, b)) for w, b in zip(self.gate_weight, self.gate_bias)]
        gates = []
        means = self.squeeze_means()
        for i, (w, b) in enumerate(zip(self.gate_weight, self.gate_bias)):
            q = [s if j == i else means[j].to(s.dtype).expand(s.shape[0], -1) for j, s in enumerate(squeezes)]
            h = F.relu(F.linear(torch.cat(q, -1), self.squeeze_weight, self.squeeze_bias))
            gates.append(torch.sigmoid(F.linear(h, w, b)))
        return gates

    def forward(self, xs: Sequence[Tensor], curation: Tensor | None = None, track_gates: bool = False,
                track_squeezes: bool = False, shared_gate_mean: bool = False, isolate: bool = False) -> list[Tensor]:
        squeezes = [self.squeeze(x) for x in xs]
        if not self.materialized:
            self.materialize([s.shape[-1] for s in squeezes])
        if shared_gate_mean and len(set(self.dims)) > 1:
            raise Incompatible(f"shared_gate_mean (the official running-mean bug) needs equal MMTM widths; "
                               f"got {self.dims}")
        gates = self.gates(squeezes, isolate)
        with torch.no_grad():
            if track_gates:
                batch = [g.detach().float().mean(0) for g in gates]
                for i, mean in enumerate(self.gate_means()):
                    mean.copy_(running_mean(mean, self.count, batch[0 if shared_gate_mean else i]))
                self.count.add_(1)
            if track_squeezes:
                for s, mean in zip(squeezes, self.squeeze_means()):
                    mean.copy_(running_mean(mean, self.squeeze_count, s.detach().float().mean(0)))
                self.squeeze_count.add_(1)
        if curation is not None:
            gates = [torch.where(curation[i], mean.to(g.dtype).expand_as(g), g)
                     for i, (g, mean) in enumerate(zip(gates, self.gate_means()))]
        return [self._excite(x, g) for x, g in zip(xs, gates)]


class MMTMParams(Params):
    ratio: float = Field(4.0, gt=0.0, le=1024.0,
                         description="reduction ratio: the squeeze layer has int(2·ΣC/ratio) units (official 4)")
    positions: int = Field(3, ge=1, le=64,
                           description="MMTMs after each of the last `positions` blocks of every encoder "
                                       "(official: 3, after ResNet-18's layer2..layer4); fewer when an "
                                       "encoder has fewer blocks")
    channels: Literal["first", "last"] = Field(
        "first", description="channel axis of block outputs with more than 2 dims: 'first' (B, C, ...) as for "
                             "conv maps (official), 'last' (B, ..., C) for token sequences")


class MMTMFusion(Fusion):
    """MMTMs between the encoders' blocks; prediction = mean of one linear head per branch."""

    name = "mmtm"
    Params = MMTMParams
    offers_contributions = True
    drives_encoders = True

    def __init__(self, feature_dims: Mapping[str, int], num_classes: int, params: MMTMParams) -> None:
        super().__init__(feature_dims, num_classes, params)
        if len(feature_dims) < 2:
            raise Incompatible(f"mmtm fuses at least two modalities, got {list(feature_dims)}")
        self.order = tuple(feature_dims)
        self.mmtm = nn.ModuleList(
            MMTM(len(self.order), params.ratio, channels=params.channels) for _ in range(params.positions))
        self.classifiers = nn.ModuleDict({m: nn.Linear(d, num_classes) for m, d in feature_dims.items()})
        #: MMTMs in use (resolved by the first `encode` from the encoders' block counts)
        self.active: int | None = None
        # modes (see the module docstring); set by balancers, read at every forward
        self.curation: Tensor | None = None
        self.curate_in_eval = False
        self.track_eval = False
        self.shared_gate_mean = False
        self.isolate = False

    # ------------------------------------------------------------------------- parameter groups

    def active_modules(self) -> list[MMTM]:
        return list(self.mmtm) if self.active is None else list(self.mmtm)[: self.active]

    def gate_parameters(self, modality: str) -> list[nn.Parameter]:
        """The gate (excitation) layers of `modality` in every MMTM."""
        i = self.order.index(modality)
        return [p for mod in self.mmtm for p in (mod.gate_weight[i], mod.gate_bias[i])]

    def squeeze_parameters(self) -> list[nn.Parameter]:
        """The shared squeeze layers of every MMTM (they serve all modalities)."""
        return [p for mod in self.mmtm for p in (mod.squeeze_weight, mod.squeeze_bias)]

    def classifier_parameters(self, modality: str) -> list[nn.Parameter]:
        return list(self.classifiers[modality].parameters())

    def reset_squeeze_means(self) -> None:
        """Restart the squeeze means used by `isolate` (e.g. at every epoch start)."""
        for mod in self.mmtm:
            if mod.materialized:
                for mean in mod.squeeze_means():
                    mean.zero_()
                mod.squeeze_count.zero_()

    # --------------------------------------------------------------------------------- forward

    def _blocks(self, encoders: Mapping[str, Encoder]) -> dict[str, list[nn.Module]]:
        blocks = {}
        for m in self.order:
            try:
                blocks[m] = list(encoders[m].blocks())
            except NotImplementedError as exc:
                raise Incompatible(f"mmtm runs the encoders block by block; the {encoders[m].name!r} encoder of "
                                   f"modality {m!r} does not expose blocks()") from exc
            if not blocks[m]:
                raise Incompatible(f"the {encoders[m].name!r} encoder of modality {m!r} has no blocks")
        return blocks

    def encode(self, inputs: Mapping[str, Tensor], encoders: Mapping[str, Encoder]) -> dict[str, Tensor]:
        blocks = self._blocks(encoders)
        paired = min(len(self.mmtm), *(len(b) for b in blocks.values()))
        if self.active is None:
            for mod in list(self.mmtm)[paired:]:
                mod.materialize_empty()
            self.active = paired
        h = {m: inputs[m] for m in self.order}
        for m in self.order:
            for block in blocks[m][: len(blocks[m]) - paired]:
                h[m] = block(h[m])
        curation = self.curation if (self.training or self.curate_in_eval) else None
        track_gates = (self.training or self.track_eval) and not self.isolate
        for k in range(paired):
            for m in self.order:
                h[m] = blocks[m][len(blocks[m]) - paired + k](h[m])
            outs = self.mmtm[k]([h[m] for m in self.order], curation=curation, track_gates=track_gates,
                                track_squeezes=self.training and not self.isolate,
                                shared_gate_mean=self.shared_gate_mean, isolate=self.isolate)
            h = dict(zip(self.order, outs))
        return h

    def branch_logits(self, features: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Each branch's own head `l_m = W_m z_m + b_m`."""
        return {m: self.classifiers[m](features[m]) for m in self.order}

    def forward(self, features: Mapping[str, Tensor]) -> FusionOutput:
        n = len(self.order)
        contributions = {m: logits / n for m, logits in self.branch_logits(features).items()}
        return FusionOutput(sum(contributions.values()), contributions)


@hookimpl
def mmbench_fusions():
    return [MMTMFusion]
