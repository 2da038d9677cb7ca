"""The contract every registered plugin must keep, parametrized over whatever is installed."""

import pytest
import torch

from mmbench import registry as registry_lib
from mmbench.contract.balancer import Balancer
from mmbench.running.worker import departures
from mmbench.schema.params import Params
from mmbench.testing import check_balancer, forbid_host_sync, train_tiny
from mmbench.training import engine

REGISTRY = registry_lib.default()


def names(kind):
    return REGISTRY.names(kind)


def test_no_plugin_problems():
    assert REGISTRY.problems == []


def test_every_task_default_names_an_installed_task():
    """A per-task default keyed by a name no installed task has is never applied (a typo drops a paper's value
    silently). A new dataset needs no balancer's defaults: they are the papers' values for their datasets."""
    assert REGISTRY.unknown_task_defaults() == {}


def test_every_method_names_its_differences_from_the_official_code():
    """The board's method pages show each method's departures from its official code (or reference
    implementation), cut from its module docstring at the line that names them; the baselines have none."""
    without = {name for name in names("balancers")
               if departures(REGISTRY.get("balancers", name).cls) is None}
    assert without == {"joint", "unimodal", "modality_dropout"} & set(names("balancers"))


@pytest.mark.parametrize("name", names("tasks"))
def test_task_contract(name):
    cls = REGISTRY.get("tasks", name).cls
    assert issubclass(cls.Params, Params) and cls.version and cls.primary_metric in cls.metrics


def test_synthetic_task_yields_declared_modalities():
    task = REGISTRY.get("tasks", "synthetic").cls(REGISTRY.get("tasks", "synthetic").cls.Params(
        train_size=20, val_size=10, test_size=10))
    sample = task.splits()["val"][0]
    for m, spec in task.modalities.items():
        assert tuple(sample[m].shape) == spec.shape
    assert 0 <= int(sample["label"]) < task.num_classes


@pytest.mark.parametrize("name", names("encoders"))
def test_encoder_contract(name):
    cls = REGISTRY.get("encoders", name).cls
    task_cls = REGISTRY.get("tasks", "synthetic").cls
    task = task_cls(task_cls.Params(train_size=20, val_size=10, test_size=10))
    for modality in task.modalities.values():
        if cls.accepts is not None and modality.kind not in cls.accepts:
            continue
        encoder = cls(modality, cls.Params())
        x = torch.stack([task.splits()["val"][i][modality.name] for i in range(3)])
        assert encoder(x).shape == (3, encoder.out_dim)


@pytest.mark.parametrize("name", names("fusions"))
def test_fusion_contract(name):
    cls = REGISTRY.get("fusions", name).cls
    fusion = cls({"a": 4, "b": 4}, 3, cls.Params())
    shape = (5, 2, 4) if cls.uses_tokens else (5, 4)  # a fusion over tokens reads (B, T, D) sequences
    features = {"a": torch.randn(shape), "b": torch.randn(shape)}
    out = fusion(features)
    assert out.logits.shape == (5, 3)
    if cls.offers_contributions:
        assert set(out.contributions) == {"a", "b"}
        torch.testing.assert_close(sum(out.contributions.values()), out.logits)
    else:
        assert out.contributions == {}


@pytest.fixture
def guarded_engine_step(monkeypatch):
    """The engine's whole training step (the balancer's step inside it) runs under `forbid_host_sync`."""
    unguarded = engine.step

    def guarded(*args):
        with forbid_host_sync():
            return unguarded(*args)

    monkeypatch.setattr(engine, "step", guarded)


@pytest.mark.parametrize("name", names("balancers"))
def test_balancer_contract(name, guarded_engine_step):
    """One epoch on the synthetic task: finite loss, metrics, coefficients reported as floats, and no
    host-device synchronisation inside a training step — the engine's step around the balancer's
    included (`mmbench.testing.check_balancer`)."""
    check_balancer(REGISTRY.get("balancers", name).cls)


class SyncsInTheLoss(Balancer):
    name = "syncs_in_the_loss"

    def loss(self, ctx, batch, out):
        loss = super().loss(ctx, batch, out)
        self.last = loss.item()  # a host read every step
        return loss


class NoCoefficients(Balancer):
    name = "no_coefficients"


class BadDefaults(Balancer):
    name = "bad_defaults"
    task_defaults = {"synthetic": {"alpha": 1.0}}  # NoParams: no such parameter


@pytest.mark.parametrize("cls, message", [
    (SyncsInTheLoss, "host-device sync in a training step: Tensor.item"),
    (NoCoefficients, "no_coefficients reports no coefficients"),
    (BadDefaults, "alpha"),
])
def test_check_balancer_names_the_broken_rule(cls, message):
    with pytest.raises(Exception, match=message):
        check_balancer(cls)


def test_the_host_sync_guard_catches_a_sync():
    class Syncs(REGISTRY.get("balancers", "joint").cls):
        name = "syncs"

        def after_backward(self, ctx, batch, out):
            if out.logits.sum() > 0:  # a Python branch on a tensor value is a sync
                pass

    x = torch.ones(2)
    with forbid_host_sync(), pytest.raises(AssertionError, match="Tensor.__bool__"):
        Syncs.after_backward(None, None, None, type("Out", (), {"logits": x})())
    assert float(x.sum()) == 2.0  # restored afterwards


def test_the_guard_around_the_engine_step_catches_a_sync_in_a_train_step(guarded_engine_step):
    class ReadsTheLoss(REGISTRY.get("balancers", "joint").cls):
        name = "reads_the_loss"

        def train_step(self, ctx, batch):
            loss, out = super().train_step(ctx, batch)
            loss.item()  # e.g. logging every step
            return loss, out

    with pytest.raises(AssertionError, match=r"Tensor.item\(\)"):
        train_tiny(ReadsTheLoss, epochs=1)
