"""Greedy (balanced multi-modal learning): a worked BDR vector (the bookkeeping of the official
`src/callbacks.py::Bias_Mitigation_Strong`, nyukat/greedy_multimodal_learning @ a190e03755bd, computed in numpy),
the curation state machine, which parameters form each group, the bypass mode driven by the balancer, end-to-end
training."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

from mmbench.contract.batch import Batch
from mmbench.contract.context import TrainContext
from mmbench.contract.errors import Incompatible
from mmbench.running.cells import incompatibility
from mmbench.schema.recipe import OptimizerConfig, TrainRecipe
from mmbench.testing import tiny_components, tiny_context
from mmbench.training.engine import build_model, train
from mmbench.training.evaluation import evaluate
from mmbench_plugins.balancers.greedy import Greedy, GreedyState, guided_step, learning_speed, random_step
from mmbench_plugins.encoders.mlp import MLPEncoder
from mmbench_plugins.fusions.concat import ConcatFusion
from mmbench_plugins.fusions.mmtm import MMTMFusion

RTOL = 1e-5
# per step (Σ‖∇θ‖², Σ‖θ‖²) for (bypass_0, bypass_1, main_0, main_1)
STEP0 = ([2e-4, 1e-4, 4e-3, 6e-3], [50.0, 50.0, 400.0, 400.0])
STEP1 = ([3e-4, 1e-4, 3e-3, 5e-3], [50.1, 50.1, 400.5, 400.4])


def _t(values) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


def test_worked_vector_bdr_bookkeeping():
    sums = torch.zeros(4, dtype=torch.float64)
    sums, bdr, d = learning_speed(sums, _t(STEP0[0]), _t(STEP0[1]))
    torch.testing.assert_close(sums, _t([4e-06, 2e-06, 1e-05, 1.5e-05]), rtol=RTOL, atol=0)
    torch.testing.assert_close(bdr, _t([-0.397940, -0.875061]), rtol=RTOL, atol=0)
    assert float(d) == pytest.approx(0.477121, rel=RTOL)
    sums, bdr, d = learning_speed(sums, _t(STEP1[0]), _t(STEP1[1]))
    torch.testing.assert_close(sums, _t([9.98802e-06, 3.99601e-06, 1.74906e-05, 2.74875e-05]), rtol=RTOL, atol=0)
    torch.testing.assert_close(bdr, _t([-0.243326, -0.837509]), rtol=RTOL, atol=0)
    assert float(d) == pytest.approx(0.594183, rel=RTOL)


def test_worked_vector_decisions_and_frozen_sums_while_curating():
    state = GreedyState.initial(torch.device("cpu"))
    state = guided_step(state, _t(STEP0[0]), _t(STEP0[1]), epsilon=0.01, window=5, unlocked=True)
    assert bool(state.curating) and int(state.caring) == 0  # d = 0.477 > ε -> care for modality 0
    assert state.mask().tolist() == [True, False]
    state = guided_step(state, _t(STEP1[0]), _t(STEP1[1]), epsilon=0.01, window=5, unlocked=True)
    # already curating: M is not updated (the worked step-1 values are what it would have computed)
    torch.testing.assert_close(state.sums, _t([4e-06, 2e-06, 1e-05, 1.5e-05]), rtol=RTOL, atol=0)
    assert float(state.d) == pytest.approx(0.477121, rel=RTOL)


def test_window_negative_direction_threshold_and_lock():
    state = GreedyState.initial(torch.device("cpu"))
    weights = _t([1.0, 1.0, 1.0, 1.0])
    slow_bypass_1 = _t([1e-4, 1e-2, 1e-3, 1e-3])  # BDR_0 < BDR_1 -> d < 0 -> care for modality 1
    pattern = []
    for _ in range(8):
        state = guided_step(state, slow_bypass_1, weights, epsilon=0.01, window=3, unlocked=True)
        pattern.append(state.mask().tolist())
    # a decision at step t covers the forwards t+1..t+Q; the step after a window re-evaluates d
    on, off = [False, True], [False, False]
    assert pattern == [on, on, on, off, on, on, on, off]
    assert int(state.caring) == 1 and float(state.d) < 0
    balanced = GreedyState.initial(torch.device("cpu"))
    balanced = guided_step(balanced, _t([1e-3] * 4), weights, epsilon=0.01, window=3, unlocked=True)
    assert not bool(balanced.curating) and float(balanced.d) == 0.0  # |d| ≤ ε
    locked = GreedyState.initial(torch.device("cpu"))
    for _ in range(3):
        locked = guided_step(locked, slow_bypass_1, weights, epsilon=0.01, window=3, unlocked=False)
    assert not bool(locked.curating)
    torch.testing.assert_close(locked.sums, 3 * slow_bypass_1)  # the sums accumulate while locked


def test_safeguard_keeps_d_finite_without_gradients():
    state = GreedyState.initial(torch.device("cpu"))
    state = guided_step(state, _t([0.0, 0.0, 0.0, 0.0]), _t([0.0, 1.0, 1.0, 1.0]), 0.01, 5, True)
    assert math.isfinite(float(state.d)) and not bool(state.curating)


def test_random_mode_choices():
    state = GreedyState.initial(torch.device("cpu"))
    g, w = _t(STEP0[0]), _t(STEP0[1])
    for choice, mask in [(0, [False, False]), (1, [False, True]), (2, [True, False])]:
        assert random_step(state, g, w, torch.tensor(choice), unlocked=True).mask().tolist() == mask
    assert random_step(state, g, w, torch.tensor(2), unlocked=False).mask().tolist() == [False, False]


# ----------------------------------------------------------------------------------- on a model


def _components(params: dict | None = None):
    return dataclasses.replace(tiny_components(Greedy, balancer_params=params or {}),
                               fusion=(MMTMFusion, MMTMFusion.Params()))


def _context(params: dict | None = None):
    return tiny_context(_components(params), epochs=3)


def _sq(tensors) -> float:
    return sum(float((t.detach().double() ** 2).sum()) for t in tensors)


def test_loss_is_sum_of_branch_losses_and_groups_are_by_module():
    balancer, ctx, batch = _context()
    model, fusion = ctx.model, ctx.model.fusion
    out = model(batch)
    loss = balancer.loss(ctx, batch, out)
    heads = fusion.branch_logits(out.features)
    expected = F.cross_entropy(heads["fast"], batch["label"]) + F.cross_entropy(heads["slow"], batch["label"])
    torch.testing.assert_close(loss, expected)
    loss.backward()
    grad_sq, weight_sq = balancer.group_norms()
    mods = list(fusion.mmtm)
    assert len(mods) == 2  # tiny mlp encoders: 2 blocks each, so 2 of the 3 default positions
    squeeze = [t for mod in mods for t in (mod.fc_squeeze.weight, mod.fc_squeeze.bias)]
    for i, m in enumerate(("fast", "slow")):
        bypass = squeeze + [t for mod in mods for t in (mod.fc_gate[i].weight, mod.fc_gate[i].bias)]
        main = [*model.encoders[m].parameters(), *fusion.classifiers[m].parameters()]
        assert float(grad_sq[i]) == pytest.approx(_sq(p.grad for p in bypass), rel=1e-6)
        assert float(weight_sq[i]) == pytest.approx(_sq(bypass), rel=1e-6)
        assert float(grad_sq[2 + i]) == pytest.approx(_sq(p.grad for p in main), rel=1e-6)
        assert float(weight_sq[2 + i]) == pytest.approx(_sq(main), rel=1e-6)


def test_after_backward_switches_the_next_forward_to_bypass_mode():
    balancer, ctx, batch = _context({"epsilon": 0.0})
    model, fusion = ctx.model, ctx.model.fusion
    ctx.epoch = 1
    balancer.on_epoch_start(ctx)  # starting_epoch 2 (1-indexed) = ctx.epoch 1
    assert balancer.unlocked
    out = model(batch)
    balancer.loss(ctx, batch, out).backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    balancer.after_backward(ctx, batch, out)
    for n, p in model.named_parameters():  # it only reads the gradients
        if n in grads:
            assert torch.equal(p.grad, grads[n])
    caring = int(balancer.state.caring)
    assert fusion.curation.tolist() == [caring == 0, caring == 1]
    ctx.optimizer.zero_grad(set_to_none=True)
    out = model(batch)
    balancer.loss(ctx, batch, out).backward()
    cared, other = fusion.order[caring], fusion.order[1 - caring]
    assert all(torch.count_nonzero(p.grad) == 0 for p in fusion.gate_parameters(cared) )
    assert any(torch.count_nonzero(p.grad) > 0 for p in fusion.gate_parameters(other))
    # the cared-for branch no longer depends on the other modality's input
    changed = {**batch, other: batch[other] + 1.0}
    model.eval()
    fusion.curate_in_eval = True
    assert torch.equal(model.encode(batch)[cared], model.encode(changed)[cared])


def test_official_flags_reach_the_fusion_and_requirements():
    balancer, ctx, _ = _context({"curate_in_eval": True, "track_eval": True, "shared_gate_mean": True})
    fusion = ctx.model.fusion
    assert fusion.curate_in_eval and fusion.track_eval and fusion.shared_gate_mean
    components = _components()
    encoders = {m: cls for m, (cls, _) in components.encoders.items()}
    assert incompatibility(Greedy, components.task, encoders, MMTMFusion) is None
    assert "supports fusions" in incompatibility(Greedy, components.task, encoders, ConcatFusion)
    concat = tiny_components(Greedy, fusion="concat")
    model = build_model(concat, Greedy(Greedy.Params()))
    ctx.model = model
    with pytest.raises(Incompatible, match="mmtm"):
        Greedy(Greedy.Params()).setup(ctx)


@pytest.mark.parametrize("track_eval", [False, True])
def test_evaluation_tracks_gates_once_per_batch_in_the_all_modality_pass(track_eval):
    """The engine's evaluation runs each batch 5 times (all modalities, each dropped, each alone); with
    `track_eval` only the all-modality forward counts, one update per batch as in the official evaluation."""
    balancer, ctx, batch = _context({"track_eval": track_eval})
    model, fusion = ctx.model, ctx.model.fusion
    loader = [Batch({m: x[:16] for m, x in batch.inputs.items()}, batch.label[:16]),
              Batch({m: x[16:] for m, x in batch.inputs.items()}, batch.label[16:])]
    inputs = {mod: [] for mod in fusion.mmtm}
    hooks = [mod.register_forward_pre_hook(lambda mod, args: inputs[mod].append(args[0])) for mod in fusion.mmtm]
    model.eval()
    fusion.track_eval = False
    with torch.no_grad():
        for b in loader:
            model.encode(b.inputs)  # records each MMTM's inputs in the all-modality forward, tracks nothing
    for h in hooks:
        h.remove()
    fusion.track_eval = track_eval
    assert all(float(mod.count) == 0 for mod in fusion.mmtm)
    evaluate(ctx.model, ctx, balancer, loader)
    for mod in fusion.mmtm:
        assert float(mod.count) == (2 if track_eval else 0)
        gates = [mod.gates([mod.squeeze(x) for x in xs]) for xs in inputs[mod]]
        for i, mean in enumerate(mod.gate_means()):
            expected = torch.stack([g[i].mean(0) for g in gates]).mean(0) if track_eval else torch.zeros_like(mean)
            torch.testing.assert_close(mean, expected)


def test_groups_are_complete_right_after_build_model():
    """`bind` sizes the MMTMs in `build_model`: setup sees every gate and squeeze layer before any forward."""
    balancer, ctx, _ = _context()
    fusion = ctx.model.fusion
    optimized = {id(p) for group in ctx.optimizer.param_groups for p in group["params"]}
    expected = {id(p) for mod in fusion.mmtm for p in mod.parameters()}
    assert len(expected) == 2 * (2 + 2 * 2)  # 2 MMTMs x (squeeze + 2 gates) x (weight, bias)
    grouped = [*balancer.shared_params, *balancer.gate_params[0], *balancer.gate_params[1]]
    assert {id(p) for p in grouped} == expected and expected <= optimized
    assert all(p.numel() > 0 for p in grouped)
    _, weight_sq = balancer.group_norms()
    assert all(float(w) > 0 for w in weight_sq)  # every group already has weights before the first forward


def test_shared_gate_mean_with_unequal_widths_is_incompatible_at_setup():
    components = dataclasses.replace(
        _components({"shared_gate_mean": True}),
        encoders={"fast": (MLPEncoder, MLPEncoder.Params(hidden=16, layers=2, out_dim=8)),
                  "slow": (MLPEncoder, MLPEncoder.Params(hidden=12, layers=2, out_dim=8))})
    balancer = Greedy(Greedy.Params(shared_gate_mean=True))
    model = build_model(components, balancer)
    ctx = TrainContext(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1), task=components.task,
                       device=torch.device("cpu"), epochs=1, train_loader=[], val_loader=[],
                       task_loss=F.cross_entropy, evaluate=None)
    with pytest.raises(Incompatible, match=r"equal MMTM widths; got \[\(16, 12\)\]"):
        balancer.setup(ctx)


def _train(params: dict, epochs: int = 2):
    recipe = TrainRecipe(epochs=epochs, batch_size=32, device="cpu", optimizer=OptimizerConfig(name="sgd", lr=0.1))
    return train(_components(params), recipe, seed=0)


@pytest.mark.parametrize("mode", ["guided", "random"])
def test_train_tiny(mode):
    outcome = _train({"mode": mode})
    assert outcome.status == "ok" and len(outcome.history) == 2
    first, second = (s.coefficients for s in outcome.history)
    for stats in outcome.history:
        assert math.isfinite(stats.train_loss)
        assert {"bdr.fast", "bdr.slow", "d_bdr", "curation_fraction", "curation_fraction.fast",
                "curation_fraction.slow", "unlocked", "gate_mean.fast", "gate_mean.slow"} <= set(stats.coefficients)
        assert all(math.isfinite(v) for v in stats.coefficients.values())
    assert first["unlocked"] == 0.0 and first["curation_fraction"] == 0.0  # epoch 1: normal training
    assert second["unlocked"] == 1.0 and second["curation_fraction"] > 0.0
    assert second["curation_fraction"] == pytest.approx(
        second["curation_fraction.fast"] + second["curation_fraction.slow"])
    assert second["d_bdr"] == pytest.approx(second["bdr.fast"] - second["bdr.slow"])


def test_train_tiny_with_utilisation_and_official_flags():
    params = {"utilisation": True, "curate_in_eval": True, "track_eval": True, "shared_gate_mean": True,
              "starting_epoch": 1}
    outcome = _train(params)
    assert outcome.status == "ok"
    for stats in outcome.history:
        c = stats.coefficients
        assert stats.coefficients["unlocked"] == 1.0
        assert {"cond_util.fast", "cond_util.slow", "d_util", "branch_acc.fast", "branch_acc_isolated.slow"} <= set(c)
        assert c["d_util"] == pytest.approx(c["cond_util.slow"] - c["cond_util.fast"])
        acc, iso = c["branch_acc.slow"], c["branch_acc_isolated.slow"]
        assert c["cond_util.fast"] == pytest.approx((acc - iso) / acc if acc else 0.0)


def test_utilisation_pass_measures_normal_and_isolated_branches_and_restores_modes():
    balancer, ctx, batch = _context({"utilisation": True, "curate_in_eval": True})
    model, fusion = ctx.model, ctx.model.fusion
    model.train()
    model(batch)  # squeeze means from one training forward
    ctx.val_loader = [batch]
    mask = torch.tensor([True, False])
    fusion.curation = mask
    coeffs = balancer.conditional_utilisation(ctx)
    assert fusion.curation is mask and not fusion.isolate and model.training
    model.eval()
    fusion.curation = None
    with torch.no_grad():
        normal = fusion.branch_logits(model.encode(batch))
        fusion.isolate = True
        isolated = fusion.branch_logits(model.encode(batch))
    fusion.isolate = False
    accuracy = {m: float((logits.argmax(-1) == batch["label"]).float().mean()) for m, logits in normal.items()}
    accuracy_iso = {m: float((logits.argmax(-1) == batch["label"]).float().mean()) for m, logits in isolated.items()}
    assert coeffs["branch_acc.fast"] == pytest.approx(accuracy["fast"])
    assert coeffs["branch_acc_isolated.slow"] == pytest.approx(accuracy_iso["slow"])
    # u(fast | slow) is read off the slow branch: its gain from fast's sample-specific MMTM input
    assert coeffs["cond_util.fast"] == pytest.approx((accuracy["slow"] - accuracy_iso["slow"]) / accuracy["slow"])
