"""`mmtm` fusion: the MMTM computation on hand-computed cases, running means, the curation (bypass) and
isolation modes, block pairing and sizing in `bind` (before the optimizer and any forward), incompatible
encoders, end-to-end training."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from mmbench.contract.batch import Batch
from mmbench.contract.encoder import Encoder
from mmbench.contract.errors import Incompatible
from mmbench.contract.task import ModalitySpec
from mmbench.schema.recipe import OptimizerConfig, TrainRecipe
from mmbench.testing import tiny_components
from mmbench.training.engine import CellComponents, build_model, collate, train
from mmbench_plugins.balancers.joint import Joint
from mmbench_plugins.encoders.mlp import MLPEncoder
from mmbench_plugins.fusions.mmtm import MMTM, MMTMFusion, MMTMParams, running_mean

RTOL = 1e-5
SIG = {1.5: 0.8175744762, -1.0: 0.2689414214, -2.0: 0.1192029220}  # σ(x), by hand


def _hand_module(channels: str = "first") -> MMTM:
    """dims (2, 1), ratio 3 -> 2 squeeze units; weights chosen so every quantity is easy to follow."""
    mod = MMTM((2, 1), ratio=3.0, channels=channels)
    with torch.no_grad():
        mod.fc_squeeze.weight.copy_(torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, -1.0]]))
        mod.fc_squeeze.bias.copy_(torch.tensor([0.5, 0.0]))
        mod.fc_gate[0].weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 2.0]]))
        mod.fc_gate[0].bias.copy_(torch.tensor([0.0, -1.0]))
        mod.fc_gate[1].weight.copy_(torch.tensor([[-2.0, 1.0]]))
        mod.fc_gate[1].bias.copy_(torch.tensor([1.0]))
    return mod


# q = [1, 2, 3] -> h = ReLU([1 + 0.5, 2 − 3]) = [1.5, 0] -> g_0 = σ([1.5, −1]), g_1 = σ(−3 + 1) = σ(−2)
G0 = torch.tensor([SIG[1.5], SIG[-1.0]])
G1 = torch.tensor([SIG[-2.0]])


def test_hand_computed_vectors():
    mod = _hand_module()
    assert mod.fc_squeeze.weight.shape == (2, 3)  # int(2·3/3) units
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


def test_running_mean_matches_worked_example():
    mean, count = torch.zeros(2), torch.zeros(())
    mean = running_mean(mean, count, torch.tensor([0.6, 0.4]))
    torch.testing.assert_close(mean, torch.tensor([0.6, 0.4]))
    mean = running_mean(mean, count + 1, torch.tensor([0.8, 0.2]))
    torch.testing.assert_close(mean, torch.tensor([0.7, 0.3]))


def test_module_tracks_running_mean_of_batch_gates():
    mod = MMTM((3, 2), ratio=4.0)
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
    mod = MMTM((3, 3), ratio=4.0)
    xs = [torch.randn(4, 3), torch.randn(4, 3)]
    g0, _ = mod.gates([mod.squeeze(x) for x in xs])
    mod(xs, track_gates=True, shared_gate_mean=True)
    torch.testing.assert_close(mod.gate_mean_1, g0.mean(0))  # modality 1's mean follows modality 0's gate
    with pytest.raises(Incompatible, match="equal MMTM widths"):
        MMTM((3, 2), ratio=4.0)(xs[:1] + [torch.randn(4, 2)], shared_gate_mean=True)


def test_curation_uses_running_mean_and_nothing_from_the_other_modality():
    mod = MMTM((3, 2), ratio=2.0)
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
    assert all(torch.count_nonzero(p.grad) == 0 for p in mod.fc_gate[0].parameters())
    assert torch.count_nonzero(mod.fc_gate[1].weight.grad) > 0 and torch.count_nonzero(mod.fc_squeeze.weight.grad) > 0
    # without tracking, another input for modality 1 leaves branch 0 exactly unchanged; branch 1 moves
    a0, a1 = mod([x0, x1], curation=keep)
    b0, b1 = mod([x0, x1 + 1.0], curation=keep)
    assert torch.equal(a0, b0) and not torch.allclose(a1, b1)
    c0, _ = mod([x0, x1 + 1.0])  # normal mode: branch 0 does depend on modality 1
    assert not torch.allclose(a0, c0)


def test_isolate_replaces_other_squeezes_by_their_means():
    mod = MMTM((3, 2), ratio=2.0)
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


def _batch(components: CellComponents, n: int = 16) -> Batch:
    train_set = components.task.splits()["train"]
    return collate([train_set[i] for i in range(n)])


def test_bind_sizes_every_mmtm_before_any_forward_and_pairs_blocks_from_the_end():
    components = _components(positions=3, fast_layers=3, slow_layers=2)
    torch.manual_seed(0)
    model = build_model(components, Joint(Joint.Params()))
    fusion = model.fusion
    # fast: 16 -> [16] -> [16] -> [8] (its first block alone), slow: 64 -> [12] -> [8]; 2 of 3 positions used
    assert fusion.bound and len(fusion.mmtm) == 2 and fusion.block_counts == {"fast": 3, "slow": 2}
    assert [m.dims for m in fusion.active_modules()] == [(16, 12), (8, 8)]
    shapes = [[tuple(p.shape) for p in (*m.fc_squeeze.parameters(), *(q for g in m.fc_gate for q in g.parameters()))]
              for m in fusion.mmtm]
    # hidden = int(2·ΣC/4): 14 for (16, 12), 8 for (8, 8)
    assert shapes == [[(14, 28), (14,), (16, 14), (16,), (12, 14), (12,)], [(8, 16), (8,), (8, 8), (8,), (8, 8), (8,)]]
    assert [tuple(b.shape) for b in fusion.mmtm[0].gate_means() + fusion.mmtm[0].squeeze_means()] == [(16,), (12,)] * 2
    assert not any(isinstance(t, (torch.nn.UninitializedParameter, torch.nn.UninitializedBuffer))
                   for t in [*model.parameters(), *model.buffers()])
    assert all(torch.isfinite(p).all() and p.abs().sum() > 0 for p in fusion.squeeze_parameters())
    # the parameter groups hold the MMTMs already: the model's size is known before training
    assert {id(p) for p in fusion.squeeze_parameters() + fusion.gate_parameters("fast")} <= {
        id(p) for p in model.parameter_groups()["fusion"]}
    out = model(_batch(components))
    assert out.logits.shape == (16, 4)
    model1 = build_model(_components(positions=1), Joint(Joint.Params()))
    assert [m.dims for m in model1.fusion.mmtm] == [(8, 8)]  # after the last blocks only


def test_fusion_without_bind_fails_clearly():
    components = _components()
    encoders = {m: cls(components.task.modalities[m], p) for m, (cls, p) in components.encoders.items()}
    fusion = MMTMFusion({m: e.out_dim for m, e in encoders.items()}, 4, MMTMParams())
    batch = _batch(components)
    with pytest.raises(RuntimeError, match=r"not bound to its encoders: call fusion.bind\(encoders\)"):
        fusion.encode(batch, encoders)
    with pytest.raises(RuntimeError, match="not bound"):
        fusion.gate_parameters("fast")
    fusion.bind(encoders)
    assert fusion.encode(batch, encoders)["fast"].shape == (16, 8)
    with pytest.raises(RuntimeError, match="already bound"):
        fusion.bind(encoders)
    shorter = _components(fast_layers=3)
    other = {m: cls(shorter.task.modalities[m], p) for m, (cls, p) in shorter.encoders.items()}
    with pytest.raises(RuntimeError, match="bound to encoders with"):
        fusion.encode(batch, other)


def test_probe_restores_training_flags_and_falls_back_to_token_ids():
    class Tokens(Encoder):
        """Token ids (B, T) -> embeddings (B, T, 6) -> mean over T; only runs on long inputs."""

        name = "tokens"

        def __init__(self, modality, params):
            super().__init__(modality, params)
            self.embed = torch.nn.Sequential(torch.nn.Embedding(10, 6), torch.nn.Dropout(0.5))
            self.pool = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.BatchNorm1d(5))
            self.out_dim = 5

        def blocks(self):
            return [self.embed, _Lambda(lambda x: self.pool(x.mean(1)))]

    spec = ModalitySpec("t", "text", (7,))
    encoders = {"a": Tokens(spec, None), "b": Tokens(spec, None)}
    encoders["a"].train()
    encoders["a"].pool.eval()  # a deliberately frozen part keeps its mode
    flags = {m: [mod.training for mod in e.modules()] for m, e in encoders.items()}
    stats = encoders["b"].pool[1].running_mean.clone()  # in training mode: the probe must not update it
    fusion = MMTMFusion({"a": 5, "b": 5}, 3, MMTMParams(channels="last"))
    fusion.bind(encoders)
    assert [m.dims for m in fusion.mmtm] == [(6, 6), (5, 5)]
    assert {m: [mod.training for mod in e.modules()] for m, e in encoders.items()} == flags
    assert torch.equal(encoders["b"].pool[1].running_mean, stats)
    ids = {m: torch.randint(0, 10, (4, 7)) for m in ("a", "b")}
    assert fusion.encode(ids, encoders)["a"].shape == (4, 5)


class _Lambda(torch.nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


def test_prediction_is_mean_of_branch_heads_with_exact_contributions():
    components = _components()
    model = build_model(components, Joint(Joint.Params()))
    out = model(_batch(components))
    heads = model.fusion.branch_logits(out.features)
    torch.testing.assert_close(out.logits, (heads["fast"] + heads["slow"]) / 2)
    torch.testing.assert_close(sum(out.contributions.values()), out.logits, rtol=0, atol=0)


def test_optimizer_built_after_build_model_trains_the_mmtms():
    components = _components()
    model = build_model(components, Joint(Joint.Params()))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    batch = _batch(components)
    out = model(batch)
    before = [p.detach().clone() for p in model.fusion.squeeze_parameters() + model.fusion.gate_parameters("fast")]
    torch.nn.functional.cross_entropy(out.logits, batch["label"]).backward()
    optimizer.step()
    after = model.fusion.squeeze_parameters() + model.fusion.gate_parameters("fast")
    assert len(after) == 2 * 2 * 2 and all(not torch.equal(b, a) for b, a in zip(before, after))


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


def test_incompatible_cells_are_detected_by_bind():
    with pytest.raises(Incompatible, match="at least two"):
        MMTMFusion({"a": 4}, 3, MMTMParams())
    spec = ModalitySpec("v", "vector", (4,))

    class Opaque(Encoder):
        name = "opaque"

        def __init__(self, modality, params, blocks=None, out_dim=4):
            super().__init__(modality, params)
            self.layers = torch.nn.ModuleList(blocks) if blocks is not None else None
            self.out_dim = out_dim

        def blocks(self):
            if self.layers is None:
                raise NotImplementedError
            return list(self.layers)

    def bind(**encoders):
        MMTMFusion({m: e.out_dim for m, e in encoders.items()}, 3, MMTMParams()).bind(encoders)

    mlp = MLPEncoder(spec, MLPEncoder.Params(hidden=4, out_dim=4))
    with pytest.raises(Incompatible, match="does not expose blocks"):
        bind(a=Opaque(spec, None), b=mlp)
    with pytest.raises(Incompatible, match="has no blocks"):
        bind(a=Opaque(spec, None, blocks=[]), b=mlp)
    with pytest.raises(Incompatible, match="could not run the blocks .* shape \\(2, 4\\): RuntimeError"):
        bind(a=Opaque(spec, None, blocks=[torch.nn.Linear(5, 4)]), b=mlp)  # the blocks do not fit the input
    with pytest.raises(Incompatible, match="not its pooled feature"):
        bind(a=Opaque(spec, None, blocks=[torch.nn.Linear(4, 3)]), b=mlp)  # out_dim 4 but blocks give 3
    with pytest.raises(Incompatible, match="block outputs \\(B, C, ...\\)"):
        bind(a=Opaque(spec, None, blocks=[_Lambda(lambda x: x.sum(-1))]), b=mlp)


def test_train_with_joint():
    recipe = TrainRecipe(epochs=2, batch_size=32, device="cpu", optimizer=OptimizerConfig(name="sgd", lr=0.1))
    outcome = train(_components(), recipe, seed=0)
    assert outcome.status == "ok" and len(outcome.history) == 2
    assert all(math.isfinite(s.train_loss) for s in outcome.history)
    assert outcome.profile["params"]["total"] > 0
