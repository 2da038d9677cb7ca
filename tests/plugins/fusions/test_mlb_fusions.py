"""MLB's fusions: late_linear, mid_mlp, film, gated, tf. Formulas on small cases computed by hand, exact
contributions where offered, parameter counts of the standard configs (analytic, from MLB's released heads), and
training end to end."""

import math

import pytest
import torch

from mmbench.api import Incompatible
from mmbench.running.cells import incompatibility
from mmbench.schema.recipe import OptimizerConfig, TrainRecipe
from mmbench.testing import assert_trained, tiny_components, train_tiny
from mmbench.training.engine import build_model, collate, train
from mmbench_plugins.balancers.joint import Joint
from mmbench_plugins.balancers.mlb import MLB
from mmbench_plugins.encoders.mlp import MLPEncoder
from mmbench_plugins.fusions.film import FiLMFusion
from mmbench_plugins.fusions.gated import GatedFusion, GatedParams
from mmbench_plugins.fusions.late_linear import LateLinearFusion
from mmbench_plugins.fusions.mid_mlp import MidMLPFusion, MidMLPParams
from mmbench_plugins.fusions.tf import TFFusion, TFParams
from mmbench_plugins.fusions.two_modalities import PairParams
from tests.fixtures.tiny_av import TINY_STACK, components

A = torch.tensor([[1.0, 2.0]])
V2 = torch.tensor([[3.0, 4.0]])


def set_linear(linear, weight, bias=None):
    with torch.no_grad():
        linear.weight.copy_(torch.tensor(weight))
        if bias is not None:
            linear.bias.copy_(torch.tensor(bias))


def count(module) -> int:
    return sum(p.numel() for p in module.parameters())


# --------------------------------------------------------------------------------------- formulas


def test_late_linear_by_hand_and_its_exact_shares():
    fusion = LateLinearFusion({"audio": 2, "visual": 1}, 2, LateLinearFusion.Params())
    assert fusion.linear.linears["visual"].bias is None  # MLB: the bias belongs to the first modality's layer
    set_linear(fusion.linear.linears["audio"], [[1, 0], [0, 1]], [0.5, -1])
    set_linear(fusion.linear.linears["visual"], [[2], [-1]])
    out = fusion({"audio": A, "visual": torch.tensor([[3.0]])})
    # W_a a + b + W_v v = [1 + 0.5 + 6, 2 - 1 - 3]; shares W_m z_m + b/2
    torch.testing.assert_close(out.logits, torch.tensor([[7.5, -2.0]]))
    torch.testing.assert_close(out.contributions["audio"], torch.tensor([[1.25, 1.5]]))
    torch.testing.assert_close(out.contributions["visual"], torch.tensor([[6.25, -3.5]]))


def test_mid_mlp_by_hand():
    fusion = MidMLPFusion({"audio": 2, "visual": 1}, 2, MidMLPParams(inner=2)).eval()
    set_linear(fusion.first.linears["audio"], [[1, 0], [0, 1]], [0, 0])
    set_linear(fusion.first.linears["visual"], [[1], [-1]])
    set_linear(fusion.rest[2], [[1, 1], [0.5, 0]], [-1, 0])
    set_linear(fusion.rest[5], [[1, 0], [0, 2]], [0, 1])
    out = fusion({"audio": A, "visual": torch.tensor([[3.0]])})
    # h1 = ReLU([1+3, 2-3]) = [4, 0]; h2 = ReLU([4-1, 2]) = [3, 2]; o = [3, 2*2+1]
    torch.testing.assert_close(out.logits, torch.tensor([[3.0, 5.0]]))
    assert out.contributions == {}


@pytest.mark.parametrize("acting, expected", [(None, [[6.0, -8.5]]), ("visual", [[10.0, -8.5]])])
def test_film_by_hand(acting, expected):
    fusion = FiLMFusion({"audio": 2, "visual": 2}, 2, PairParams(acting=acting))
    # (γ, β) = W_f x_acting + b_f with γ first
    set_linear(fusion.film, [[1, 0], [0, 1], [1, 1], [0, 0]], [0, 0, 0, 1])
    set_linear(fusion.out, [[1, 0], [0, -1]], [0, 0.5])
    out = fusion({"audio": A, "visual": V2})
    # audio acts: γ = [1, 2], β = [3, 1], γ⊙v + β = [6, 9] -> [6, -9 + 0.5]
    # visual acts: γ = [3, 4], β = [7, 1], γ⊙a + β = [10, 9] -> [10, -9 + 0.5]
    torch.testing.assert_close(out.logits, torch.tensor(expected))
    assert out.contributions == {}


def test_gated_by_hand():
    fusion = GatedFusion({"audio": 2, "visual": 2}, 2, GatedParams(inner=2))
    set_linear(fusion.gate, [[0, 0], [1, -1]], [0, 0])     # gate pre-activations [0, -1]
    set_linear(fusion.value, [[1, 0], [0, 1]], [0, 0])     # the visual projection is v itself
    set_linear(fusion.out, [[1, 0], [0, 1]], [0, 0])
    out = fusion({"audio": A, "visual": V2})
    sigmoid_minus_one = 1 / (1 + math.e)
    torch.testing.assert_close(out.logits, torch.tensor([[0.5 * 3, sigmoid_minus_one * 4]]))


def test_tf_prepends_the_class_token_and_adds_each_modality_token_at_every_step():
    torch.manual_seed(0)
    params = TFParams(width=8, layers=1, heads=2, ffn=16, kernel=3, dropout=0.0)
    fusion = TFFusion({"audio": 4, "visual": 4}, 3, params).eval()
    a, v = torch.randn(2, 5, 4), torch.randn(2, 3, 4)
    with torch.no_grad():
        out = fusion({"audio": a, "visual": v})
        seq = torch.cat([fusion.cls.expand(2, 1, 4), a + fusion.modality_token["audio"],
                         v + fusion.modality_token["visual"]], dim=1)
        torch.testing.assert_close(out.logits, fusion.out(fusion.stack(seq)[:, 0]))
        changed = fusion({"audio": a, "visual": v + torch.randn_like(v)}).logits
        other_sample = fusion({"audio": torch.cat([a[:1], torch.randn(1, 5, 4)]), "visual": v}).logits
    assert out.logits.shape == (2, 3) and out.contributions == {}
    assert not torch.allclose(changed, out.logits)  # the class token reads every modality
    torch.testing.assert_close(other_sample[0], out.logits[0])  # batch-first: samples stay apart


def test_tf_refuses_pooled_features():
    fusion = TFFusion({"audio": 4, "visual": 4}, 3, TFParams(width=8, layers=1, heads=2, ffn=16, kernel=3))
    with pytest.raises(ValueError, match=r"token sequences.*'audio' gave shape \(2, 4\)"):
        fusion({"audio": torch.randn(2, 4), "visual": torch.randn(2, 3, 4)})


# --------------------------------------------------------------------------- parameter counts


def test_standard_configs_have_the_analytic_parameter_counts():
    dims, c = {"audio": 512, "visual": 512}, 6
    with torch.device("meta"):
        fusions = {
            "late_linear": LateLinearFusion(dims, c, LateLinearFusion.Params()),
            "mid_mlp": MidMLPFusion(dims, c, MidMLPParams()),
            "film": FiLMFusion(dims, c, PairParams()),
            "gated": GatedFusion(dims, c, GatedParams()),
            "tf": TFFusion(dims, c, TFParams()),
        }
    counts = {name: count(f) for name, f in fusions.items()}
    assert counts["late_linear"] == 1025 * c == 6_150           # kkontras/MLB cls_type linear
    assert counts["mid_mlp"] == 69_760 + 65 * c == 70_150       # kkontras/MLB cls_type nonlinear
    assert counts["film"] == 525_312 + 513 * c == 528_390       # fusion_gates.FiLM
    assert counts["gated"] == 525_312 + 513 * c == 528_390      # fusion_gates.GatedFusion
    # MLB's TF_Fusion is ~12.91M + 513C: 2 x 6,323,200 (its sooftware Conformer blocks) + Linear(512->512) input
    # projection 262,656; torchaudio's blocks are 262,656 smaller each; tokens: class + one per modality
    assert counts["tf"] == 2 * 6_323_200 - 2 * 262_656 + 262_656 + 3 * 512 + 513 * c == 12_388_358


# ------------------------------------------------------------------------------ compatibility


@pytest.mark.parametrize("fusion", [FiLMFusion, GatedFusion])
def test_film_and_gated_fuse_exactly_two_modalities_and_need_a_known_acting_one(fusion):
    with pytest.raises(Incompatible, match="exactly two modalities, got 3"):
        fusion({"a": 4, "b": 4, "c": 4}, 2, fusion.Params())
    with pytest.raises(ValueError, match="'video' is not one of the task's modalities"):
        fusion({"audio": 4, "visual": 4}, 2, fusion.Params(acting="video"))


def test_tf_needs_encoders_that_expose_tokens():
    task = tiny_components("joint").task  # synthetic: vector modalities `fast` and `slow`, read by mlp
    reason = incompatibility(Joint, task, {m: MLPEncoder for m in task.modalities}, TFFusion)
    assert reason == "fusion 'tf' reads token sequences; encoder 'mlp' of modality 'fast' does not expose tokens()"


def test_only_late_linear_offers_contributions(registry):
    offered = {n: registry.get("fusions", n).cls.offers_contributions
               for n in ("late_linear", "mid_mlp", "film", "gated", "tf")}
    assert offered == {"late_linear": True, "mid_mlp": False, "film": False, "gated": False, "tf": False}


# ----------------------------------------------------------------------------- the model with tf


def test_with_tf_the_model_pools_tokens_into_features_and_drops_a_modality_by_zeroing_its_tokens():
    torch.manual_seed(0)
    cell = components(TFFusion, TFParams(**{k: v for k, v in TINY_STACK.items() if k != "bottleneck"}), MLB)
    model = build_model(cell, MLB(MLB.Params())).eval()
    batch = collate([cell.task.splits()["val"][i] for i in range(3)])
    with torch.no_grad():
        out = model(batch.inputs)
        tokens = {m: model.encoders[m].tokens(batch.inputs[m]) for m in model.modalities}
        dropped = model(batch.inputs, drop={"visual"})
        by_hand = model.fusion({"audio": tokens["audio"], "visual": torch.zeros_like(tokens["visual"])}).logits
    torch.testing.assert_close(out.features["audio"], tokens["audio"].mean(1))
    torch.testing.assert_close(out.unimodal["visual"], model.heads["visual"](tokens["visual"].mean(1)))
    torch.testing.assert_close(dropped.logits, by_hand)
    assert dropped.features["visual"].abs().sum() == 0
    torch.testing.assert_close(model.encode(batch.inputs)["visual"], out.features["visual"])


# ------------------------------------------------------------------------------------ end to end


@pytest.mark.parametrize("fusion", ["late_linear", "mid_mlp", "film", "gated"])
def test_each_fusion_trains_on_the_synthetic_task(fusion):
    assert_trained(train_tiny("joint", epochs=1, fusion=fusion), epochs=1)


def test_late_linear_carries_ogm_ge_on_the_synthetic_task():
    outcome = train_tiny("ogm_ge", epochs=1, fusion="late_linear")
    assert_trained(outcome, epochs=1)


RECIPE = TrainRecipe(epochs=1, batch_size=8, device="cpu", optimizer=OptimizerConfig(name="adam", lr=1e-3))


@pytest.mark.slow
@pytest.mark.parametrize("fusion, params", [
    (LateLinearFusion, LateLinearFusion.Params()),
    (MidMLPFusion, MidMLPParams(inner=8)),
    (FiLMFusion, PairParams()),
    (GatedFusion, GatedParams(inner=8)),
    (TFFusion, TFParams(**{k: v for k, v in TINY_STACK.items() if k != "bottleneck"})),
])
def test_mlbs_stack_trains_a_cell_on_waveforms_and_face_features(fusion, params):
    outcome = train(components(fusion, params, MLB), RECIPE, seed=0)
    assert_trained(outcome, epochs=1)
    assert set(outcome.test.unimodal) == {"audio", "visual"}


@pytest.mark.slow
def test_mlbs_stack_trains_a_cell_on_face_frames():
    outcome = train(components(LateLinearFusion, LateLinearFusion.Params(), Joint, visual="frames"), RECIPE, seed=0)
    assert_trained(outcome, epochs=1)
