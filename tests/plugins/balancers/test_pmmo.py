"""PM+MO: worked vectors (one weight site's log-prior, log-posterior and ELBO term under the official code's
distributions, JasonArmitage-res/PM-MO @ 3c2ad7a747d4, and a GMU and maxout by hand, computed independently in
numpy), the two objectives' separation, the ELBO, Pyro state, end to end on `gmu`."""

import contextlib
import dataclasses
import math
from types import SimpleNamespace

import pyro
import pytest
import torch
import torch.nn.functional as F

from mmbench.contract.batch import Batch
from mmbench.contract.task import ModalitySpec
from mmbench.running.cells import incompatibility
from mmbench.schema.recipe import OptimizerConfig, TrainRecipe
from mmbench.testing import tiny_components
from mmbench.training.engine import task_loss_fn, train
from mmbench.training.model import MultimodalModel
from mmbench.training.optim import build_optimizer
from mmbench_plugins.balancers.pmmo import EXTRAS_KEY, PMMO, laplace_posterior, site_terms
from mmbench_plugins.encoders.mlp import MLPEncoder, MLPParams
from mmbench_plugins.fusions.concat import ConcatFusion
from mmbench_plugins.fusions.gmu import GMUFusion, GMUParams, Maxout, gated_mix

W, LOC, RAW = torch.tensor(0.02), torch.tensor(0.001), torch.tensor(0.005)
N_TRAIN = 64  # training samples of the hand-built cell (its minibatches hold 16)


def test_site_terms_match_worked_vector():
    assert float(F.softplus(RAW)) == pytest.approx(0.695650, rel=1e-5)
    log_p, log_q, contribution = site_terms(W, LOC, RAW, prior_loc=1.0, prior_scale=1.0)
    assert float(log_p) == pytest.approx(-1.67315, rel=1e-5)
    assert float(log_q) == pytest.approx(-0.357552, rel=1e-5)
    assert float(contribution) == pytest.approx(-1.31560, rel=1e-5)
    assert float(site_terms(W, LOC, RAW, 1.0, 1.0, kl_scale=0.2)[2]) == pytest.approx(-0.263119, rel=1e-5)
    assert float(site_terms(W, LOC, RAW, prior_loc=0.1, prior_scale=0.01)[0]) == pytest.approx(-4.08798, rel=1e-5)


def test_gmu_and_maxout_match_worked_vectors():
    v, z = gated_mix(torch.tensor([1.0, 0.5]), torch.tensor([0.3, -0.2]), torch.tensor([0.0, 2.0]), output_tanh=True)
    torch.testing.assert_close(v, torch.tensor([0.482665, 0.365746]), rtol=1e-5, atol=0)
    torch.testing.assert_close(z, torch.tensor([0.5, 0.880797]), rtol=1e-5, atol=0)
    layer = Maxout(1, 2, 3)
    with torch.no_grad():
        layer.linear.weight.copy_(torch.tensor([[0.1], [-0.3], [0.4], [-0.5], [-0.2], [0.2]]))
        layer.linear.bias.zero_()
    torch.testing.assert_close(layer(torch.ones(1, 1)), torch.tensor([[0.4, 0.2]]), rtol=1e-5, atol=0)


# ----------------------------------------------------------------------------------- a hand-built cell

def _cell(multilabel=False, gmu=None, **params):
    torch.manual_seed(0)
    encoders = {m: MLPEncoder(ModalitySpec(m, "vector", (5,)), MLPParams(hidden=8, layers=1, out_dim=6))
                for m in ("a", "b")}
    fusion = GMUFusion({"a": 6, "b": 6}, 3, gmu or GMUParams(hidden=8, dropout=0.0))
    model = MultimodalModel(encoders, fusion, 3)
    task = SimpleNamespace(multilabel=multilabel, num_classes=3)
    ctx = SimpleNamespace(model=model, task=task, device=torch.device("cpu"), epoch=0,
                          train_size=N_TRAIN,
                          optimizer=build_optimizer(OptimizerConfig(name="adam", lr=0.01), model.parameter_groups()),
                          task_loss=task_loss_fn(multilabel), autocast=contextlib.nullcontext)
    bal = PMMO(PMMO.Params(**params))
    bal.setup(ctx)
    bal.on_epoch_start(ctx)
    return bal, ctx


def _batch(n=16, multilabel=False, seed=1):
    gen = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 3, (n,), generator=gen)
    inputs = {m: torch.randn(n, 5, generator=gen) + y[:, None].float() for m in ("a", "b")}
    return Batch(inputs, F.one_hot(y, 3).float() if multilabel else y)


def _features(bal, ctx, batch):
    with torch.no_grad():
        return {m: z.detach() for m, z in ctx.model.encode(batch).items()}


@pytest.mark.parametrize("params, kl_weight", [
    ({}, 0.3 * 16 / N_TRAIN),  # the KL scaled to the minibatch: B/N = 16/64
    ({"kl_batch_scale": False}, 0.3),  # the released code: the full KL on every minibatch
])
def test_elbo_is_prior_minus_posterior_plus_likelihood_from_the_guide_sample(params, kl_weight):
    bal, ctx = _cell(kl_scale=0.3, prior_loc=0.1, prior_scale=0.5, **params)
    batch = _batch()
    feats = _features(bal, ctx, batch)
    loss = bal.elbo_loss(feats, batch["label"])
    kl = 0.0
    for (name, _), loc, raw in zip(bal.random, bal.locs, bal.scales):
        log_p, log_q, _ = site_terms(bal._sample[name], loc, raw, 0.1, 0.5)
        kl = kl + kl_weight * (log_q - log_p)
    weights = {n: w for n, w in bal._sample.items()}
    v = torch.func.functional_call(bal.unit, {**weights, **{n: b.clone() for n, b in bal.unit.named_buffers()}},
                                   (feats,))[0]
    nll = F.cross_entropy(bal.classifier(v), batch["label"], reduction="sum")
    torch.testing.assert_close(loss, kl + nll, rtol=1e-5, atol=1e-3)
    torch.testing.assert_close(bal._nll, nll.detach(), rtol=1e-5, atol=1e-4)


def test_default_prior_is_the_codes_laplace_1_1():
    # the paper's µ = 0.1, σ = 0.01 initialise the guide; the fixed prior is the code's Laplace(1, 1)
    bal, _ = _cell()
    log_p = bal.priors[0].base_dist.log_prob(W.expand_as(bal.random[0][1]))
    torch.testing.assert_close(log_p, torch.full_like(log_p, -1.67315), rtol=1e-5, atol=0)


def test_classifier_is_trained_on_the_posterior_mean_it_is_evaluated_on():
    bal, ctx = _cell()
    batch = _batch()
    feats = _features(bal, ctx, batch)
    sample_bal, _ = _cell(classifier_weights="sample")
    for b in (bal, sample_bal):
        b.svi_step(feats, batch["label"])  # leaves a weight sample behind
    with torch.no_grad():
        torch.testing.assert_close(bal.classifier_input(feats), bal.unit(feats)[0])
        assert not torch.allclose(sample_bal.classifier_input(feats), sample_bal.unit(feats)[0])


def test_trace_and_tracegraph_agree_for_reparameterised_sites():
    batch = _batch()
    losses = []
    for elbo in ("trace", "tracegraph"):
        bal, ctx = _cell(elbo=elbo)
        feats = _features(bal, ctx, batch)
        torch.manual_seed(5)
        losses.append(bal.elbo_loss(feats, batch["label"]))
    torch.testing.assert_close(losses[0], losses[1])


def test_l2_penalty_reaches_the_gradients():
    batch = _batch()
    grads = {}
    for reg in ("none", "l2"):
        bal, ctx = _cell(regularizer=reg, reg_param=5.0, prior_loc=0.0, prior_scale=1.0)
        feats = _features(bal, ctx, batch)
        torch.manual_seed(7)
        (bal.elbo_loss(feats, batch["label"]) + bal.penalty()).backward()
        grads[reg] = [w.grad.clone() for w in bal.locs]
        locs = [w.detach().clone() for w in bal.locs]
    for g_none, g_l2, loc in zip(grads["none"], grads["l2"], locs):
        torch.testing.assert_close(g_l2 - g_none, 2 * 5.0 * loc, rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("likelihood", ["bernoulli", "code"])
@pytest.mark.parametrize("prior, kl_scale, ratio", [((0.1, 0.01), 0.2, 0.5), ((0.0, 1.0), 1.0, 0.9)])
def test_elbo_decreases_on_a_toy_problem(likelihood, prior, kl_scale, ratio):
    """SVI alone on fixed features, full KL per minibatch: a narrow prior (KL-dominated) and a wide one."""
    bal, ctx = _cell(likelihood=likelihood, prior_loc=prior[0], prior_scale=prior[1], kl_scale=kl_scale,
                     svi_lr=0.02, kl_batch_scale=False)
    batch = _batch(32)
    feats = _features(bal, ctx, batch)
    torch.manual_seed(0)
    losses = torch.stack([bal.svi_step(feats, batch["label"])[0] for _ in range(100)])
    assert bool(torch.isfinite(losses).all())
    assert float(losses[-10:].mean()) < ratio * float(losses[:10].mean())


def _snapshot(params):
    return [p.detach().clone() for p in params]


def _changed(before, params):
    return [not torch.equal(b, p.detach()) for b, p in zip(before, params)]


@pytest.mark.parametrize("multilabel", [False, True])
def test_each_objective_steps_only_its_own_module(multilabel):
    bal, ctx = _cell(multilabel=multilabel)
    batch = _batch(multilabel=multilabel)
    unit, classifier = list(bal.unit.parameters()), list(bal.classifier.parameters())
    scales, encoders = bal.scales, list(ctx.model.encoders.parameters())
    u0, c0, s0, e0 = _snapshot(unit), _snapshot(classifier), _snapshot(scales), _snapshot(encoders)

    bal.svi_step(_features(bal, ctx, batch), batch["label"])
    assert all(_changed(u0, unit)) and all(_changed(s0, scales))  # A: locations, BatchNorm, scales
    assert not any(_changed(c0, classifier)) and not any(_changed(e0, encoders))

    loss, out = bal.train_step(ctx, batch)
    assert math.isfinite(float(loss)) and out.logits.shape == (16, 3)
    assert all(_changed(c0, classifier)) and any(_changed(e0, encoders))  # C and the encoders learn from C's loss
    assert all(p.grad is None for p in unit)  # C's backward leaves nothing on A for a later step to consume


def test_classifier_step_does_not_touch_a():
    bal, ctx = _cell()
    batch = _batch()
    bal.svi_step(_features(bal, ctx, batch), batch["label"])
    unit = list(bal.unit.parameters())
    before = _snapshot(unit)
    ctx.optimizer.zero_grad(set_to_none=True)
    logits = bal.classifier(bal.classifier_input(ctx.model.encode(batch)))
    ctx.task_loss(logits, batch["label"]).backward()
    ctx.optimizer.step()
    assert all(p.grad is None for p in unit) and not any(_changed(before, unit))


def test_posterior_mean_is_the_fusions_weights_and_is_saved():
    bal, ctx = _cell()
    linear_weights = [p for _, p in bal.random]
    assert all(a is b for a, b in zip(bal.locs, linear_weights))
    assert abs(float(torch.cat([w.detach().flatten() for w in bal.locs]).std()) - 0.001) < 5e-4
    state = ctx.model.state_dict()
    assert f"extras.{EXTRAS_KEY}.scales.0" in state
    q = laplace_posterior(bal.locs[0], bal.scales[0])
    torch.testing.assert_close(q.mean, bal.locs[0])


def test_code_mode_predicts_with_deterministic_weights_trained_by_the_classifier():
    bal, ctx = _cell(fusion_weights="code")
    assert not any(a is b for a, (_, b) in zip(bal.locs, bal.random))
    batch = _batch()
    linear = [p for _, p in bal.random]
    lin0, loc0 = _snapshot(linear), _snapshot(bal.locs)
    bal.train_step(ctx, batch)
    assert all(_changed(lin0, linear)) and all(_changed(loc0, bal.locs))


def test_no_pyro_param_store_state_and_repeatable_cells():
    store_before = dict(pyro.get_param_store().items())
    outs = [_train(epochs=2) for _ in range(2)]
    assert dict(pyro.get_param_store().items()).keys() == store_before.keys()
    assert [e.coefficients for e in outs[0].history] == [e.coefficients for e in outs[1].history]


def _train(epochs=2, **params):
    components = dataclasses.replace(tiny_components(PMMO, balancer_params=params),
                                     fusion=(GMUFusion, GMUParams(hidden=16)))
    recipe = TrainRecipe(epochs=epochs, batch_size=32, device="cpu", optimizer=OptimizerConfig(name="adamw", lr=0.005))
    return train(components, recipe, seed=0)


@pytest.mark.parametrize("params", [{}, {"elbo": "tracegraph", "kl_scale": 1.0}, {"fusion_weights": "code"}])
def test_end_to_end_on_gmu(params):
    out = _train(**params)
    assert out.status == "ok" and all(math.isfinite(e.train_loss) for e in out.history)
    for epoch in out.history:
        c = epoch.coefficients
        assert {"elbo_loss", "nll", "kl", "penalty", "kl_scale", "posterior_scale"} <= set(c)
        assert all(isinstance(v, float) and math.isfinite(v) for v in c.values())
    assert out.history[1].coefficients["posterior_scale"] != out.history[0].coefficients["posterior_scale"]


def test_requires_gmu_fusion_and_two_modalities():
    components = tiny_components(PMMO)
    encoders = {m: cls for m, (cls, _) in components.encoders.items()}
    assert "gmu" in incompatibility(PMMO, components.task, encoders, ConcatFusion)
    assert incompatibility(PMMO, components.task, encoders, GMUFusion) is None
    assert PMMO.requires.max_modalities == 2
