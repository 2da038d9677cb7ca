"""The `i3d` and `s3d` encoders: parameter counts (meta device; I3D's analytic from pytorch-i3d's layer table),
pytorch-i3d's module names and a strict checkpoint load, the depth stem from an RGB checkpoint, TensorFlow SAME
padding, the pooled feature, blocks."""

from __future__ import annotations

import pytest
import torch

from mmbench.api import ModalitySpec
from mmbench_plugins.encoders.i3d import I3DEncoder, I3DParams, pooled, same_padding
from mmbench_plugins.encoders.s3d import S3DEncoder, S3DParams

torch.set_num_threads(1)


def clip(channels: int, frames: int = 8, side: int = 32) -> ModalitySpec:
    kind = {3: "frames", 2: "flow", 1: "depth"}[channels]
    return ModalitySpec(kind, kind, (channels, frames, side, side))


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("channels, expected", [(3, 12_287_264), (2, 12_265_312), (1, 12_243_360)])
def test_i3d_trunk_parameters_equal_the_analytic_count(channels, expected):
    with torch.device("meta"):
        encoder = I3DEncoder(clip(channels, 64, 224), I3DParams())
    assert count(encoder) == expected and encoder.out_dim == 1024


def test_s3d_trunk_is_torchvision_s3d_without_its_classifier():
    with torch.device("meta"):
        rgb, depth = S3DEncoder(clip(3, 16, 224), S3DParams()), S3DEncoder(clip(1, 16, 224), S3DParams())
    # 8,320,048 with the 400-class classifier Conv3d(1024 -> 400), i.e. minus 410,000; a 1-channel stem has
    # 2 x 64 x 1 x 7 x 7 fewer weights
    assert count(rgb) == 8_320_048 - 410_000
    assert count(rgb) - count(depth) == 2 * 64 * 7 * 7


def test_module_names_are_pytorch_i3d_end_points():
    with torch.device("meta"):
        state = I3DEncoder(clip(3), I3DParams()).state_dict()
    assert state["Conv3d_1a_7x7.conv3d.weight"].shape == (64, 3, 7, 7, 7)
    assert state["Mixed_3b.b1b.bn.running_mean"].shape == (128,)
    assert state["Mixed_4f.b2b.conv3d.weight"].shape == (128, 32, 3, 3, 3)
    assert state["Mixed_5c.b3b.conv3d.weight"].shape == (128, 832, 1, 1, 1)
    assert not any(key.startswith("logits") for key in state)


def test_a_pytorch_i3d_checkpoint_loads_strictly_without_its_logits(tmp_path):
    torch.manual_seed(0)
    source = I3DEncoder(clip(2), I3DParams())
    state = {k: torch.randn_like(v.float()).to(v.dtype) if v.is_floating_point() else v
             for k, v in source.state_dict().items()}
    state["logits.conv3d.weight"], state["logits.conv3d.bias"] = torch.randn(400, 1024, 1, 1, 1), torch.randn(400)
    path = tmp_path / "flow_imagenet.pt"
    torch.save(state, path)
    loaded = I3DEncoder(clip(2), I3DParams(weights=str(path)))
    assert torch.equal(loaded.state_dict()["Mixed_4d.b0.bn.running_var"], state["Mixed_4d.b0.bn.running_var"])
    assert I3DEncoder.weights_identity(I3DParams(weights=str(path))).startswith("sha256:")
    state["Mixed_4d.b0.conv.weight"] = state.pop("Mixed_4d.b0.conv3d.weight")
    torch.save(state, path)
    with pytest.raises(ValueError, match="not a pytorch-i3d InceptionI3d state dict"):
        I3DEncoder(clip(2), I3DParams(weights=str(path)))
    with pytest.raises(ValueError, match="conv1 takes 2 input channels"):
        I3DEncoder(clip(3), I3DParams(weights=str(path)))


def test_a_depth_stem_from_rgb_weights_equals_the_rgb_network_on_the_replicated_map(tmp_path):
    torch.manual_seed(0)
    rgb = I3DEncoder(clip(3), I3DParams()).eval()
    path = tmp_path / "rgb_imagenet.pt"
    torch.save(rgb.state_dict(), path)
    depth = I3DEncoder(clip(1), I3DParams(weights=str(path))).eval()
    x = torch.rand(2, 1, 8, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(depth(x), rgb(x.expand(-1, 3, -1, -1, -1)), rtol=1e-4, atol=1e-5)


def test_same_padding_is_tensorflow_s():
    x = torch.ones(1, 1, 5, 4, 6)
    # T = 5, k 3, s 2: 5 % 2 = 1 -> total 3 - 1 = 2 -> (1, 1); H = 4, k 3, s 2: total 3 - 2 = 1 -> (0, 1);
    # W = 6, k 1, s 1: total 0
    out = same_padding(x, (3, 3, 1), (2, 2, 1))
    assert out.shape == (1, 1, 7, 5, 6)
    assert out[0, 0, 0].sum() == 0 and out[0, 0, -1].sum() == 0  # one zero frame in front, one behind
    assert out[0, 0, 1:-1, 0].sum() == 5 * 6 and out[0, 0, 1:-1, -1].sum() == 0  # no row in front, one behind


def test_the_pooled_feature_is_the_port_s_window_then_the_mean_over_time():
    # frames with constant values 0, 0, 12 on a 7 x 7 map: the (2, 7, 7) windows average to 0 and 6, their mean
    # is 3 (a plain global mean would be 4)
    x = torch.tensor([0.0, 0.0, 12.0]).view(1, 1, 3, 1, 1).expand(2, 4, 3, 7, 7)
    torch.testing.assert_close(pooled(x), torch.full((2, 4), 3.0))


@pytest.mark.parametrize("encoder_cls, params", [(I3DEncoder, I3DParams()), (S3DEncoder, S3DParams())])
def test_blocks_compose_to_forward_and_end_after_mixed_4f_5b_5c(encoder_cls, params):
    torch.manual_seed(0)
    encoder = encoder_cls(clip(3), params).eval()
    x = torch.randn(2, 3, 8, 32, 32)
    widths = []
    with torch.no_grad():
        h = x
        for block in encoder.blocks():
            h = block(h)
            widths.append(h.shape[1])
        torch.testing.assert_close(h, encoder(x))
    assert widths == [528, 832, 832, 1024] and h.shape == (2, 1024)


def test_a_clip_that_is_not_1_2_or_3_channels_is_refused():
    from mmbench.api import Incompatible

    with pytest.raises(Incompatible, match="1, 2 or 3 channels"):
        I3DEncoder(ModalitySpec("x", "frames", (4, 8, 32, 32)), I3DParams())
    with pytest.raises(Incompatible, match="1, 2 or 3 channels"):
        S3DEncoder(ModalitySpec("x", "vector", (16,)), S3DParams())
