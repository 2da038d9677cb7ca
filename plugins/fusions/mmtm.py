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
* The fusion sizes its MMTMs in `bind` (called by the core with the built encoders, before the optimizer
  exists): one no-grad forward of a zero batch `(2, *shape)` through each encoder's `blocks()`, in eval
  mode, gives every block's output width (a batch of token ids when the blocks reject a float one).
  Encoders with different numbers of blocks are paired from the end: with `n_m` blocks, the first `n_m − L`
  run alone and MMTMs follow each of the last `L = min(positions, n_1, …, n_M)` blocks (only those L MMTMs
  are built). An encoder without `blocks()`, whose blocks cannot run on a zero batch or do not end in its
  pooled feature `(B, out_dim)` makes the cell incompatible (skipped), as does a single-modality task.

Modes a balancer switches (plain attributes, read at every forward; none synchronises with the device):

* `curation`: None (normal) or a bool tensor `(M,)` on the model's device. Where it is True, modality m's
  gates are replaced by their running means broadcast over the batch (Greedy's "curation" / re-balancing
  step), so branch m gets no sample-specific information from the other modalities and its gate layers get
  no gradient; the other branches are unchanged. Applied in training forwards, and in evaluation only
  when `curate_in_eval` is True (the official code passes its flag to validation forwards too).
* Running means `ḡ_m ← (mean_batch(g_m) + ḡ_m·t)/(t + 1)` (detached, never reset) are updated by every
  training forward before the replacement, as in the official code, and by evaluation forwards only when
  `track_eval` is True (official: every forward). In evaluation only the forwards with every modality present
  count: the engine's evaluation also runs each batch with modalities dropped, which the official evaluation
  never does, and those forwards (`encode(..., dropped=...)`) leave the means and their count alone.
  `shared_gate_mean` reproduces the official bug where every modality's running mean tracks modality 0's gate
  (needs equal widths).
* `isolate`: every modality's gate is computed from its own squeeze and the *mean* squeezes of the others
  over the training forwards since `reset_squeeze_means()` (the official `turnoff_cross_modal_flow`
  evaluation mode, used to estimate conditional utilisation rates).

Differences from the official module: M ≥ 2 modalities (the official is fixed to two); the squeeze-mean
used by `isolate` is a running mean over training forwards rather than a separate recording pass over the
training set with the final model.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal, cast

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from mmbench.api import Encoder, Fusion, FusionOutput, Incompatible, Inputs, Params, hookimpl
from mmbench_plugins.encoders.narrow import tensor_input
from mmbench_plugins.fusions.shares import summed


def running_mean(mean: Tensor, count: Tensor, value: Tensor) -> Tensor:
    """The official cumulative mean after one more value: `(value + mean·count)/(count + 1)`."""
    return (value + mean * count) / (count + 1)


class MMTM(nn.Module):
    """One Multimodal Transfer Module over the modalities whose block widths (channels) are `dims`
    (formulas in the module docstring)."""

    #: forwards counted by the running gate means and the squeeze means (buffers)
    count: Tensor
    squeeze_count: Tensor

    def __init__(self, dims: Sequence[int], ratio: float = 4.0, channels: Literal["first", "last"] = "first") -> None:
        super().__init__()
        if len(dims) < 2 or min(dims) < 1:
            raise ValueError(f"an MMTM joins at least two modalities of positive width; got widths {tuple(dims)}")
        self.dims = tuple(int(c) for c in dims)
        self.num_modalities = len(self.dims)
        self.channels_last = channels == "last"
        total = sum(self.dims)
        hidden = max(1, int(2 * total / ratio))
        self.fc_squeeze = nn.Linear(total, hidden)
        self.fc_gate = nn.ModuleList(nn.Linear(hidden, c) for c in self.dims)
        for i, c in enumerate(self.dims):
            self.register_buffer(f"gate_mean_{i}", torch.zeros(c))
            self.register_buffer(f"squeeze_mean_{i}", torch.zeros(c))
        self.register_buffer("count", torch.zeros((), dtype=torch.float64))
        self.register_buffer("squeeze_count", torch.zeros((), dtype=torch.float64))

    def gate_means(self) -> list[Tensor]:
        return [getattr(self, f"gate_mean_{i}") for i in range(self.num_modalities)]

    def squeeze_means(self) -> list[Tensor]:
        return [getattr(self, f"squeeze_mean_{i}") for i in range(self.num_modalities)]

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
            h = F.relu(self.fc_squeeze(torch.cat(list(squeezes), -1)))
            return [torch.sigmoid(fc(h)) for fc in self.fc_gate]
        gates = []
        means = self.squeeze_means()
        for i, fc in enumerate(self.fc_gate):
            q = [s if j == i else means[j].to(s.dtype).expand(s.shape[0], -1) for j, s in enumerate(squeezes)]
            gates.append(torch.sigmoid(fc(F.relu(self.fc_squeeze(torch.cat(q, -1))))))
        return gates

    def forward(self, xs: Sequence[Tensor], curation: Tensor | None = None, track_gates: bool = False,
                track_squeezes: bool = False, shared_gate_mean: bool = False, isolate: bool = False) -> list[Tensor]:
        if shared_gate_mean and len(set(self.dims)) > 1:
            raise Incompatible(f"shared_gate_mean (the official running-mean bug) needs equal MMTM widths; "
                               f"got {self.dims}")
        squeezes = [self.squeeze(x) for x in xs]
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


def encoder_blocks(encoder: Encoder, modality: str) -> list[nn.Module]:
    """The encoder's blocks, or `Incompatible` when it exposes none."""
    try:
        blocks = list(encoder.blocks())
    except NotImplementedError as exc:
        raise Incompatible(f"mmtm runs the encoders block by block; the {encoder.name!r} encoder of modality "
                           f"{modality!r} does not expose blocks()") from exc
    if not blocks:
        raise Incompatible(f"the {encoder.name!r} encoder of modality {modality!r} has no blocks")
    return blocks


@torch.no_grad()
def probe_block_shapes(encoder: Encoder, blocks: Sequence[nn.Module], modality: str) -> list[tuple[int, ...]]:
    """Output shapes of `blocks` on a zero batch `(2, *encoder.modality.shape)`, run in eval mode (no batch
    statistics change, no randomness drawn) with every submodule's training flag restored afterwards.

    The batch is float (the dtype of the encoder's floating parameters); when the blocks reject it, a batch
    of token ids (long) is tried before giving up with `Incompatible`."""
    tensors = [*encoder.parameters(), *encoder.buffers()]
    device = tensors[0].device if tensors else torch.device("cpu")
    floats = [t.dtype for t in tensors if t.is_floating_point()]
    shape = (2, *encoder.modality.shape)
    flags = {mod: mod.training for mod in encoder.modules()}
    encoder.eval()
    first_error: Exception | None = None
    try:
        for dtype in (floats[0] if floats else torch.get_default_dtype(), torch.long):
            try:
                h, shapes = torch.zeros(shape, dtype=dtype, device=device), []
                for block in blocks:
                    h = block(h)
                    shapes.append(tuple(h.shape))
                return shapes
            except Exception as exc:  # noqa: BLE001 - any failure of the probe means "cannot size the MMTMs"
                first_error = first_error or exc
    finally:
        for mod, flag in flags.items():
            mod.training = flag
    raise Incompatible(f"mmtm could not run the blocks of the {encoder.name!r} encoder of modality {modality!r} "
                       f"on a zero batch of shape {shape}: {type(first_error).__name__}: {first_error}")


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
    """MMTMs between the encoders' blocks (built by `bind`); prediction = mean of one linear head per branch."""

    name = "mmtm"
    Params = MMTMParams
    params: MMTMParams
    offers_contributions = True
    drives_encoders = True

    def __init__(self, feature_dims: Mapping[str, int], num_classes: int, params: MMTMParams) -> None:
        super().__init__(feature_dims, num_classes, params)
        if len(feature_dims) < 2:
            raise Incompatible(f"mmtm fuses at least two modalities, got {list(feature_dims)}")
        self.order = tuple(feature_dims)
        #: one MMTM per paired block, filled by `bind`
        self.mmtm = nn.ModuleList()
        self.classifiers = nn.ModuleDict({m: nn.Linear(d, num_classes) for m, d in feature_dims.items()})
        #: blocks per modality of the bound encoders (None until `bind`)
        self.block_counts: dict[str, int] | None = None
        # modes (see the module docstring); set by balancers, read at every forward
        self.curation: Tensor | None = None
        self.curate_in_eval = False
        self.track_eval = False
        self.shared_gate_mean = False
        self.isolate = False

    # ------------------------------------------------------------------------------------ binding

    @property
    def bound(self) -> bool:
        return self.block_counts is not None

    def _require_bound(self) -> None:
        if not self.bound:
            raise RuntimeError("the mmtm fusion is not bound to its encoders: call fusion.bind(encoders) (as "
                               "mmbench.engine.build_model does) before encoding or reading its MMTM parameters")

    def bind(self, encoders: Mapping[str, Encoder]) -> None:
        """Build the MMTMs with the widths of the encoders' paired blocks (see the module docstring)."""
        if self.bound:
            raise RuntimeError("the mmtm fusion is already bound; bind it once, before building the optimizer")
        if set(encoders) != set(self.order):
            raise ValueError(f"mmtm was built for modalities {list(self.order)}, bind got {list(encoders)}")
        blocks = {m: encoder_blocks(encoders[m], m) for m in self.order}
        shapes = {m: probe_block_shapes(encoders[m], blocks[m], m) for m in self.order}
        for m, sizes in shapes.items():
            bad = [s for s in sizes if len(s) < 2 or s[0] != 2]
            if bad:
                raise Incompatible(f"mmtm needs block outputs (B, C, ...); the {encoders[m].name!r} encoder of "
                                   f"modality {m!r} gives {bad[0]} for a batch of 2")
            if sizes[-1] != (2, self.feature_dims[m]):
                raise Incompatible(f"the blocks of the {encoders[m].name!r} encoder of modality {m!r} end in "
                                   f"shape {sizes[-1][1:]}, not its pooled feature ({self.feature_dims[m]},)")
        paired = min(self.params.positions, *(len(b) for b in blocks.values()))
        channel = -1 if self.params.channels == "last" else 1
        for k in range(paired):
            dims = [shapes[m][len(shapes[m]) - paired + k][channel] for m in self.order]
            self.mmtm.append(MMTM(dims, self.params.ratio, self.params.channels))
        self.block_counts = {m: len(b) for m, b in blocks.items()}

    # ------------------------------------------------------------------------- parameter groups

    def active_modules(self) -> list[MMTM]:
        """The MMTMs, in block order (one per paired block)."""
        self._require_bound()
        return cast(list[MMTM], list(self.mmtm))  # `bind` fills the list with MMTMs only

    def gate_parameters(self, modality: str) -> list[nn.Parameter]:
        """The gate (excitation) layers of `modality` in every MMTM."""
        i = self.order.index(modality)
        return [p for mod in self.active_modules() for p in mod.fc_gate[i].parameters()]

    def squeeze_parameters(self) -> list[nn.Parameter]:
        """The shared squeeze layers of every MMTM (they serve all modalities)."""
        return [p for mod in self.active_modules() for p in mod.fc_squeeze.parameters()]

    def classifier_parameters(self, modality: str) -> list[nn.Parameter]:
        return list(self.classifiers[modality].parameters())

    def reset_squeeze_means(self) -> None:
        """Restart the squeeze means used by `isolate` (e.g. at every epoch start)."""
        for mod in self.active_modules():
            for mean in mod.squeeze_means():
                mean.zero_()
            mod.squeeze_count.zero_()

    # --------------------------------------------------------------------------------- forward

    def encode(self, inputs: Mapping[str, Inputs], encoders: Mapping[str, Encoder],
               dropped: frozenset[str] = frozenset()) -> dict[str, Tensor]:
        self._require_bound()
        blocks = {m: encoder_blocks(encoders[m], m) for m in self.order}
        if {m: len(b) for m, b in blocks.items()} != self.block_counts:
            raise RuntimeError(f"mmtm was bound to encoders with {self.block_counts} blocks; encode got "
                               f"{ {m: len(b) for m, b in blocks.items()} }")
        paired = len(self.mmtm)
        h = {m: tensor_input(inputs[m], f"mmtm (modality {m!r})") for m in self.order}
        for m in self.order:
            for block in blocks[m][: len(blocks[m]) - paired]:
                h[m] = block(h[m])
        curation = self.curation if (self.training or self.curate_in_eval) else None
        track_gates = (self.training or (self.track_eval and not dropped)) and not self.isolate
        for k, mod in enumerate(self.mmtm):
            for m in self.order:
                h[m] = blocks[m][len(blocks[m]) - paired + k](h[m])
            outs = mod([h[m] for m in self.order], curation=curation, track_gates=track_gates,
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
        return FusionOutput(summed(contributions.values()), contributions)


@hookimpl
def mmbench_fusions():
    return [MMTMFusion]
