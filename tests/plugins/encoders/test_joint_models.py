"""The image-text encoders and the joint models: parameter counts of the standard configs (meta device),
the embed_input -> blocks -> readout contract, MMBV's [CLS] exchange, MMBT's segments and positions, and missing
modalities."""

from __future__ import annotations

import pytest
import torch

from mmbench.api import ModalitySpec, Task
from mmbench.schema.recipe import TrainRecipe
from mmbench.training.engine import CellComponents, train
from mmbench.training.model import MultimodalModel
from mmbench_plugins.balancers.joint import Joint
from mmbench_plugins.encoders.bert import BertEncoder
from mmbench_plugins.encoders.resnet152 import ResNet152Encoder
from mmbench_plugins.encoders.vit import ViTEncoder
from mmbench_plugins.fusions.mmbt import MMBTFusion
from mmbench_plugins.fusions.mmbv import MMBVFusion
from tests import ROOT

TEXT = ModalitySpec("text", "tokens", (10,))
IMAGE = ModalitySpec("image", "image", (3, 32, 32))
TINY = {"hidden_size": 16, "num_attention_heads": 2, "intermediate_size": 32}


def bert(layers=2) -> BertEncoder:
    return BertEncoder(TEXT, BertEncoder.Params(num_hidden_layers=layers, vocab_size=50, **TINY))


def vit(layers=3) -> ViTEncoder:
    return ViTEncoder(IMAGE, ViTEncoder.Params(num_hidden_layers=layers, patch_size=16, **TINY))


def text_batch() -> dict[str, torch.Tensor]:
    """Two texts: [CLS]=2 w w w [SEP]=3 (padded) and [CLS] w w w w w w [SEP]."""
    ids = torch.zeros(2, 10, dtype=torch.long)
    ids[0, :5] = torch.tensor([2, 10, 11, 12, 3])
    ids[1, :8] = torch.tensor([2, 20, 21, 22, 23, 24, 25, 3])
    return {"input_ids": ids, "attention_mask": (ids != 0).long(), "token_type_ids": torch.zeros_like(ids)}


def count(module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_standard_configs_have_the_reference_parameter_counts():
    with torch.device("meta"):
        text = BertEncoder(ModalitySpec("text", "tokens", (512,)), BertEncoder.Params())
        image = ViTEncoder(ModalitySpec("image", "image", (3, 224, 224)), ViTEncoder.Params())
        cnn = ResNet152Encoder(ModalitySpec("image", "image", (3, 224, 224)), ResNet152Encoder.Params(tokens=3))
        mmbt = MMBTFusion({"text": 768, "image": 2048}, 23, MMBTFusion.Params())
        mmbt.bind({"text": text, "image": cnn})
    mmbv = MMBVFusion({"text": 768, "image": 768}, 13, MMBVFusion.Params())
    assert count(text) == 109_482_240  # BERT-base with its pooler (transformers' BertModel, measured)
    assert count(image) == 85_798_656  # ViT-B/16 without the pooler MMBV does not use (measured)
    assert count(cnn) == 58_143_808  # ResNet-152 trunk (torchvision, measured)
    assert count(mmbv) == 1537 * 13  # the concat head on both [CLS]
    assert count(mmbt) == 1_573_632 + 769 * 23  # projection 2048 -> 768 and the classifier (MMBT, analytic)


@pytest.mark.parametrize("make, x", [(bert, text_batch), (vit, lambda: torch.randn(2, 3, 32, 32))])
def test_embed_blocks_readout_compose_to_forward(make, x):
    torch.manual_seed(0)
    encoder, inputs = make().eval(), x()
    hidden, mask = encoder.embed_input(inputs)
    for i in range(len(encoder.blocks())):
        hidden = encoder.run_block(i, hidden, mask)
    torch.testing.assert_close(encoder.readout(hidden), encoder(inputs))


def test_a_missing_text_is_cls_sep():
    absent = bert().absent_input(text_batch())
    assert absent["input_ids"].tolist() == [[2, 3] + [0] * 8] * 2
    assert absent["attention_mask"].tolist() == [[1, 1] + [0] * 8] * 2 and not absent["token_type_ids"].any()


def test_resnet152_tokens_are_mmbt_s_pooled_grid():
    encoder = ResNet152Encoder(ModalitySpec("image", "image", (3, 64, 64)), ResNet152Encoder.Params(tokens=3)).eval()
    x = torch.randn(2, 3, 64, 64)
    tokens = encoder.tokens(x)
    assert tokens.shape == (2, 3, 2048)
    fmap = encoder.trunk(x)  # (2, 2048, 2, 2): a 3 x 1 adaptive grid over 2 rows takes rows 0, 0-1, 1
    torch.testing.assert_close(tokens[:, 0], fmap[:, :, 0].mean(-1))
    torch.testing.assert_close(tokens[:, 1], fmap.mean((-2, -1)))
    torch.testing.assert_close(encoder(x), tokens.mean(1))


def recorded(encoder):
    """Wrap `run_block` so every call's (index, input, mask, output) is kept."""
    calls = []
    original = encoder.run_block

    def run_block(index, hidden, mask):
        out = original(index, hidden, mask)
        calls.append((index, hidden, mask, out))
        return out

    encoder.run_block = run_block
    return calls


def test_mmbv_exchanges_cls_tokens_block_by_block():
    torch.manual_seed(0)
    encoders = {"text": bert(layers=3), "image": vit(layers=4)}
    fusion = MMBVFusion({"text": 16, "image": 16}, 5, MMBVFusion.Params())
    fusion.bind(encoders)
    for e in encoders.values():
        e.eval()
    text_calls, image_calls = recorded(encoders["text"]), recorded(encoders["image"])
    inputs = {"text": text_batch(), "image": torch.randn(2, 3, 32, 32)}
    features = fusion.encode(inputs, encoders)
    lt, lv = 10, 5  # 10 word pieces; 4 patches + [CLS]
    assert [c[1].shape[1] for c in text_calls] == [lt, lt + 1, lt + 1]
    assert [c[1].shape[1] for c in image_calls] == [lv, lv + 1, lv + 1, lv + 1]  # the 4th block runs alone
    for i in (1, 2):
        _, t_in, t_mask, _ = text_calls[i]
        _, v_in, _, _ = image_calls[i]
        # block i of each stream sees, as its last token, the other stream's [CLS] after block i - 1
        assert torch.equal(t_in[:, -1], image_calls[i - 1][3][:, 0])
        assert torch.equal(v_in[:, -1], text_calls[i - 1][3][:, 0])
        own_t = text_calls[i - 1][3] if i == 1 else text_calls[i - 1][3][:, :-1]
        own_v = image_calls[i - 1][3] if i == 1 else image_calls[i - 1][3][:, :-1]
        assert torch.equal(t_in[:, :-1], own_t) and torch.equal(v_in[:, :-1], own_v)
        assert torch.equal(t_mask[:, :lt], text_batch()["attention_mask"].bool()) and t_mask[:, -1].all()
    assert torch.equal(image_calls[3][1][:, -1], text_calls[2][3][:, 0])  # the last exchange reaches the 4th block
    torch.testing.assert_close(features["text"], encoders["text"].readout(text_calls[-1][3]))
    torch.testing.assert_close(features["image"], encoders["image"].readout(image_calls[-1][3]))
    features["text"].sum().backward()  # the exchanged tokens stay attached: text's feature trains the ViT
    assert encoders["image"].model.embeddings.patch_embeddings.projection.weight.grad.abs().sum() > 0


def test_mmbv_offers_exact_per_stream_logits_and_drops_a_stream_to_its_absent_input():
    torch.manual_seed(0)
    model = MultimodalModel({"text": bert(), "image": vit()}, MMBVFusion({"text": 16, "image": 16}, 4,
                                                                        MMBVFusion.Params()), 4)
    model.fusion.bind(model.encoders)
    model.eval()
    inputs = {"text": text_batch(), "image": torch.randn(2, 3, 32, 32)}
    out = model(inputs)
    torch.testing.assert_close(out.contributions["text"] + out.contributions["image"], out.logits)
    seen = []
    model.fusion.encode = lambda x, enc, dropped: seen.append(x) or MMBVFusion.encode(model.fusion, x, enc, dropped)
    dropped = model(inputs, drop={"text"})
    assert seen[0]["text"]["input_ids"][:, :2].tolist() == [[2, 3], [2, 3]] and torch.equal(
        seen[0]["image"], inputs["image"])
    assert not dropped.features["text"].any()  # the dropped stream's [CLS] feature is zeroed before the head


def test_mmbt_segments_and_positions():
    torch.manual_seed(0)
    text = bert()
    image = ResNet152Encoder(IMAGE, ResNet152Encoder.Params(tokens=3))
    encoders = {"text": text, "image": image}
    fusion = MMBTFusion({"text": 16, "image": 2048}, 3, MMBTFusion.Params())
    fusion.bind(encoders)
    for module in (text, image, fusion):
        module.eval()
    calls = recorded(text)
    batch = text_batch()
    inputs = {"text": batch, "image": torch.randn(2, 3, 32, 32)}
    features = fusion.encode(inputs, encoders)
    emb = text.model.embeddings
    words, positions = emb.word_embeddings.weight, emb.position_embeddings.weight
    segments = emb.token_type_embeddings.weight
    tokens = image.tokens(inputs["image"])
    sep = torch.stack([words[3], words[3]])[:, None]
    image_segment = torch.cat([words[[2, 2]][:, None], fusion.project(tokens), sep], dim=1)
    expected_image = emb.LayerNorm(image_segment + positions[:5] + segments[0])  # positions 0..N+1, segment 0
    ids = batch["input_ids"][:, 1:]  # the text without its [CLS]; positions restart at 0; segment 1
    expected_text = emb.LayerNorm(words[ids] + positions[:9] + segments[1])
    _, first_input, first_mask, _ = calls[0]
    assert first_input.shape == (2, 5 + 9, 16)
    torch.testing.assert_close(first_input, torch.cat([expected_image, expected_text], dim=1))
    assert torch.equal(first_mask, torch.cat([torch.ones(2, 5, dtype=torch.bool),
                                              batch["attention_mask"][:, 1:].bool()], dim=1))
    torch.testing.assert_close(features["text"], text.readout(calls[-1][3]))  # the pooler on position 0
    torch.testing.assert_close(features["image"], tokens.mean(1))


def test_mmbt_keeps_the_joint_feature_when_the_text_is_missing():
    torch.manual_seed(0)
    encoders = {"text": bert(), "image": ResNet152Encoder(IMAGE, ResNet152Encoder.Params(tokens=3))}
    model = MultimodalModel(encoders, MMBTFusion({"text": 16, "image": 2048}, 3, MMBTFusion.Params()), 3)
    model.fusion.bind(model.encoders)
    model.eval()
    inputs = {"text": text_batch(), "image": torch.randn(2, 3, 32, 32)}
    without_text = model(inputs, drop={"text"})
    assert without_text.features["text"].abs().sum() > 0 and not without_text.contributions
    other_images = model({"text": text_batch(), "image": torch.randn(2, 3, 32, 32)}, drop={"text"})
    assert not torch.allclose(without_text.logits, other_images.logits)  # the image still decides


class TinyImageText(Task):
    """Texts of 10 word pieces and 32 x 32 images; the class is written in the text (id 5 + y) and the image's
    brightness, so both modalities carry it."""

    name = "tiny_image_text"
    version = "1"
    modalities = {"text": TEXT, "image": IMAGE}
    num_classes = 2

    def splits(self):
        gen = torch.Generator().manual_seed(0)
        out = {}
        for split, n in (("train", 8), ("val", 4), ("test", 4)):
            samples = []
            for i in range(n):
                y = i % 2
                text = {k: v[i % 2] for k, v in text_batch().items()}
                text["input_ids"] = text["input_ids"].clone()
                text["input_ids"][1] = 5 + y
                image = torch.randn(3, 32, 32, generator=gen) + 2 * y
                samples.append({"text": text, "image": image, "label": torch.tensor(y)})
            out[split] = samples
        return out


@pytest.mark.parametrize("fusion, image", [(MMBTFusion, (ResNet152Encoder, {"tokens": 3})),
                                           (MMBVFusion, (ViTEncoder, {"num_hidden_layers": 3, "patch_size": 16,
                                                                      **TINY}))])
def test_joint_models_train_and_evaluate_with_missing_modalities(fusion, image):
    torch.set_num_threads(1)
    text = (BertEncoder, BertEncoder.Params(num_hidden_layers=2, vocab_size=50, **TINY))
    image_cls, image_params = image
    components = CellComponents(TinyImageText(TinyImageText.Params()),
                                {"text": text, "image": (image_cls, image_cls.Params(**image_params))},
                                (fusion, fusion.Params()), (Joint, Joint.Params()))
    recipe = TrainRecipe(epochs=1, batch_size=4, optimizer={"name": "adam", "lr": 1e-4}, device="cpu")
    outcome = train(components, recipe, seed=0)
    assert outcome.status == "ok"
    assert set(outcome.test.missing_modality) == {"text", "image"} and set(outcome.test.unimodal) == {"text", "image"}
    assert all(0.0 <= v <= 1.0 for v in outcome.test.metrics.values())


def test_fake_runs_build_large_encoders_small_and_without_weights(registry):

    from mmbench.running import grid as grid_lib
    from mmbench.running.cells import expand

    grid = grid_lib.load(ROOT / "grids" / "moviescope.yaml", registry)
    cell = expand(grid, registry, fake_data=True)[0]
    text, image = cell.encoders["text"], cell.encoders["image"]
    assert text.params["pretrained"] is None and text.params["hidden_size"] == 32 and text.weights is None
    assert image.params["pretrained"] is None and image.params["patch_size"] == 32 and image.weights is None
    grid = grid_lib.load(ROOT / "grids" / "mmimdb.yaml", registry)
    cnn = expand(grid, registry, fake_data=True)[0].encoders["image"]
    assert cnn.params["weights"] is None and cnn.params["width_per_group"] == 8 and cnn.params["tokens"] == 3


@pytest.mark.parametrize("make", [bert, vit])
def test_pretrained_weights_load_from_a_local_folder_and_name_the_cell(make, tmp_path):
    torch.manual_seed(0)
    source = make()
    source.model.save_pretrained(str(tmp_path / "checkpoint"))
    cls, spec = type(source), source.modality
    params = cls.Params(pretrained=str(tmp_path / "checkpoint"))
    loaded = cls(spec, params)
    for name, value in source.model.state_dict().items():
        torch.testing.assert_close(loaded.model.state_dict()[name], value, msg=name)
    assert cls.weights_identity(params).startswith("sha256:")
    hub = cls.Params(pretrained="bert-base-uncased", revision="abc")
    assert cls.weights_identity(hub) == "hub:bert-base-uncased@abc"
    assert cls.weights_identity(cls.Params()) is None
