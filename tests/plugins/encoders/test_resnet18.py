"""The `resnet18` encoder: torchvision's measured parameter counts (built on the meta device), OGM-GE's frame
folding and pooling, blocks for intermediate fusions, and local weights with their identity."""

from __future__ import annotations

import hashlib

import pytest
import torch
from pydantic import ValidationError
from torchvision.models import resnet18

from mmbench.api import ModalitySpec
from mmbench_plugins.encoders.resnet18 import ResNet18Encoder, ResNet18Params
from mmbench_plugins.fusions.concat import ConcatFusion
from mmbench_plugins.fusions.mmtm import MMTMFusion

AUDIO = ModalitySpec("audio", "spectrogram", (1, 257, 188))
VISUAL = ModalitySpec("visual", "frames", (3, 1, 224, 224))


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_parameter_counts_equal_the_measured_ones():
    with torch.device("meta"):
        audio, visual = ResNet18Encoder(AUDIO, ResNet18Params()), ResNet18Encoder(VISUAL, ResNet18Params())
    head = ConcatFusion({"audio": 512, "visual": 512}, 6, ConcatFusion.Params())
    assert count(visual) == 11_176_512 and count(audio) == 11_170_240
    assert count(audio) + count(visual) + count(head) == 22_352_902  # OGM-GE AV model, concat, C = 6


def test_a_clip_is_folded_into_the_batch_and_pooled_over_time_and_space():
    torch.manual_seed(0)
    encoder = ResNet18Encoder(ModalitySpec("visual", "frames", (3, 2, 64, 64)), ResNet18Params()).eval()
    clip = torch.randn(3, 3, 2, 64, 64)
    trunk = torch.nn.Sequential(*[m for stage in encoder.stages for m in stage.body])
    with torch.no_grad():
        maps = trunk(clip.permute(0, 2, 1, 3, 4).reshape(6, 3, 64, 64))  # OGM-GE: (B*T, C, H, W)
        expected = maps.view(3, 2, 512, 2, 2).mean(dim=(1, 3, 4))
        torch.testing.assert_close(encoder(clip), expected)
        h = clip
        for block in encoder.blocks():
            h = block(h)
        torch.testing.assert_close(h, expected)


def test_a_spectrogram_runs_as_a_one_channel_image():
    encoder = ResNet18Encoder(ModalitySpec("audio", "spectrogram", (1, 65, 47)), ResNet18Params()).eval()
    with torch.no_grad():
        assert encoder(torch.randn(2, 1, 65, 47)).shape == (2, 512)
    assert encoder.stages[0].body[0].weight.shape == (64, 1, 7, 7)


def test_mmtm_attaches_after_layer2_layer3_and_layer4():
    spec = {"audio": ModalitySpec("audio", "spectrogram", (1, 65, 47)),
            "visual": ModalitySpec("visual", "frames", (3, 2, 64, 64))}
    encoders = {m: ResNet18Encoder(s, ResNet18Params()) for m, s in spec.items()}
    fusion = MMTMFusion({"audio": 512, "visual": 512}, 6, MMTMFusion.Params())
    fusion.bind(encoders)
    assert [tuple(m.dims) for m in fusion.mmtm] == [(128, 128), (256, 256), (512, 512)]
    features = fusion.encode({"audio": torch.randn(2, 1, 65, 47), "visual": torch.randn(2, 3, 2, 64, 64)}, encoders)
    assert {m: f.shape for m, f in features.items()} == {"audio": (2, 512), "visual": (2, 512)}


def test_local_weights_load_and_identify_themselves(tmp_path):
    torch.manual_seed(1)
    reference = resnet18(weights=None)
    path = tmp_path / "resnet18-imagenet.pth"
    torch.save(reference.state_dict(), path)
    params = ResNet18Params(weights=str(path))
    visual = ResNet18Encoder(ModalitySpec("visual", "frames", (3, 1, 32, 32)), params)
    audio = ResNet18Encoder(ModalitySpec("audio", "spectrogram", (1, 32, 32)), params)
    torch.testing.assert_close(visual.stages[3].body[0][1].conv2.weight, reference.layer4[1].conv2.weight)
    torch.testing.assert_close(audio.stages[0].body[0].weight, reference.conv1.weight.mean(dim=1, keepdim=True))
    assert ResNet18Encoder.weights_identity(params) == f"sha256:{hashlib.sha256(path.read_bytes()).hexdigest()}"
    assert ResNet18Encoder.weights_identity(ResNet18Params()) is None
    torch.save({"conv1.weight": reference.conv1.weight}, tmp_path / "partial.pth")
    with pytest.raises(ValueError, match="not a torchvision ResNet-18 state_dict: missing"):
        ResNet18Encoder(VISUAL, ResNet18Params(weights=str(tmp_path / "partial.pth")))
    with pytest.raises(ValidationError, match="no weights file"):
        ResNet18Params(weights=str(tmp_path / "absent.pth"))


def test_a_smoke_run_builds_resnet18s_layout_narrower_at_the_same_input_shapes(tmp_path):
    clip = ModalitySpec("visual", "frames", (3, 2, 64, 64))
    params = ResNet18Encoder.fake_params(ResNet18Params())
    assert (params.width, params.weights) == (8, None)
    full, narrow = ResNet18Encoder(clip, ResNet18Params()).eval(), ResNet18Encoder(clip, params).eval()
    h_full = h_narrow = torch.randn(2, 3, 2, 64, 64)
    with torch.no_grad():
        for full_stage, narrow_stage in zip(full.blocks(), narrow.blocks(), strict=True):
            h_full, h_narrow = full_stage(h_full), narrow_stage(h_narrow)
            assert h_narrow.shape[0] == h_full.shape[0] and h_narrow.shape[2:] == h_full.shape[2:]
            assert h_narrow.shape[1] * 8 == h_full.shape[1]
    assert narrow.out_dim == h_narrow.shape[1] == 64
    assert [type(m).__name__ for m in narrow.modules()] == [type(m).__name__ for m in full.modules()]
    weights = tmp_path / "w.pth"
    weights.write_bytes(b"x")
    with pytest.raises(ValidationError, match="64 wide, not 8"):
        ResNet18Params(weights=str(weights), width=8)
