"""The training engine: determinism, model selection, evaluation outputs, divergence, hook order."""

import math

import torch

from mmbench.protocols import Balancer
from mmbench.testing import train_tiny


def test_cpu_runs_are_bit_for_bit_repeatable():
    a = train_tiny("joint", epochs=2, seed=3)
    b = train_tiny("joint", epochs=2, seed=3)
    c = train_tiny("joint", epochs=2, seed=4)
    assert [h.train_loss for h in a.history] == [h.train_loss for h in b.history]
    assert a.test.metrics == b.test.metrics
    assert [h.train_loss for h in a.history] != [h.train_loss for h in c.history]


def test_selected_model_is_the_best_validation_epoch():
    out = train_tiny("joint", epochs=4, seed=0, lr=0.2)
    scores = [h.val.metrics["accuracy"] for h in out.history]
    assert out.best_epoch == scores.index(max(scores))
    assert out.val.metrics["accuracy"] == max(scores)


def test_evaluation_reports_unimodal_and_missing_modality_metrics():
    out = train_tiny("joint", epochs=2)
    assert set(out.test.unimodal) == {"fast", "slow"} == set(out.test.missing_modality)
    # with two modalities and no heads, "fast alone" is exactly "slow missing"
    assert out.test.unimodal["fast"] == out.test.missing_modality["slow"]
    assert set(out.test.metrics) == {"accuracy", "macro_f1", "ece"}


def test_unimodal_heads_give_unimodal_metrics():
    out = train_tiny("unimodal", epochs=2)
    assert out.test.unimodal["fast"] != out.test.missing_modality["slow"]


class NaNAfterFirstEpoch(Balancer):
    name = "nan_after_first_epoch"

    def loss(self, ctx, batch, out):
        loss = super().loss(ctx, batch, out)
        return loss * float("nan") if ctx.epoch >= 1 else loss


def test_non_finite_loss_stops_the_cell_as_diverged():
    out = train_tiny(NaNAfterFirstEpoch, epochs=4)
    assert out.status == "diverged" and out.diverged_epoch == 1
    assert len(out.history) == 1 and out.test is None


class Recorder(Balancer):
    name = "recorder"
    calls: list[str] = []

    def setup(self, ctx):
        self.calls.append("setup")

    def on_epoch_start(self, ctx):
        self.calls.append(f"start{ctx.epoch}")

    def after_backward(self, ctx, batch, out):
        assert all(p.grad is not None for p in ctx.model.encoders["fast"].parameters())
        self.calls.append("after_backward")

    def on_epoch_end(self, ctx, stats):
        assert stats.val is not None and math.isfinite(stats.train_loss)
        self.calls.append(f"end{ctx.epoch}")

    def coefficients(self):
        return {"k": float(len(self.calls))}


def test_hooks_run_in_order_and_coefficients_are_recorded_each_epoch():
    Recorder.calls = []
    out = train_tiny(Recorder, epochs=2)
    steps = 256 // 32
    assert Recorder.calls == ["setup", "start0", *["after_backward"] * steps, "end0",
                              "start1", *["after_backward"] * steps, "end1"]
    assert [h.coefficients for h in out.history] == [{"k": 3.0 + steps}, {"k": 5.0 + 2 * steps}]


def test_optimizer_has_one_group_per_model_group():
    seen = {}

    class Inspect(Balancer):
        name = "inspect"

        def setup(self, ctx):
            seen["groups"] = [g["name"] for g in ctx.optimizer.param_groups]
            seen["params"] = sum(len(g["params"]) for g in ctx.optimizer.param_groups)
            seen["total"] = len(list(ctx.model.parameters()))

    train_tiny(Inspect, epochs=1)
    assert seen["groups"] == ["encoder.fast", "encoder.slow", "fusion"]
    assert seen["params"] == seen["total"]


def test_profile_is_recorded():
    out = train_tiny("joint", epochs=1)
    prof = out.profile
    assert prof["epochs"] == 1 and prof["step_ms"]["median"] > 0 and prof["samples_per_second"] > 0
    assert 0 <= prof["data_wait_fraction"] < 1 and prof["peak_host_rss_bytes"] > 0
    assert prof["params"]["total"] == prof["params"]["trainable"] > 0
    assert torch.get_default_dtype() == torch.float32


def test_dropping_a_modality_of_an_intermediate_fusion_zeroes_its_input():
    """Inside-encoder fusions mix modalities before pooling: a dropped modality's input must not reach them."""
    from mmbench.engine import build_model
    from mmbench.testing import tiny_components

    components = tiny_components("joint", fusion="mmtm")
    model = build_model(components, components.balancer[0](components.balancer[1])).eval()
    batch = {m: torch.randn(4, *spec.shape) for m, spec in components.task.modalities.items()}
    other = {**batch, "fast": torch.randn(4, *components.task.modalities["fast"].shape)}
    with torch.no_grad():
        a, b = model(batch, drop={"fast"}), model(other, drop={"fast"})
        kept = model(other)
    torch.testing.assert_close(a.logits, b.logits)  # nothing of the dropped input gets through
    assert not torch.allclose(kept.logits, b.logits)
    assert torch.equal(a.features["fast"], torch.zeros_like(a.features["fast"]))
