"""MLB's audio-visual encoders: `conformer` (Wav2Vec2 + Conformer) and `efficientnet_b2` (face features +
Conformer). Parameter counts of the standard configs, on the meta device, against counts measured from torchaudio
and timm or derived layer by layer from MLB's released architecture (kkontras/MLB @ 357b5ce1bcb7)."""

import hashlib
import math

import pytest
import torch
from pydantic import ValidationError

from mmbench.api import Incompatible, ModalitySpec
from mmbench_plugins.encoders.conformer import (
    ConformerEncoderParams,
    ConformerParams,
    ConformerStack,
    Wav2Vec2Conformer,
    sinusoid,
)
from mmbench_plugins.encoders.efficientnet_b2 import EfficientNetB2Conformer, EfficientNetB2Params
from mmbench_plugins.encoders.weights import weights_identity
from tests.fixtures.tiny_av import SAMPLES, TINY_FRONT_END, TINY_STACK, audio_params, visual_params

AUDIO = ModalitySpec("audio", "audio", (SAMPLES,))
FRAMES = ModalitySpec("visual", "visual", (3, 2, 32, 32))
FEATURES = ModalitySpec("visual", "visual", (2, 1408))


def count(module) -> int:
    return sum(p.numel() for p in module.parameters())


# ------------------------------------------------------------------------- parameter counts

#: measured: torchaudio Conformer 512/8/2048/k31, five layers
TORCHAUDIO_5_BLOCKS = 30_302_720


def test_the_standard_audio_encoder_has_the_reference_parameter_count():
    with torch.device("meta"):
        enc = Wav2Vec2Conformer(ModalitySpec("audio", "audio", (48_000,)), ConformerEncoderParams())
    # facebook/wav2vec2-large-robust's first 12 layers, analytic, term by term: feature encoder (7 convs with bias +
    # LayerNorm each), feature projection (LayerNorm 512 + Linear 512->1024), convolutional position embedding
    # (1024x1024/16 x128 + bias + weight-norm gain 128), final LayerNorm, 12 layers of 12,596,224, masked-frame
    # embedding 1024
    convs = (1 * 512 * 10 + 512) + 4 * (512 * 512 * 3 + 512) + 2 * (512 * 512 * 2 + 512) + 7 * 2 * 512
    layer = 4 * (1024 * 1024 + 1024) + 2 * 2 * 1024 + (1024 * 4096 + 4096) + (4096 * 1024 + 1024)
    wav2vec2 = convs + (2 * 512 + 512 * 1024 + 1024) + (1024 * 64 * 128 + 1024 + 128) + 2 * 1024 + 12 * layer + 1024
    assert convs == 4_210_176 and layer == 12_596_224  # 4.21M and 12.60M
    assert count(enc.wav2vec2) == wav2vec2 and round(wav2vec2 / 1e5) / 10 == 164.3  # ~164.3M
    assert count(enc.stack.blocks) == TORCHAUDIO_5_BLOCKS
    assert count(enc.stack) == 1024 * 50 + (50 * 512 + 512) + TORCHAUDIO_5_BLOCKS  # bias-free 1x1 conv, Linear
    assert enc.out_dim == 512


def test_the_standard_video_encoder_has_the_reference_parameter_count():
    with torch.device("meta"):
        enc = EfficientNetB2Conformer(ModalitySpec("visual", "visual", (3, 3, 224, 224)), EfficientNetB2Params())
    assert count(enc.cnn) == 7_700_994  # timm efficientnet_b2 without head (measured)
    # analytic: MLB's stack is 1408*50 + (50*512+512) + 5 x 6,323,200 = 31,712,512 (~31.71M); torchaudio's
    # blocks lack the relative-position projection (262,144 + 1,024) and add a depthwise bias (512) per block
    assert 1408 * 50 + (50 * 512 + 512) + 5 * 6_323_200 == 31_712_512
    assert count(enc.stack) == 31_712_512 - 5 * (262_144 + 1_024 - 512)


def test_precomputed_features_skip_the_cnn():
    enc = EfficientNetB2Conformer(FEATURES, visual_params())
    assert enc.cnn is None and count(enc) == count(enc.stack)
    assert enc(torch.randn(3, 2, 1408)).shape == (3, TINY_STACK["width"])


# ------------------------------------------------------------------------------------------ the stack


def test_sinusoid_values():
    table = sinusoid(2, 4)  # ω = (1, 10000^(-1/2) = 0.01)
    expected = torch.tensor([[0.0, 1.0, 0.0, 1.0],
                             [math.sin(1), math.cos(1), math.sin(0.01), math.cos(0.01)]])
    torch.testing.assert_close(table, expected)
    assert sinusoid(3, 5).shape == (3, 5)  # odd widths: one more sine than cosine column


def test_the_position_encoding_is_added_after_the_projection():
    params = ConformerParams(width=4, layers=1, heads=2, ffn=8, kernel=3, dropout=0.0)
    torch.manual_seed(0)
    stack = ConformerStack(3, params).eval()
    x = torch.randn(2, 5, 3)
    with torch.no_grad():
        h = stack.project(x) + sinusoid(5, 4)
        expected = stack.blocks[0](h.transpose(0, 1), None).transpose(0, 1)
        torch.testing.assert_close(stack(x), expected)


@pytest.mark.parametrize("layout, independent", [("batch_first", True), ("seq_first", False)])
def test_batch_first_keeps_samples_apart_and_seq_first_reproduces_mlbs_mixing(layout, independent):
    """MLB's encoders hand (time, batch, dim) to batch-first blocks: a sample's features then depend on the
    other samples of its batch. The default layout keeps them independent."""
    torch.manual_seed(0)
    enc = EfficientNetB2Conformer(FEATURES, visual_params(layout=layout)).eval()
    x = torch.randn(3, 2, 1408)
    other = torch.cat([x[:1], torch.randn(2, 2, 1408)])
    with torch.no_grad():
        same = torch.allclose(enc(x)[0], enc(other)[0], atol=1e-5)
    assert same is independent


def test_forward_is_the_time_mean_of_tokens():
    torch.manual_seed(0)
    enc = Wav2Vec2Conformer(AUDIO, audio_params()).eval()
    x = torch.randn(2, SAMPLES)
    with torch.no_grad():
        tokens = enc.tokens(x)
        torch.testing.assert_close(enc(x), tokens.mean(1))
    # two convolutions (kernel 10 stride 5, kernel 3 stride 2): (400-10)//5+1 = 79 -> (79-3)//2+1 = 39 frames
    assert tokens.shape == (2, 39, TINY_STACK["width"])


# ------------------------------------------------------------------------------------- audio inputs


def test_the_attention_mask_reaches_wav2vec2():
    """A clip padded with zeros and masked gives, on its real frames, what the unpadded clip gives."""
    torch.manual_seed(0)
    enc = Wav2Vec2Conformer(ModalitySpec("audio", "audio", (800,)), audio_params()).eval()
    clip = torch.randn(1, SAMPLES)
    padded = torch.cat([clip, torch.zeros(1, 800 - SAMPLES)], 1)
    mask = (torch.arange(800) < SAMPLES).long().unsqueeze(0)
    with torch.no_grad():
        alone = enc.front_end(clip)
        masked = enc.front_end({"input_values": padded, "attention_mask": mask})
        unmasked = enc.front_end(padded)
    real = alone.shape[1]
    torch.testing.assert_close(masked[:, :real], alone, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(unmasked[:, :real], alone, atol=1e-3)


def test_an_absent_waveform_is_silence_with_every_sample_marked_real():
    enc = Wav2Vec2Conformer(AUDIO, audio_params())
    x = {"input_values": torch.randn(2, SAMPLES), "attention_mask": torch.zeros(2, SAMPLES, dtype=torch.long)}
    absent = enc.absent_input(x)
    assert absent["input_values"].abs().sum() == 0 and absent["attention_mask"].tolist() == [[1] * SAMPLES] * 2
    assert enc.absent_input(x["input_values"]).abs().sum() == 0


def test_a_mapping_without_input_values_is_refused_with_the_keys_it_had():
    enc = Wav2Vec2Conformer(AUDIO, audio_params())
    with pytest.raises(ValueError, match=r"'input_values'.*\['mask', 'wave'\]"):
        enc({"wave": torch.randn(1, SAMPLES), "mask": torch.ones(1, SAMPLES)})


@pytest.mark.parametrize("shape, message", [((1, 257, 188), "raw waveform"), ((8,), "too few")])
def test_audio_inputs_it_cannot_read_make_the_cell_incompatible(shape, message):
    with pytest.raises(Incompatible, match=message):
        Wav2Vec2Conformer(ModalitySpec("audio", "audio", shape), audio_params())


@pytest.mark.parametrize("shape", [(2, 512), (1, 2, 32, 32), (3, 32, 32)])
def test_visual_inputs_it_cannot_read_make_the_cell_incompatible(shape):
    with pytest.raises(Incompatible, match="frames"):
        EfficientNetB2Conformer(ModalitySpec("visual", "visual", shape), visual_params())


# --------------------------------------------------------------------------------------- parameters


@pytest.mark.parametrize("changes, message", [
    ({"width": 10, "heads": 4}, "must divide width"),
    ({"kernel": 4}, "kernel must be odd"),
    ({"pretrained": "facebook/wav2vec2-large-robust", "front_end": TINY_FRONT_END}, "front_end"),
    ({"front_end": {**TINY_FRONT_END, "conv_stride": (5,)}}, "one entry per convolution"),
])
def test_inconsistent_parameters_are_refused(changes, message):
    with pytest.raises(ValidationError, match=message):
        ConformerEncoderParams(**{**TINY_STACK, **changes})


def test_precomputed_features_with_cnn_weights_are_refused(tmp_path):
    weights = tmp_path / "cnn.pt"
    weights.write_bytes(b"x")
    with pytest.raises(ValueError, match="precomputed features"):
        EfficientNetB2Conformer(FEATURES, visual_params(pretrained=str(weights)))


# ------------------------------------------------------------------------------------ frozen face CNN


@pytest.mark.parametrize("freeze", [True, False])
def test_a_frozen_face_cnn_stays_in_eval_mode_and_gets_no_gradient(freeze):
    torch.manual_seed(0)
    enc = EfficientNetB2Conformer(FRAMES, visual_params(freeze=freeze)).train()
    assert enc.cnn.training is not freeze and enc.stack.training
    enc(torch.randn(2, 3, 2, 32, 32)).sum().backward()
    cnn_grads = [p.grad for p in enc.cnn.parameters()]
    assert all(g is None for g in cnn_grads) is freeze
    assert all(p.grad is not None for p in enc.stack.parameters())


def test_by_default_the_face_cnn_is_frozen_only_when_its_weights_are_loaded(tmp_path):
    import timm

    path = tmp_path / "cnn.pt"
    torch.save(timm.create_model("efficientnet_b2", pretrained=False, num_classes=0).state_dict(), path)
    assert EfficientNetB2Conformer(FRAMES, visual_params(pretrained=str(path))).frozen
    assert not EfficientNetB2Conformer(FRAMES, visual_params()).frozen


def _stage_shapes(cnn, images):
    """The feature-map shape after the stem and after each stage."""
    shapes, x = [], cnn.bn1(cnn.conv_stem(images))
    for stage in cnn.blocks:
        x = stage(x)
        shapes.append(tuple(x.shape))
    return shapes


def test_a_smoke_cnn_keeps_each_stage_of_efficientnet_b2_with_one_block():
    """A smoke run's CNN checks the wiring: the stages' first blocks (their strides and widths) and the 1408-d
    output of EfficientNet-B2, without its repeated blocks."""
    from mmbench_plugins.encoders.efficientnet_b2 import build_cnn

    whole, smoke = build_cnn(EfficientNetB2Params()), build_cnn(EfficientNetB2Params(blocks_per_stage=1))
    assert [len(stage) for stage in whole.blocks] == [2, 3, 3, 4, 4, 5, 2]
    assert [len(stage) for stage in smoke.blocks] == [1] * 7
    assert [type(s[0]) for s in smoke.blocks] == [type(s[0]) for s in whole.blocks]
    images = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert _stage_shapes(smoke.eval(), images) == _stage_shapes(whole.eval(), images)
        assert smoke(images).shape == whole(images).shape == (1, 1408)
    fake = EfficientNetB2Conformer.fake_params(visual_params(pretrained="efficientnet_b2.ra_in1k"))
    assert fake.blocks_per_stage == 1 and fake.pretrained is None
    with pytest.raises(ValidationError, match="drop blocks_per_stage"):
        visual_params(pretrained="efficientnet_b2.ra_in1k", blocks_per_stage=1)


def test_frames_are_encoded_one_by_one_in_sample_order():
    torch.manual_seed(0)
    enc = EfficientNetB2Conformer(FRAMES, visual_params()).eval()
    x = torch.randn(2, 3, 2, 32, 32)
    with torch.no_grad():
        per_frame = torch.stack([torch.stack([enc.cnn(x[b, :, t].unsqueeze(0))[0] for t in range(2)])
                                 for b in range(2)])
        torch.testing.assert_close(enc.front_end(x), per_frame, atol=1e-5, rtol=1e-4)


# ------------------------------------------------------------------------------------ pretrained weights


def test_weights_identity_of_none_hub_names_and_local_files(tmp_path):
    assert weights_identity(None) is None
    assert weights_identity("facebook/wav2vec2-large-robust") == "hub:facebook/wav2vec2-large-robust"
    assert weights_identity("facebook/wav2vec2-large-robust", "abc123") == "hub:facebook/wav2vec2-large-robust@abc123"
    file = tmp_path / "w.pt"
    file.write_bytes(b"weights")
    assert weights_identity(str(file)) == "sha256:" + hashlib.sha256(b"weights").hexdigest()
    with pytest.raises(FileNotFoundError, match="no such file"):
        weights_identity(str(tmp_path / "missing.pt"))


def test_a_directory_identity_changes_with_any_of_its_files(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "model.safetensors").write_bytes(b"a")
    before = weights_identity(str(tmp_path))
    (tmp_path / "config.json").write_text('{"x": 1}')
    assert before.startswith("sha256:") and weights_identity(str(tmp_path)) != before
    assert Wav2Vec2Conformer.weights_identity(audio_params(pretrained=str(tmp_path), front_end={})) \
        == weights_identity(str(tmp_path))


def test_wav2vec2_weights_load_from_a_local_directory_cut_to_keep_layers(tmp_path):
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    config = Wav2Vec2Config(
        hidden_size=16, num_hidden_layers=3, num_attention_heads=2, intermediate_size=32, conv_dim=[8, 8],
        conv_kernel=[10, 3], conv_stride=[5, 2], num_feat_extract_layers=2, num_conv_pos_embeddings=4,
        num_conv_pos_embedding_groups=2, feat_extract_norm="layer", do_stable_layer_norm=True, conv_bias=True)
    torch.manual_seed(1)
    saved = Wav2Vec2Model(config)
    saved.save_pretrained(tmp_path)
    enc = Wav2Vec2Conformer(AUDIO, ConformerEncoderParams(**TINY_STACK, pretrained=str(tmp_path), keep_layers=2))
    assert len(enc.wav2vec2.encoder.layers) == 2
    torch.testing.assert_close(enc.wav2vec2.encoder.layers[1].feed_forward.output_dense.weight,
                               saved.encoder.layers[1].feed_forward.output_dense.weight)
    # loaded weights: the convolutional feature encoder is frozen (MLB), the transformer layers train
    assert not any(p.requires_grad for p in enc.wav2vec2.feature_extractor.parameters())
    assert all(p.requires_grad for p in enc.wav2vec2.encoder.parameters())
    with pytest.raises(ValueError, match="has 3 transformer layers; keep_layers is 4"):
        Wav2Vec2Conformer(AUDIO, ConformerEncoderParams(**TINY_STACK, pretrained=str(tmp_path), keep_layers=4))


def test_cnn_weights_load_from_a_state_dict_file_ignoring_a_classifier(tmp_path):
    import timm

    torch.manual_seed(1)
    source = timm.create_model("efficientnet_b2", pretrained=False, num_classes=8)  # like HSEmotion's 8 classes
    path = tmp_path / "enet_b2_8.pt"
    torch.save(source.state_dict(), path)
    with pytest.warns(UserWarning, match="ignored 2 weights.*classifier"):
        enc = EfficientNetB2Conformer(FRAMES, visual_params(pretrained=str(path)))
    torch.testing.assert_close(enc.cnn.conv_stem.weight, source.conv_stem.weight)


def test_a_pickled_model_or_a_foreign_state_dict_gets_a_clear_message(tmp_path):
    pickled = tmp_path / "model.pt"
    torch.save(torch.nn.Linear(2, 2), pickled)
    with pytest.raises(ValueError, match=r"state_dict\(\)"):
        EfficientNetB2Conformer(FRAMES, visual_params(pretrained=str(pickled)))
    foreign = tmp_path / "foreign.pt"
    torch.save(torch.nn.Linear(2, 2).state_dict(), foreign)
    with pytest.raises(ValueError, match="lacks .* of the model's weights"):
        EfficientNetB2Conformer(FRAMES, visual_params(pretrained=str(foreign)))
