"""`mmtm` fusion: the MMTM computation on hand-computed cases, running means, the curation (bypass) and
isolation modes, block pairing, lazy materialisation with an optimizer built first, end-to-end training."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from mmbench.engine import CellComponents, build_model, train
from mmbench.protocols import Encoder, Incompatible
from mmbench.recipe import OptimizerConfig, TrainRecipe
from mmbench.testing import tiny_components
from mmbench_plugins.balancers.joint import Joint
from mmbench_plugins.encoders.mlp import MLPEncoder
from mmbench_plugins.fusions.mmtm import MMTM, MMTMFusion, MMTMParams, running_mean

RTOL = 1e-5
SIG = {1.5: 0.8175744762, -1.0: 0.2689414214, -2.0: 0.1192029220}  # σ(x), by hand


def _hand_module(channels: str = "first") -> MMTM:
    """dims (2, 1), ratio 3 -> 2 squeeze units; weights chosen so every quantity is easy to follow."""
    mod = MMTM(2, ratio=3.0, dims=(2, 1), channels=channels)
    with torch.no_grad():
        mod.squeeze_weight.copy_(torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, -1.0]]))
        mod.squeeze_bias.copy_(torch.tensor([0.5, 0.0]))
        mod.gate_weight[0].copy_(torch.tensor([[1.0, 0.0], [0.0, 2.0]]))
        mod.gate_bias[0].copy_(torch.tensor([0.0, -1.0]))
        mod.gate_weight[1].copy_(torch.tensor([[-2.0, 1.0]]))
        mod.gate_bias[1].copy_(torch.tensor([1.0]))
    return mod


# q = [1, 2, 3] -> h = ReLU([1 + 0.5, 2 − 3]) = [1.5, 0] -> g_0 = σ([1.5, −1]), g_1 = σ(−3 + 1) = σ(−2)
G0 = torch.tensor([SIG[1.5], SIG[-1.0]])
G1 = torch.tensor([SIG[-2.0]])


def test_hand_computed_vectors():
    mod = _hand_module()
    assert mod.squeeze_weight.shape == (2, 3)  # int(2·3/3) units
    out0, out1 = mod([torch.tensor([[1.0, 2.0]]), torch.tensor([[3.0]])])
    torch.testing.assert_close(out0, torch.tensor([[1.0, 2.0]]) * G0, rtol=RTOL, atol=0)
    torch.testing.assert_close(out1, torch.tensor([[3.0 * SIG[-2.0]]]), rtol=RTOL, atol=0)
    torch.testing.assert_close(out0, torch.tensor([[0.8175745, 0.5378828]]), rtol=RTOL, atol=0)


def test_feature_maps_are_pooled_and_gated_per_channel():
    """Conv-like maps with the same channel means give the same gates, broadcast over space / time."""
    x0 = torch.tensor([[[[0.0, 2.0], [1.0, 1.0]], [[2.0, 2.0], [1.0, 3.0]]]])  # channel means 1 and 2
    x1 = torch.tensor([[[2.0, 3.0, 4.0]]])  # mean 3
    out0, out1 = _hand_module()([x0, x1])
    torch.testing.assert_close(out0, x0 * G0.view(1, 2, 1, 1), rtol=RTOL, atol=0)
    torch.testing.assert_close(out1, x1 * G1.view(1, 1, 1), rtol=RTOL, atol=0)
    tokens0, tokens1 = x0.flatten(2).transpose(1, 2), x1.transpose(1, 2)  # (B, T, C)
    out0, out1 = _hand_module("last")([tokens0, tokens1])
    torch.testing.assert_close(out0, tokens0 * G0.view(1, 1, 2), rtol=RTOL, atol=0)
    torch.testing.assert_close(out1, tokens1 * G1.view(1, 1, 1), rtol=RTOL, atol=0)


def test_running_mean_matches_spec_example():
    mean, count = torch.zeros(2), torch.zeros(())
    mean = running_mean(mean, count, torch.tensor([0.6, 0.4]))
    torch.testing.assert_close(mean, torch.tensor([0.6, 0.4]))
    mean = running_mean(mean, count + 1, torch.tensor([0.8, 0.2]))
    torch.testing.assert_close(mean, torch.tensor([0.7, 0.3]))


def test_module_tracks_running_mean_of_batch_gates():
    mod = MMTM(2, ratio=4.0, dims=(3, 2))
    batches = [[torch.randn(5, 3), torch.randn(5, 2)] for _ in range(3)]
    means = []
    for xs in batches:
        g0, g1 = mod.gates([mod.squeeze(x) for x in xs])
        means.append((g0.mean(0), g1.mean(0)))
        mod(xs, track_gates=True)
    torch.testing.assert_close(mod.gate_mean_0, torch.stack([m[0] for m in means]).mean(0))
    torch.testing.assert_close(mod.gate_mean_1, torch.stack([m[1] for m in means]).mean(0))
    mod(batches[0])  # not tracked
    assert float(mod.count) == 3
    torch.testing.assert_close(mod.gate_mean_0, torch.stack([m[0] for m in means]).mean(0))


def test_shared_gate_mean_reproduces_official_bug():
    mod = MMTM(2, ratio=4.0, dims=(3, 3))
    xs = [torch.randn(4, 3), torch.randn(4, 3)]
    g0, _ = mod.gates([mod.squeeze(x) for x in xs])
    mod(xs, track_gates=True, shared_gate_mean=True)
    torch.testing.assert_close(mod.gate_mean_1, g0.mean(0))  # modality 1's mean follows modality 0's gate
    with pytest.raises(Incompatible, match="equal MMTM widths"):
        MMTM(2, ratio=4.0, dims=(3, 2))(xs[:1] + [torch.randn(4, 2)], shared_gate_mean=True)


def test_curation_uses_running_mean_and_nothing_from_the_other_modality():
    mod = MMTM(2, ratio=2.0, dims=(3, 2))
    x0 = torch.randn(4, 3, requires_grad=True)
    x1 = torch.randn(4, 2, requires_grad=True)
    mod([x0, x1], track_gates=True)  # a running mean to use
    keep = torch.tensor([True, False])
    out0, out1 = mod([x0, x1], curation=keep, track_gates=True)
    # branch 0 = its input times the (detached, just updated) running mean gate, broadcast over the batch
    torch.testing.assert_close(out0, x0 * mod.gate_mean_0)
    (grad_x1,) = torch.autograd.grad(out0.sum(), x1, retain_graph=True)
    assert torch.count_nonzero(grad_x1) == 0
    (out0.sum() + out1.sum()).backward()
    assert torch.count_nonzero(mod.gate_weight[0].grad) == 0 and torch.count_nonzero(mod.gate_bias[0].grad) == 0
    assert torch.count_nonzero(mod.gate_weight[1].grad) > 0 and torch.count_nonzero(mod.squeeze_weight.grad) > 0
    # without tracking, another input for modality 1 leaves branch 0 exactly unchanged; branch 1 moves
    a0, a1 = mod([x0, x1], curation=keep)
    b0, b1 = mod([x0, x1 + 1.0], curation=keep)
    assert torch.equal(a0, b0) and not torch.allclose(a1, b1)
    c0, _ = mod([x0, x1 + 1.0])  # normal mode: branch 0 does depend on modality 1
    assert not torch.allclose(a0, c0)


def test_isolate_replaces_other_squeezes_by_their_means():
    mod = MMTM(2, ratio=2.0, dims=(3, 2))
    train_batches = [[torch.randn(6, 3), torch.randn(6, 2)] for _ in range(2)]
    for xs in train_batches:
        mod(xs, track_squeezes=True)
    mean1 = torch.cat([xs[1] for xs in train_batches]).mean(0)
    torch.testing.assert_close(mod.squeeze_mean_1, mean1)
    x0, x1 = torch.randn(4, 3), torch.randn(4, 2)
    out0, _ = mod([x0, x1], isolate=True)
    expected_gate = mod.gates([x0, mean1.expand(4, -1)])[0]
    torch.testing.assert_close(out0, x0 * expected_gate)
    again, _ = mod([x0, torch.randn(4, 2)], isolate=True)
    torch.testing.assert_close(out0, again)  # branch 0 no longer sees modality 1's samples


# ------------------------------------------------------------------------------------ the fusion


def _components(positions: int = 3, fast_layers: int = 2, slow_layers: int = 2) -> CellComponents:
    base = tiny_components(Joint)
    enc = {"fast": (MLPEncoder, MLPEncoder.Params(hidden=16, layers=fast_layers, out_dim=8)),
           "slow": (MLPEncoder, MLPEncoder.Params(hidden=12, layers=slow_layers, out_dim=8))}
    return dataclasses.replace(base, encoders=enc, fusion=(MMTMFusion, MMTMParams(positions=positions)))


def _batch(components: CellComponents, n: int = 16) -> dict[str, torch.Tensor]:
    train_set = components.task.splits()["train"]
    return {k: torch.stack([train_set[i][k] for i in range(n)]) for k in ("fast", "slow", "label")}


def test_blocks_are_paired_from_the_end():
    components = _components(positions=3, fast_layers=3, slow_layers=2)
    torch.manual_seed(0)
    model = build_model(components, Joint(Joint.Params()))
    out = model(_batch(components))
    fusion = model.fusion
    assert out.logits.shape == (16, 4) and fusion.active == 2
    # fast: 16 -> [16] -> [16] -> 8 (its first block alone), slow: 64 -> [12] -> 8
    assert [m.dims for m in fusion.mmtm] == [(16, 12), (8, 8), (0, 0)]
    model1 = build_model(_components(positions=1), Joint(Joint.Params()))
    model1(_batch(components))
    assert [m.dims for m in model1.fusion.mmtm] == [(8, 8)]  # after the last blocks only


def test_prediction_is_mean_of_branch_heads_with_exact_contributions():
    components = _components()
    model = build_model(components, Joint(Joint.Params()))
    out = model(_batch(components))
    heads = model.fusion.branch_logits(out.features)
    torch.testing.assert_close(out.logits, (heads["fast"] + heads["slow"]) / 2)
    torch.testing.assert_close(sum(out.contributions.values()), out.logits, rtol=0, atol=0)


def test_optimizer_built_before_first_forward_trains_the_mmtms():
    """The engine builds the optimizer before any forward: the lazily materialised parameters must be the
    very objects it holds."""
    components = _components()
    model = build_model(components, Joint(Joint.Params()))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    batch = _batch(components)
    out = model(batch)
    before = [p.detach().clone() for p in model.fusion.squeeze_parameters() + model.fusion.gate_parameters("fast")]
    torch.nn.functional.cross_entropy(out.logits, batch["label"]).backward()
    optimizer.step()
    after = model.fusion.squeeze_parameters() + model.fusion.gate_parameters("fast")
    assert all(not torch.equal(b, a) for b, a in zip(before, after) if a.numel())


def test_state_dict_loads_into_a_fresh_model():
    components = _components(positions=3, fast_layers=3)
    model = build_model(components, Joint(Joint.Params())).eval()
    batch = _batch(components)
    expected = model(batch).logits
    fresh = build_model(components, Joint(Joint.Params())).eval()
    fresh.load_state_dict(model.state_dict())
    torch.testing.assert_close(fresh(batch).logits, expected)


def test_bypass_mode_in_the_model_ignores_the_other_modality():
    components = _components()
    model = build_model(components, Joint(Joint.Params()))
    batch = _batch(components)
    model.train()
    model(batch)  # running means from one training forward
    model.eval()
    fusion = model.fusion
    fusion.curation = torch.tensor([True, False])
    fusion.curate_in_eval = True
    other = {**batch, "slow": batch["slow"] + 1.0}
    assert torch.equal(model.encode(batch)["fast"], model.encode(other)["fast"])
    assert not torch.allclose(model.encode(batch)["slow"], model.encode(other)["slow"])
    fusion.curate_in_eval = False  # evaluation runs in normal mode by default
    assert not torch.allclose(model.encode(batch)["fast"], model.encode(other)["fast"])


def test_incompatible_cells():
    with pytest.raises(Incompatible, match="at least two"):
        MMTMFusion({"a": 4}, 3, MMTMParams())

    class Opaque(Encoder):
        name = "opaque"

        def __init__(self, modality, params):
            super().__init__(modality, params)
            self.out_dim = 4

    fusion = MMTMFusion({"a": 4, "b": 4}, 3, MMTMParams())
    with pytest.raises(Incompatible, match="does not expose blocks"):
        fusion.encode({"a": torch.zeros(2, 4), "b": torch.zeros(2, 4)}, {"a": Opaque(None, None), "b": Opaque(None, None)})


def test_train_with_joint():
    recipe = TrainRecipe(epochs=2, batch_size=32, device="cpu", optimizer=OptimizerConfig(name="sgd", lr=0.1))
    outcome = train(_components(), recipe, seed=0)
    assert outcome.status == "ok" and len(outcome.history) == 2
    assert all(math.isfinite(s.train_loss) for s in outcome.history)
    assert outcome.profile["params"]["total"] > 0
