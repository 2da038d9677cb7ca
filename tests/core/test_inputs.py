"""The input contract: a modality's inputs may be a mapping (ids + mask); an encoder declares what an absent
input is; augmented views travel apart from the inputs; pretrained-weight identity enters the cell id."""

import hashlib

import torch
from pydantic import Field
from torch import nn

from mmbench.api import Encoder, ModalitySpec, Params, Task, TensorDictDataset, hookimpl
from mmbench.schema.recipe import TrainRecipe
from mmbench.training.engine import CellComponents, build_model, collate, train
from mmbench_plugins.balancers.joint import Joint
from mmbench_plugins.encoders.mlp import MLPEncoder
from mmbench_plugins.fusions.concat import ConcatFusion
from mmbench_plugins.fusions.mmtm import MMTMFusion, MMTMParams

CLS, SEP, PAD = 1, 2, 0


class TokenDataset(TensorDictDataset):
    """`text` is `{"ids": (L,), "mask": (L,)}`: the class is written as a token id; `vec` is noise."""

    def __getitem__(self, index):
        sample = super().__getitem__(index)
        ids = sample.pop("ids")
        sample["text"] = {"ids": ids, "mask": ids != PAD}
        return sample


class TokenTask(Task):
    name = "tokens"
    version = "1"

    @property
    def modalities(self):
        return {"text": ModalitySpec("text", "tokens", (6,)), "vec": ModalitySpec("vec", "vector", (4,))}

    @property
    def num_classes(self):
        return 3

    def splits(self):
        gen = torch.Generator().manual_seed(0)
        out = {}
        for split, n in (("train", 96), ("val", 48), ("test", 48)):
            y = torch.randint(0, 3, (n,), generator=gen)
            ids = torch.full((n, 6), PAD)
            ids[:, 0], ids[:, 1], ids[:, 2] = CLS, 3 + y, SEP
            out[split] = TokenDataset({"ids": ids, "vec": torch.randn(n, 4, generator=gen)}, y)
        return out


class BagParams(Params):
    dim: int = Field(8, ge=1)


class BagOfTokens(Encoder):
    """Mean of the embeddings of the unmasked tokens; an absent text is `[CLS] [SEP]`."""

    name = "bag"
    Params = BagParams

    def __init__(self, modality, params):
        super().__init__(modality, params)
        self.embed = nn.Embedding(16, params.dim)
        self.out_dim = params.dim

    def forward(self, x):
        mask = x["mask"].unsqueeze(-1).float()
        return (self.embed(x["ids"]) * mask).sum(1) / mask.sum(1).clamp_min(1)

    def absent_input(self, x):
        ids = torch.full_like(x["ids"], PAD)
        ids[:, 0], ids[:, 1] = CLS, SEP
        return {"ids": ids, "mask": ids != PAD}


def _components():
    task = TokenTask(TokenTask.Params())
    return CellComponents(task=task, encoders={"text": (BagOfTokens, BagParams()),
                                               "vec": (MLPEncoder, MLPEncoder.Params(hidden=8, out_dim=8))},
                          fusion=(ConcatFusion, ConcatFusion.Params()), balancer=(Joint, Joint.Params()))


def test_a_modality_given_as_ids_and_mask_trains_end_to_end():
    components = _components()
    batch = collate([components.task.splits()["train"][i] for i in range(5)])
    assert set(batch.inputs["text"]) == {"ids", "mask"} and batch.inputs["text"]["ids"].shape == (5, 6)
    out = train(components, TrainRecipe(epochs=8, batch_size=16, device="cpu"), seed=0)
    assert out.status == "ok"
    assert out.test.unimodal["text"]["accuracy"] > 0.9  # the class is in the tokens
    assert set(out.test.missing_modality) == {"text", "vec"}


def test_dropping_a_modality_uses_the_encoders_absent_input():
    components = _components()
    model = build_model(components, Joint(Joint.Params())).eval()
    batch = collate([components.task.splits()["test"][i] for i in range(4)])
    absent = model.without(batch.inputs, {"text"})
    assert absent["text"]["ids"][:, :3].tolist() == [[CLS, SEP, PAD]] * 4 and absent["vec"] is batch.inputs["vec"]


class SevensForAbsent(MLPEncoder):
    name = "sevens"

    def absent_input(self, x):
        return torch.full_like(x, 7.0)


def test_an_intermediate_fusion_sees_the_absent_input_of_a_dropped_modality():
    from mmbench.testing import tiny_components

    base = tiny_components("joint", fusion="mmtm")
    params = SevensForAbsent.Params(hidden=16, layers=2, out_dim=8)
    components = CellComponents(task=base.task, encoders={m: (SevensForAbsent, params) for m in base.task.modalities},
                                fusion=(MMTMFusion, MMTMParams()), balancer=base.balancer)
    model = build_model(components, Joint(Joint.Params())).eval()
    batch = collate([base.task.splits()["test"][i] for i in range(4)])
    replaced = {**batch.inputs, "fast": torch.full_like(batch.inputs["fast"], 7.0)}
    with torch.no_grad():
        dropped = model(batch.inputs, drop={"fast"})
        by_hand = model.head(model.encode(replaced), drop={"fast"})
    torch.testing.assert_close(dropped.logits, by_hand.logits)


class Pretrained(MLPEncoder):
    name = "pretrained_mlp"

    class Params(MLPEncoder.Params):
        weights: str | None = None

    @classmethod
    def weights_identity(cls, params):
        if params.weights is None:
            return None
        return "sha256:" + hashlib.sha256(open(params.weights, "rb").read()).hexdigest()


def test_pretrained_weight_identity_enters_the_cell_id(tmp_path):
    """Same parameters, same path, other bytes in the weights file: another cell."""
    from mmbench import registry as registry_lib
    from mmbench.running import grid as grid_lib
    from mmbench.running.cells import expand
    from tests.conftest import TINY_GRID

    class Plugin:
        @hookimpl
        def mmbench_encoders(self):
            return [Pretrained]

    registry = registry_lib.load(extra_plugins=[Plugin()])

    weights = tmp_path / "encoder.pt"

    def cell(content):
        weights.write_bytes(content)
        text = TINY_GRID.replace("name: mlp, params: {hidden: 16",
                                 f"name: pretrained_mlp, params: {{weights: {weights}, hidden: 16")
        return expand(grid_lib.parse(text, registry), registry)[0]

    a, b = cell(b"first"), cell(b"second")
    assert a.encoders["fast"].weights == "sha256:" + hashlib.sha256(b"first").hexdigest()
    assert a.encoders["fast"].params == b.encoders["fast"].params and a.cell_id != b.cell_id
