"""The training engine: determinism, model selection, evaluation outputs, divergence, hook order."""

import math
import sys
import time

import psutil
import pytest
import torch

from mmbench.contract.balancer import Balancer, Requirements
from mmbench.schema.recipe import OptimizerConfig, TrainRecipe
from mmbench.testing import train_tiny
from mmbench.training.engine import train


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


class NaNWeightsAfterSecondEpoch(Balancer):
    """Finite losses throughout epoch 1, but its last step leaves non-finite weights."""

    name = "nan_weights_after_second_epoch"

    def optimizer_step(self, ctx):
        super().optimizer_step(ctx)
        if ctx.epoch == 1 and ctx.step_in_epoch == len(ctx.train_loader) - 1:
            with torch.no_grad():
                next(ctx.model.parameters()).fill_(float("nan"))


def test_non_finite_weights_with_a_finite_loss_stop_the_cell_and_its_result_is_valid_json():
    import json

    from mmbench.api import hookimpl
    from mmbench.running.worker import run_cell

    out = train_tiny(NaNWeightsAfterSecondEpoch, epochs=4)
    assert out.status == "diverged" and out.diverged_epoch == 1 and out.divergence == "validation loss"
    assert len(out.history) == 1 and out.best_epoch == 0
    # the run records it (no NaN reaches the result file, which JSON could not hold) and goes on
    from mmbench import registry as registry_lib
    from mmbench.running import grid as grid_lib
    from mmbench.running.cells import expand

    class Plugin:
        @hookimpl
        def mmbench_balancers(self):
            return [NaNWeightsAfterSecondEpoch]

    registry = registry_lib.load(extra_plugins=[Plugin()])
    grid = grid_lib.parse("name: g\ntasks: [synthetic]\nencoders: [{'*': mlp}]\nfusions: [concat]\n"
                          "balancers: [nan_weights_after_second_epoch]\ntrain: {epochs: 3, device: cpu}\n"
                          "seeds: [0]\n", registry)
    result = run_cell(expand(grid, registry)[0], registry)
    assert result.status == "diverged" and result.reason == "non-finite validation loss in epoch 1"
    json.dumps(result.to_json(), allow_nan=False)


def test_finite_records_non_finite_numbers_as_missing():
    from mmbench.schema.results import SplitScores
    from mmbench.training.evaluation import finite

    scores = SplitScores(loss=float("nan"), metrics={"accuracy": 0.5, "ece": float("inf")},
                         unimodal={"a": {"accuracy": float("-inf")}}, unimodal_loss={"a": 1.0})
    assert finite(scores) == SplitScores(loss=None, metrics={"accuracy": 0.5, "ece": None},
                                         unimodal={"a": {"accuracy": None}}, unimodal_loss={"a": 1.0})
    assert finite({"k": float("nan"), "lam": 2.0}) == {"k": None, "lam": 2.0}


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


@pytest.mark.parametrize("config", [
    OptimizerConfig(name="sgd", lr=0.05, momentum=0.9, weight_decay=1e-3),
    OptimizerConfig(name="sgd", lr=0.05, momentum=0.0),
    OptimizerConfig(name="adam", lr=1e-2, weight_decay=1e-3),
    OptimizerConfig(name="adamw", lr=1e-2, weight_decay=1e-2),
])
def test_the_multi_tensor_update_gives_the_per_parameter_updates_bits(config):
    from mmbench.training.optim import build_optimizer

    def fresh() -> torch.nn.Sequential:
        torch.manual_seed(0)
        return torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.Linear(7, 3))

    def trained(foreach: bool) -> list[torch.Tensor]:
        model = fresh()
        groups = {"first": list(model[0].parameters()), "second": list(model[1].parameters())}
        optimizer = build_optimizer(config, groups)
        assert all(group["foreach"] is True for group in optimizer.param_groups)
        for group in optimizer.param_groups:
            group["foreach"] = foreach
        gradients = torch.Generator().manual_seed(1)
        for _ in range(5):
            for p in model.parameters():
                p.grad = torch.randn(p.shape, generator=gradients)
            optimizer.step()
        return [p.detach().clone() for p in model.parameters()]

    per_parameter, multi_tensor = trained(False), trained(True)
    assert not any(torch.equal(a, b) for a, b in zip(per_parameter, fresh().parameters()))  # every one moved
    assert all(torch.equal(a, b) for a, b in zip(per_parameter, multi_tensor))


def test_profile_is_recorded():
    out = train_tiny("joint", epochs=2)
    prof = out.profile
    assert prof["epochs"] == 2 and prof["step_ms"]["median"] > 0
    steps = 2 * 256 // 32
    assert prof["step_ms"]["median"] * steps / 1000 < prof["train_seconds"]
    # end to end counts the same samples over more time than the steps alone
    assert 0 < prof["samples_per_second"] < prof["step_samples_per_second"]
    assert prof["samples_per_second"] == pytest.approx(2 * 256 / prof["train_seconds"])
    assert 0 < prof["validation_fraction"] < 1 and 0 <= prof["data_wait_fraction"] < 1
    assert prof["params"]["total"] == prof["params"]["trainable"] > 0


class SlowHooks(Balancer):
    """Epoch hooks that take a known time: their share must show in the profile, not in the step times."""

    name = "slow_hooks"

    def on_epoch_end(self, ctx, stats):
        time.sleep(0.2)


def test_the_balancers_epoch_hooks_have_their_own_share_of_the_time():
    out = train_tiny(SlowHooks, epochs=2)
    hooks = out.profile["balancer_hook_fraction"] * out.profile["train_seconds"]
    assert hooks == pytest.approx(0.4, abs=0.05)
    assert out.profile["step_ms"]["p90"] < 100


@pytest.mark.skipif(sys.platform != "linux", reason="the per-cell peak needs Linux's /proc/self/clear_refs")
def test_the_peak_host_memory_is_the_cells_own():
    rss_before = psutil.Process().memory_info().rss
    ballast = bytearray(1 << 30)  # the process's peak is now at least 1 GiB above its resident size
    del ballast
    out = train_tiny("joint", epochs=1)
    assert out.profile["host_rss_scope"] == "cell"
    assert out.profile["peak_host_rss_bytes"] < rss_before + (1 << 29)


class KeepsContext(Balancer):
    """Joint training that keeps the context, so a test can inspect the model the engine selected."""

    name = "keeps_context"
    last = None

    def setup(self, ctx):
        type(self).last = ctx


def test_test_metrics_are_an_evaluation_of_the_test_split_with_the_selected_model():
    from sklearn.metrics import f1_score

    from mmbench.testing import tiny_components

    components = tiny_components(KeepsContext)
    out = train(components, TrainRecipe(epochs=4, batch_size=32, device="cpu",
                                        optimizer=OptimizerConfig(lr=0.2)), seed=0)
    model = KeepsContext.last.model.eval()
    splits = components.task.splits()

    def predictions(split):
        data = splits[split]
        batch = {m: data.tensors[m] for m in components.task.modalities}
        with torch.no_grad():
            return model(batch).logits.argmax(-1), data.labels

    pred, y = predictions("test")
    assert out.test.metrics["accuracy"] == pytest.approx((pred == y).float().mean().item())
    assert out.test.metrics["macro_f1"] == pytest.approx(f1_score(y, pred, average="macro"), rel=1e-5)
    # the model evaluated is the one selected on validation: its validation accuracy is the best epoch's
    pred, y = predictions("val")
    best = out.history[out.best_epoch].val.metrics["accuracy"]
    assert (pred == y).float().mean().item() == pytest.approx(best)
    assert out.test.metrics != out.val.metrics


class KnownLosses(Balancer):
    """Batch b of every epoch has loss b + 1 (its gradient is zero, so nothing else changes)."""

    name = "known_losses"

    def loss(self, ctx, batch, out):
        return out.logits.sum() * 0.0 + float(ctx.step_in_epoch + 1)


def test_train_loss_is_the_mean_over_batches():
    # 80 samples in batches of 32: sizes 32, 32, 16 with losses 1, 2, 3 -> batch mean 2.0 (a per-sample
    # mean would give (32 + 64 + 48) / 80 = 1.8)
    out = train_tiny(KnownLosses, epochs=2, task_params={"train_size": 80})
    assert [h.train_loss for h in out.history] == [2.0, 2.0]


@pytest.mark.parametrize("scheduler, expected", [
    ({"name": "step", "step_size": 2, "gamma": 0.5}, [0.2, 0.2, 0.1, 0.1, 0.05]),
    ({"name": "cosine"}, [0.1 * (1 + math.cos(math.pi * e / 5)) for e in range(5)]),
    ({"name": "none"}, [0.2] * 5),
])
def test_scheduler_sets_each_epochs_learning_rate(scheduler, expected):
    from mmbench.schema.recipe import SchedulerConfig
    from mmbench.testing import tiny_components

    seen = []

    class RecordsLR(Balancer):
        name = "records_lr"

        def on_epoch_start(self, ctx):
            seen.append([g["lr"] for g in ctx.optimizer.param_groups])

    recipe = TrainRecipe(epochs=5, batch_size=64, device="cpu", optimizer=OptimizerConfig(lr=0.2),
                         scheduler=SchedulerConfig(**scheduler))
    out = train(tiny_components(RecordsLR), recipe, seed=0)
    assert [h.lr for h in out.history] == pytest.approx(expected)
    assert [lrs[0] for lrs in seen] == pytest.approx(expected)
    assert all(len(set(lrs)) == 1 for lrs in seen)  # every parameter group follows the schedule


class RecordsAugmentation(Balancer):
    """Sums, per epoch, the difference between each training sample's augmented view and the sample."""

    name = "records_augmentation"
    requires = Requirements(augmented_views=True)
    per_epoch: dict = {}

    def loss(self, ctx, batch, out):
        noise = batch.views["slow"] - batch.inputs["slow"]
        sums = type(self).per_epoch.setdefault(ctx.epoch, [0.0, 0.0, 0])
        sums[0] += float(noise.sum())
        sums[1] += float((noise ** 2).sum())
        sums[2] += noise.numel()
        return super().loss(ctx, batch, out)


def test_augmented_views_are_redrawn_every_epoch_and_repeatable():
    RecordsAugmentation.per_epoch = {}
    train_tiny(RecordsAugmentation, epochs=2)
    first = dict(RecordsAugmentation.per_epoch)
    RecordsAugmentation.per_epoch = {}
    train_tiny(RecordsAugmentation, epochs=2)
    assert RecordsAugmentation.per_epoch == first  # same seed, same views
    (s0, q0, n), (s1, q1, _) = first[0], first[1]
    assert s0 != s1  # each epoch's order-independent sum of the noise differs: new views every epoch
    # the task's augmentation is additive N(0, 0.5²) noise
    assert math.sqrt(q0 / n) == pytest.approx(0.5, rel=0.02) and math.sqrt(q1 / n) == pytest.approx(0.5, rel=0.02)


@pytest.mark.parametrize("balancer", ["joint", "unimodal"])
def test_scores_do_not_depend_on_the_evaluation_batch_size(balancer):
    # the quickstart evaluates each split in one batch (grids/quickstart.yaml): scores are over the whole split,
    # never per batch, so the selected epoch and every score are the same
    from mmbench.testing import tiny_components

    def trained(eval_batch_size):
        recipe = TrainRecipe(epochs=3, batch_size=32, eval_batch_size=eval_batch_size, device="cpu",
                             optimizer=OptimizerConfig(lr=0.05))
        return train(tiny_components(balancer), recipe, seed=0)

    def numbers(scores) -> dict[str, float]:
        flat = {"loss": scores.loss, **scores.metrics}
        for kind in ("unimodal", "missing_modality"):
            for m, values in getattr(scores, kind).items():
                flat.update({f"{kind}.{m}.{k}": v for k, v in values.items()})
        return flat

    batched, whole = trained(None), trained(1000)
    assert batched.best_epoch == whole.best_epoch
    pairs = [(batched.val, whole.val), (batched.test, whole.test)]
    pairs += [(a.val, b.val) for a, b in zip(batched.history, whole.history, strict=True)]
    for a, b in pairs:
        assert numbers(a) == pytest.approx(numbers(b), rel=1e-5, abs=1e-6)


def test_evaluation_runs_each_set_of_dropped_modalities_once(monkeypatch):
    from mmbench.testing import tiny_components, tiny_context
    from mmbench.training.evaluation import evaluate
    from mmbench.training.model import MultimodalModel

    balancer, ctx, batch = tiny_context(tiny_components("joint"))
    drops = []
    head = MultimodalModel.head
    monkeypatch.setattr(MultimodalModel, "head",
                        lambda self, features, drop=(): drops.append(set(drop)) or head(self, features, drop))
    from mmbench.training import evaluation

    scored = []
    compute = evaluation.metric_lib.compute
    monkeypatch.setattr(evaluation.metric_lib, "compute", lambda *args: scored.append(args[1]) or compute(*args))
    scores = evaluate(ctx.model, ctx, balancer, [batch])
    assert drops == [set(), {"fast"}, {"slow"}]  # with two modalities, "fast" alone is "slow" missing
    assert scores.unimodal["fast"] == scores.missing_modality["slow"]
    assert len(scored) == 3  # and the same predictions are scored once: fused, fast alone, slow alone


class RecordsViews(Balancer):
    """Joint training that records every step's inputs and augmented views of the first modality."""

    name = "records_views"
    requires = Requirements(augmented_views=True)
    seen: list[tuple[int, torch.Tensor, torch.Tensor]] = []

    def train_step(self, ctx, batch):
        first = ctx.model.modalities[0]
        self.seen.append((ctx.epoch, batch.inputs[first].clone(), batch.views[first].clone()))
        return super().train_step(ctx, batch)


def test_augmented_views_are_drawn_anew_every_epoch():
    """A sample's view in epoch 1 is not its view in epoch 0 (the training split's augmentation follows the epoch)."""
    RecordsViews.seen = []
    train_tiny(RecordsViews, epochs=2)
    views: list[dict[tuple, torch.Tensor]] = [{}, {}]
    for epoch, inputs, augmented in RecordsViews.seen:
        for x, v in zip(inputs, augmented, strict=True):
            views[epoch][tuple(x.tolist())] = v
    assert views[0].keys() == views[1].keys() and len(views[0]) == 256
    assert not any(torch.equal(views[0][k], views[1][k]) for k in views[0])
