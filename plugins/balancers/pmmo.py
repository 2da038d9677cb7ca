"""`pm_mo`: Probabilistic Multimodal fusion + Multiple Objectives (Armitage, Thakur, Tripathi, Lehmann, Maleshkova,
"Training Multimodal Systems for Classification with Multiple Objectives", CEUR-WS Vol-2611, 2020; arXiv
2008.11450; official code JasonArmitage-res/PM-MO @ 3c2ad7a747d4).

Two modules, two objectives, both stepped on every batch (the paper's §3; official `train_test.py`):

* **A**, the GMU unit of the `gmu` fusion (`fusion.unit`): every weight and bias of its linear layers is a random
  variable with an element-wise Laplace prior and a Laplace variational posterior q = Laplace(ℓ, softplus(s)),
  trained by stochastic variational inference on the ELBO with Pyro (model/guide traces, `poutine.scale` for
  the KL weight, Pyro's `ClippedAdam`). Its BatchNorm parameters are point estimates trained by the same step.
* **C**, the maxout-MLP classifier of the fusion (`fusion.classifier`), trained with the task loss (BCE for
  multi-label tasks, cross-entropy for single-label ones) by the recipe's optimizer, on v = A(x) computed with
  A's weights fixed; its gradient is clipped to `classifier_clip_norm` (code: 20). The encoders are trained by
  this objective too (through A, whose own parameters it does not touch).

Per step, on a minibatch of B of the N training samples: (1) one SVI step: sample A's weights w from q, score
`loss = −[log p(y | A_w(x)) + λ·(B/N)·(log p(w) − log q(w))]` (+ the L1/L2 penalty) and take one ClippedAdam
step on ℓ, s and A's BatchNorm; (2) v = A(x) with the posterior mean, then one step of the recipe's optimizer on
C (and the encoders). At evaluation A also uses the posterior mean: ℓ lives in the GMU's own linear weights, so
the ordinary forward, the validation selection and the saved model all use it.

The released code is `fusion_weights: code, kl_batch_scale: false` (its prior, Laplace(1, 1), is the default).

Variants (paper §3.2, Table 2): ELBOv1 = `elbo: trace, kl_scale: 1`; ELBOv2 = `elbo: tracegraph, kl_scale: 1`
(Rao-Blackwellised; with every latent site reparameterised it gives the same estimate as v1); λKL = `elbo: trace,
kl_scale: 0.2` (default; the paper's best system, with `regularizer: l2`). The official code's hand-written ELBO
applies its annealing factor to no site, i.e. it is ELBOv1 (`kl_scale: 1`).

Decisions and differences from the official code (`train_test.py`, `models/pyro_models.py`), and why:
- What predicts. In the released code (Pyro 0.3) `random_module` lifts a deep copy of the GMU, so the posterior
  never reaches the classifier: `self.gmu(...)` runs the original module, whose weights are in the param store
  (registered by `pyro.module`) and are stepped by the next `svi.step`'s ClippedAdam with the BCE gradient the
  classifier's backward left on them. The released system is therefore a GMU trained by the classifier's loss,
  with a variational copy trained beside it and unused. The default follows the paper (A predicts with its
  posterior); `fusion_weights: code` reproduces the code's behaviour (deterministic unit trained by C's loss
  with the recipe's optimizer, without the one-step delay; posterior still trained, unused).
- C is trained on the posterior mean (`classifier_weights: mean`, default), the v it is evaluated on; neither
  the paper nor the code trains it on a weight sample. `classifier_weights: sample` (the SVI step's sample)
  trains it on noise it never sees at evaluation: at initialisation softplus(s) ≈ 0.69 against weights of
  ~1e-3, so v is mostly noise.
- The KL is scaled to the minibatch, × B/N (`kl_batch_scale`, default): the ELBO is over the N training samples
  (paper §3.2) and one minibatch estimates its likelihood part only on B of them, so the KL is paid N/B
  times per epoch without the factor (Pyro's `plate(..., subsample_size=)` / `poutine.scale`). The released
  code omits it (`kl_batch_scale: false`), over-weighting the KL N/B times: ~31× on the synthetic task
  (2000/64) and ~35× on MM-IMDb (its train split over batches of 512).
- Prior Laplace(1, 1), the code's (default). The paper's "µ = 0.1 and σ = 0.01" initialise the learned
  (variational) distributions (the paper's §4.1: "initialised at … Parameters for these distributions are
  learned"), not a fixed prior. Read as a fixed prior (`prior_loc: 0.1, prior_scale: 0.01`) its KL dwarfs the
  likelihood and pulls every weight to 0.1 (measured: `docs/methods/variational.md`).
  The guide keeps the code's initialisation (below).
- What each of these defaults changed, measured on the synthetic grid: `docs/methods/variational.md`.
- The L2 (or L1) penalty `reg_param · Σ p²` on A's point parameters (ℓ and the unit's BatchNorm; ℓ only with
  `fusion_weights: code`) is added to the SVI loss before its backward pass, so it acts on the gradients; the
  code added it to the returned loss value after the step, where it had no effect.
- Likelihood: `bernoulli` (default) is a fix of the code's, Bernoulli(σ(C(v))) per label on multi-label tasks
  (Categorical(C(v)) on single-label ones), scoring the labels through the classifier (C's parameters fixed in
  this step). `code` reproduces the released model, Categorical(logits = σ(v)) observed at the transposed label
  matrix, which only fits hidden units 0 and 1 (on single-label tasks it is observed at the class index).
  Both single- and multi-label tasks are supported; C's loss is the task's (BCE or cross-entropy).
- λKL is a constant factor on the KL terms (the paper does not say whether λ is constant or annealed; our
  choice); `kl_anneal_epochs > 0` ramps it linearly to 1.
- Guide initialisation as in the code: ℓ ~ N(0, 0.001²), s ~ N(0, 0.01²) (so softplus(s) ≈ 0.69).
- The SVI pass normalises with batch statistics but leaves the running statistics to the classifier pass, as in
  the code, where the SVI pass ran on a deep copy of the module.
- The paper's input features are fixed (no encoders); here the encoders learn from C's objective and A sees
  their features detached.
- The code's sigmoid threshold 0.3 for predictions is not applied: thresholds belong to the task's metrics.
- No Pyro global state is used, so nothing leaks between cells: the variational parameters are model
  parameters (ℓ the GMU's weights, s in `extras["pm_mo_posterior"]`, saved with the model selected on
  validation), the model/guide read them directly (no `pyro.param`/`pyro.module`, the param store is never
  touched) and the ELBO is computed from Pyro traces instead of `SVI`/`Trace_ELBO`, which keep parameters in
  the process-wide param store and read the loss back with `.item()` every step. Pyro's validation is switched
  off inside the step for the same reason (its checks synchronise with the device).
"""

from __future__ import annotations

from typing import Literal

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pydantic import Field
from pyro import poutine
from pyro.infer import TraceGraph_ELBO
from pyro.optim.clipped_adam import ClippedAdam
from torch import Tensor, nn
from torch.func import functional_call

from mmbench.api import Balancer, Batch, EpochMeans, ModelOutput, Params, Requirements, TrainContext, hookimpl

EXTRAS_KEY = "pm_mo_posterior"


class PMMOParams(Params):
    elbo: Literal["trace", "tracegraph"] = Field(
        "trace", description="Pyro ELBO estimator: trace (ELBOv1, λKL) or tracegraph (ELBOv2)")
    kl_scale: float = Field(0.2, gt=0.0, le=1.0, json_schema_extra={"search": {"uniform": [0.1, 1.0]}},
                            description="λ on the KL terms (λKL 0.2; 1 = plain ELBO)")
    kl_anneal_epochs: int = Field(0, ge=0, description="ramp λ linearly to 1 over this many epochs (0: constant)")
    prior_loc: float = Field(1.0, description="Laplace prior location (code 1; the paper's 0.1 is the guide's init)")
    prior_scale: float = Field(1.0, gt=0.0, description="Laplace prior scale (code 1; the paper's 0.01 is the "
                                                        "guide's init)")
    kl_batch_scale: bool = Field(
        True, description="scale the KL by B/N, the minibatch's share of the N training samples (an ELBO over the "
                          "data); false = the full KL on every minibatch (released code)")
    likelihood: Literal["bernoulli", "code"] = Field(
        "bernoulli", description="bernoulli: labels through the classifier (fix); code: the released Categorical")
    regularizer: Literal["none", "l1", "l2"] = Field("l2", description="penalty on A's parameters in the SVI loss")
    reg_param: float = Field(0.1, ge=0.0, description="weight of the L1/L2 penalty (paper and code 0.1)")
    svi_lr: float = Field(0.005, gt=0.0, json_schema_extra={"search": {"log_uniform": [0.001, 0.02]}},
                          description="ClippedAdam learning rate of the SVI step (code 0.005)")
    svi_clip: float = Field(10.0, gt=0.0, description="ClippedAdam element-wise gradient clip (Pyro default 10)")
    loc_init_std: float = Field(0.001, ge=0.0, description="std of the normal init of the posterior locations")
    scale_init_std: float = Field(0.01, ge=0.0, description="std of the normal init of the raw posterior scales")
    classifier_weights: Literal["mean", "sample"] = Field(
        "mean", description="A's weights in C's step (fusion_weights: posterior): the posterior mean, which C sees "
                            "at evaluation, or the SVI step's posterior sample")
    classifier_clip_norm: float | None = Field(
        20.0, gt=0.0, description="max gradient norm of C's parameters (code max_norm 20); null: no clipping")
    fusion_weights: Literal["posterior", "code"] = Field(
        "posterior", description="posterior: the GMU predicts with its variational posterior (paper); code: with "
                                 "deterministic weights trained by C's objective, the posterior unused (what the "
                                 "released code effectively does)")


def laplace_prior(like: Tensor, loc: Tensor | float, scale: Tensor | float) -> dist.Laplace:
    """The element-wise prior over a weight tensor shaped like `like`, as one event."""
    loc, scale = torch.as_tensor(loc, dtype=like.dtype, device=like.device), torch.as_tensor(
        scale, dtype=like.dtype, device=like.device)
    return dist.Laplace(loc.expand(like.shape), scale.expand(like.shape), validate_args=False).to_event(like.dim())


def laplace_posterior(loc: Tensor, raw_scale: Tensor) -> dist.Laplace:
    """The variational posterior Laplace(ℓ, softplus(s)) over a weight tensor, as one event."""
    return dist.Laplace(loc, F.softplus(raw_scale), validate_args=False).to_event(loc.dim())


def site_terms(value: Tensor, loc: Tensor, raw_scale: Tensor, prior_loc: float, prior_scale: float,
               kl_scale: float = 1.0) -> tuple[Tensor, Tensor, Tensor]:
    """(log p(w), log q(w), λ·(log p − log q)) of one weight site: its contribution to the single-sample ELBO."""
    log_p = laplace_prior(value, prior_loc, prior_scale).log_prob(value)
    log_q = laplace_posterior(loc, raw_scale).log_prob(value)
    return log_p, log_q, kl_scale * (log_p - log_q)


def _random_parameters(unit: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """(name within the unit, parameter) of every linear layer's weight and bias: A's random variables."""
    found = []
    for module_name, module in unit.named_modules():
        if isinstance(module, nn.Linear):
            found += [(f"{module_name}.{name}", p) for name, p in module.named_parameters(recurse=False)]
    return found


class PosteriorParameters(nn.Module):
    """The variational parameters that live outside the fusion: raw scales s (and, for `fusion_weights: code`,
    the locations ℓ), one tensor per random weight of the GMU unit."""

    def __init__(self, random: list[tuple[str, nn.Parameter]], own_locations: bool, loc_std: float,
                 scale_std: float) -> None:
        super().__init__()
        self.scales = nn.ParameterList([nn.Parameter(torch.randn_like(p) * scale_std) for _, p in random])
        self.locs = nn.ParameterList(
            [nn.Parameter(torch.randn_like(p) * loc_std) for _, p in random] if own_locations else [])


class PMMO(Balancer):
    """PM+MO: variational GMU trained by SVI (Pyro) + maxout classifier trained by the task loss."""

    name = "pm_mo"
    Params = PMMOParams
    params: PMMOParams
    requires = Requirements(fusions=frozenset({"gmu"}), max_modalities=2)
    # the paper's best system (Table 1, PM+MO λKL + L2; §4.1) with the code's initial_values.json, on MM-IMDb's
    # processed features (multimodal_imdb.hdf5, the task `mmimdb_features`); the matching gmu settings: its docstring
    task_defaults = {"mmimdb_features": {"elbo": "trace", "kl_scale": 0.2, "regularizer": "l2", "reg_param": 0.1,
                                         "svi_lr": 0.005, "classifier_clip_norm": 20.0}}

    def setup(self, ctx: TrainContext) -> None:
        fusion = ctx.model.fusion
        unit, classifier = getattr(fusion, "unit", None), getattr(fusion, "classifier", None)
        if not (isinstance(unit, nn.Module) and isinstance(classifier, nn.Module)):
            raise TypeError(f"pm_mo needs the gmu fusion (a unit and a classifier), got {type(fusion).__name__}")
        p = self.params
        self.unit, self.classifier = unit, classifier
        self.multilabel = bool(ctx.task.multilabel)
        self.random = _random_parameters(self.unit)
        if p.likelihood == "code" and not self.multilabel and ctx.task.num_classes > self.random[0][1].shape[0]:
            raise ValueError(f"pm_mo likelihood 'code' indexes {ctx.task.num_classes} classes into "
                             f"{self.random[0][1].shape[0]} hidden units; use a wider gmu or 'bernoulli'")
        self.in_fusion = p.fusion_weights == "posterior"
        posterior = PosteriorParameters(self.random, not self.in_fusion, p.loc_init_std, p.scale_init_std)
        ctx.model.extras[EXTRAS_KEY] = posterior  # saved with the model; stepped by the SVI optimizer only
        self.scales = list(posterior.scales)
        if self.in_fusion:  # ℓ are the GMU's own linear weights, so the ordinary forward uses the posterior mean
            self.locs = [w for _, w in self.random]
            with torch.no_grad():
                for w in self.locs:
                    w.normal_(0.0, p.loc_init_std)
            self.point = list(self.unit.parameters())  # ℓ and the unit's BatchNorm
        else:
            self.locs = list(posterior.locs)
            self.point = self.locs
        # built once: creating device tensors from Python scalars every step would wait on the device
        self.priors = [laplace_prior(w, p.prior_loc, p.prior_scale) for _, w in self.random]
        self.svi_optimizer = ClippedAdam([*self.point, *self.scales], lr=p.svi_lr,
                                         clip_norm=p.svi_clip)
        self.kl = p.kl_scale
        self.n_train = ctx.train_size
        self._sample: dict[str, Tensor] = {}
        self._nll = torch.zeros((), device=ctx.device)
        self.stats = EpochMeans()

    # ------------------------------------------------------------------ the Pyro model and guide over A

    def _unit_forward(self, weights: dict[str, Tensor], features: dict[str, Tensor]) -> Tensor:
        """A(x) with the given weights; the running statistics of its BatchNorm are left untouched."""
        overrides = {} if self.in_fusion else {n: w.detach() for n, w in self.unit.named_parameters()}
        overrides.update(weights)
        overrides.update({name: b.clone() for name, b in self.unit.named_buffers()})
        return functional_call(self.unit, overrides, (features,))[0]

    def model(self, features: dict[str, Tensor], y: Tensor) -> None:
        weights = {}
        for (name, _), prior in zip(self.random, self.priors):
            with poutine.scale(scale=self._kl_weight):
                weights[name] = pyro.sample(f"gmu.{name}", prior)
        v = self._unit_forward(weights, features)
        if self.params.likelihood == "bernoulli":
            frozen = {name: w.detach() for name, w in self.classifier.named_parameters()}
            frozen.update({name: b.clone() for name, b in self.classifier.named_buffers()})
            logits = functional_call(self.classifier, frozen, (v,))
            if self.multilabel:
                likelihood, obs = dist.Bernoulli(logits=logits, validate_args=False).to_event(1), y.float()
            else:
                likelihood, obs = dist.Categorical(logits=logits, validate_args=False), y
        else:  # the released model: an H-way categorical over σ(v), observed at the (transposed) labels
            likelihood = dist.Categorical(logits=torch.sigmoid(v), validate_args=False)
            obs = (y.t() if self.multilabel else y).long()
        self._nll = -likelihood.log_prob(obs).sum().detach()
        pyro.sample("obs", likelihood, obs=obs)

    def guide(self, features: dict[str, Tensor], y: Tensor) -> None:
        for (name, _), loc, raw in zip(self.random, self.locs, self.scales):
            with poutine.scale(scale=self._kl_weight):
                self._sample[name] = pyro.sample(f"gmu.{name}", laplace_posterior(loc, raw))

    def elbo_loss(self, features: dict[str, Tensor], y: Tensor) -> Tensor:
        """The single-sample negative ELBO of one minibatch (a differentiable surrogate with the same value)."""
        self._kl_weight = self.kl * (len(y) / self.n_train if self.params.kl_batch_scale else 1.0)
        with pyro.validation_enabled(False):
            if self.params.elbo == "trace":
                guide_trace = poutine.trace(self.guide).get_trace(features, y)
                model_trace = poutine.trace(poutine.replay(self.model, trace=guide_trace)).get_trace(features, y)
                loss = guide_trace.log_prob_sum() - model_trace.log_prob_sum()
                if not isinstance(loss, Tensor):  # Pyro's sum over no sample site is the float 0
                    raise RuntimeError("pm_mo's ELBO traces hold no sample site")
                return loss
            _, surrogate = TraceGraph_ELBO()._loss_and_surrogate_loss(self.model, self.guide, (features, y), {})
            return surrogate

    def penalty(self) -> Tensor:
        """`reg_param · Σ p²` (or `Σ |p|`) over A's point parameters (ℓ, and the unit's BatchNorm)."""
        if self.params.regularizer == "none":
            return torch.zeros((), device=self.point[0].device)
        terms = [w.pow(2).sum() if self.params.regularizer == "l2" else w.abs().sum() for w in self.point]
        return self.params.reg_param * sum(terms[1:], start=terms[0])

    def svi_step(self, features: dict[str, Tensor], y: Tensor) -> tuple[Tensor, Tensor]:
        """One SVI update of A (penalty included in the gradient); returns the detached −ELBO and penalty."""
        self.svi_optimizer.zero_grad(set_to_none=True)
        loss = self.elbo_loss(features, y)
        penalty = self.penalty()
        (loss + penalty).backward()
        self.svi_optimizer.step()
        self.svi_optimizer.zero_grad(set_to_none=True)
        return loss.detach(), penalty.detach()

    # ------------------------------------------------------------------------------ engine hooks

    def on_epoch_start(self, ctx: TrainContext) -> None:
        anneal, base = self.params.kl_anneal_epochs, self.params.kl_scale
        self.kl = base if anneal == 0 else min(1.0, base + (1.0 - base) * ctx.epoch / anneal)

    def classifier_input(self, features: dict[str, Tensor]) -> Tensor:
        """v for C's step: A with its parameters held fixed (posterior), or the deterministic unit (code)."""
        if not self.in_fusion:
            return self.unit(features)[0]
        fixed = {name: w.detach() for name, w in self.unit.named_parameters()}
        if self.params.classifier_weights == "sample":
            fixed.update({name: w.detach() for name, w in self._sample.items()})
        return functional_call(self.unit, fixed, (features,))[0]

    def train_step(self, ctx: TrainContext, batch: Batch) -> tuple[Tensor, ModelOutput]:
        y = batch.label
        with ctx.autocast():
            features = ctx.model.encode(batch.inputs)
        elbo, penalty = self.svi_step({m: z.detach().float() for m, z in features.items()}, y)

        ctx.optimizer.zero_grad(set_to_none=True)
        with ctx.autocast():
            logits = self.classifier(self.classifier_input(features))
            loss = ctx.task_loss(logits, y)
        loss.backward()
        if self.params.classifier_clip_norm is not None:
            nn.utils.clip_grad_norm_(self.classifier.parameters(), self.params.classifier_clip_norm)
        ctx.optimizer.step()

        for name, value in (("elbo_loss", elbo), ("nll", self._nll), ("penalty", penalty)):
            self.stats.add(name, value)
        return loss.detach(), ModelOutput(logits, features)

    def coefficients(self) -> dict[str, float]:
        out = self.stats.read()
        out["kl"] = out["elbo_loss"] - out["nll"]  # λ·(B/N)·(log q − log p) over A's weights, one sample
        with torch.no_grad():
            scales = torch.cat([F.softplus(s).flatten() for s in self.scales])
            locs = torch.cat([w.flatten() for w in self.locs])
        out.update(kl_scale=float(self.kl), posterior_scale=float(scales.mean()),
                   posterior_loc=float(locs.mean()))
        return out


@hookimpl
def mmbench_balancers() -> list[type[Balancer]]:
    return [PMMO]
