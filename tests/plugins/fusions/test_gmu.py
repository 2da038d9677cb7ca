"""`gmu` fusion: pinned to worked GMU and maxout vectors (Arevalo et al.'s equations, computed independently in
numpy), shapes, gate forms, training."""

import dataclasses
import math

import pytest
import torch
from torch import nn

from mmbench.api import Incompatible
from mmbench.schema.recipe import OptimizerConfig, TrainRecipe
from mmbench.testing import tiny_components
from mmbench.training.engine import train
from mmbench_plugins.balancers.joint import Joint
from mmbench_plugins.fusions.gmu import GMUFusion, GMUParams, Maxout, gated_mix


def test_gated_mix_matches_worked_vector():
    text, image, gate = torch.tensor([0.3, -0.2]), torch.tensor([1.0, 0.5]), torch.tensor([0.0, 2.0])
    v, z = gated_mix(image, text, gate, output_tanh=True)  # z weights the image units, as in PM+MO
    torch.testing.assert_close(z, torch.tensor([0.5, 0.880797]), rtol=1e-5, atol=0)
    torch.testing.assert_close(v, torch.tensor([0.482665, 0.365746]), rtol=1e-5, atol=0)
    # without the output tanh: z·tanh(image) + (1 − z)·tanh(text), by hand = [0.526454, 0.383505]
    v_plain, z_plain = gated_mix(image, text, gate, output_tanh=False)
    torch.testing.assert_close(z_plain, z)
    torch.testing.assert_close(v_plain, torch.tensor([0.526454, 0.383505]), rtol=1e-5, atol=0)


def test_unit_reproduces_worked_vector_through_its_layers():
    """Identity projections, a zero gate weight and gate bias [0, 2]: the unit must give the worked v."""
    params = GMUParams(hidden=2, bias=True, gate="inputs", input_norm=False, output_tanh=True, dropout=0.0)
    fusion = GMUFusion({"image": 2, "text": 2}, 3, params).eval()
    with torch.no_grad():
        for m in ("image", "text"):
            fusion.unit.proj[m].weight.copy_(torch.eye(2))
            fusion.unit.proj[m].bias.zero_()
        fusion.unit.gate.weight.zero_()
        fusion.unit.gate.bias.copy_(torch.tensor([0.0, 2.0]))
    v, z = fusion.gmu({"image": torch.tensor([[1.0, 0.5]]), "text": torch.tensor([[0.3, -0.2]])})
    torch.testing.assert_close(v, torch.tensor([[0.482665, 0.365746]]), rtol=1e-5, atol=0)
    torch.testing.assert_close(z, torch.tensor([[0.5, 0.880797]]), rtol=1e-5, atol=0)


def test_maxout_matches_worked_vector():
    """Three pieces [[0.1, -0.3], [0.4, -0.5], [-0.2, 0.2]] of two units -> [0.4, 0.2]."""
    layer = Maxout(1, 2, 3)
    with torch.no_grad():
        layer.linear.weight.copy_(torch.tensor([0.1, -0.3, 0.4, -0.5, -0.2, 0.2]).unsqueeze(1))
        layer.linear.bias.zero_()
    torch.testing.assert_close(layer(torch.ones(1, 1)), torch.tensor([[0.4, 0.2]]), rtol=1e-5, atol=0)


@pytest.mark.parametrize("gate", ["projected", "inputs"])
def test_shapes_gate_input_and_no_contributions(gate):
    fusion = GMUFusion({"a": 4, "b": 6}, 3, GMUParams(hidden=5, gate=gate))
    out = fusion({"a": torch.randn(7, 4), "b": torch.randn(7, 6)})
    assert out.logits.shape == (7, 3) and out.contributions == {}
    # the gate reads the 4+6 normalised inputs, or the 2·8 projections
    assert GMUFusion({"a": 4, "b": 6}, 3, GMUParams(hidden=8, gate=gate)).unit.gate.in_features == (
        10 if gate == "inputs" else 16)
    v, z = fusion.gmu({"a": torch.randn(7, 4), "b": torch.randn(7, 6)})
    assert v.shape == z.shape == (7, 5) and bool(((z > 0) & (z < 1)).all())


def test_repo_defaults_no_bias_uniform_init_and_two_modalities_only():
    fusion = GMUFusion({"a": 4, "b": 4}, 3, GMUParams())
    linears = [m for m in fusion.unit.modules() if isinstance(m, nn.Linear)]
    assert linears and all(m.bias is None for m in linears)
    assert all(float(m.weight.detach().abs().max()) <= 0.005 for m in fusion.modules() if isinstance(m, nn.Linear))
    assert GMUFusion.max_modalities == 2
    with pytest.raises(Incompatible, match="exactly two"):
        GMUFusion({"a": 4, "b": 4, "c": 4}, 3, GMUParams())


def test_dropout_placement():
    everywhere = GMUFusion({"a": 4, "b": 4}, 3, GMUParams(dropout=0.5))
    between = GMUFusion({"a": 4, "b": 4}, 3, GMUParams(dropout=0.5, dropout_at="between_maxouts"))
    count = lambda f: sum(isinstance(m, nn.Dropout) and m.p > 0 for m in f.modules())  # noqa: E731
    assert count(everywhere) == 4 and count(between) == 1  # unit (shared by both projections) + 3 in the MLP


def test_trains_end_to_end_with_joint():
    components = dataclasses.replace(tiny_components(Joint), fusion=(GMUFusion, GMUParams(hidden=16)))
    recipe = TrainRecipe(epochs=2, batch_size=32, device="cpu", optimizer=OptimizerConfig(name="adam", lr=0.01))
    out = train(components, recipe, seed=0)
    assert out.status == "ok" and all(math.isfinite(e.train_loss) for e in out.history)
    assert out.history[-1].train_loss < out.history[0].train_loss
    assert out.test.metrics["accuracy"] > 0.4  # 4 classes: well above chance after two epochs
