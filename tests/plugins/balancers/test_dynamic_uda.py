"""UDA / DynamicUDA: worked vectors (the notebook's softmax KL and the paper's Eqs. 8–11 λ schedule, computed
independently in numpy), the gradient path of the consistency loss, variants, end to end."""

import math
from types import SimpleNamespace

import pytest
import torch

from mmbench.contract.batch import Batch, ModelOutput
from mmbench.contract.task import ModalitySpec
from mmbench.schema.params import NoParams
from mmbench.schema.results import EpochRecord, SplitScores
from mmbench.testing import tiny_components, train_tiny
from mmbench.training.model import MultimodalModel
from mmbench_plugins.balancers.dynamic_uda import (
    CASE_BOTH_UP,
    CASE_GENERALISE,
    CASE_OTHER,
    CASE_OVERFIT,
    UDA,
    WARMUP,
    DynamicUDA,
    consistency_kl,
    dynamic_lambda,
)
from mmbench_plugins.encoders.mlp import MLPEncoder, MLPParams
from mmbench_plugins.fusions.concat import ConcatFusion

P_LOGITS = torch.tensor([[2.0, 0.5, -1.0], [0.0, 1.0, 0.0]])
Q_LOGITS = torch.tensor([[1.0, 1.0, -0.5], [0.5, 0.5, 0.2]])
VAL_LOSS = [0.50, 0.45, 0.42, 0.43, 0.47, 0.46]
TRAIN_METRIC = [0.40, 0.55, 0.62, 0.70, 0.78, 0.80]
# epoch i -> (q^V, q^T, R, λ_i, case), worked from Eqs. 8–11 with λ=1, N=4, K=1
SCHEDULE = {
    2: (0.966667, 1.10714, 0.966742, 0.966742, CASE_GENERALISE),
    3: (0.979310, 1.04516, 0.961313, 0.961313, CASE_GENERALISE),
    4: (1.00704, 1.04938, 1.07926, 1.07926, CASE_BOTH_UP),
    5: (1.02797, 1.04706, 1.16922, 1.16922, CASE_BOTH_UP),
    6: (0.993197, 1.01124, 0.983999, 0.983999, CASE_GENERALISE),
}


def test_kl_matches_worked_vector():
    kl = consistency_kl(P_LOGITS, Q_LOGITS)
    torch.testing.assert_close(kl, torch.tensor([0.236000, 0.0965111]), rtol=1e-5, atol=0)
    torch.testing.assert_close(kl.sum(), torch.tensor(0.332512), rtol=1e-5, atol=0)
    torch.testing.assert_close(kl.mean(), torch.tensor(0.166256), rtol=1e-5, atol=0)


def test_bernoulli_divergence_is_the_per_class_kl():
    p, q = torch.sigmoid(P_LOGITS), torch.sigmoid(Q_LOGITS)
    expected = (p * (p / q).log() + (1 - p) * ((1 - p) / (1 - q)).log()).sum(-1)
    torch.testing.assert_close(consistency_kl(P_LOGITS, Q_LOGITS, "bernoulli"), expected, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("epoch", [0, 1, 2, 3, 4, 5, 6])
def test_lambda_schedule_matches_worked_table(epoch):
    lam_i, case, q_v, q_t, ratio = dynamic_lambda(1.0, VAL_LOSS[:epoch], TRAIN_METRIC[:epoch], n=4, k=1)
    if epoch < 2:
        assert (lam_i, case, ratio) == (1.0, WARMUP, 1.0)
        return
    expected = SCHEDULE[epoch]
    for got, want in zip((q_v, q_t, ratio, lam_i), expected[:4]):
        assert got == pytest.approx(want, rel=1e-5)
    assert case == expected[4]


def test_lambda_is_recomputed_from_the_base_and_other_cases():
    lam_i, *_ = dynamic_lambda(0.5, VAL_LOSS[:3], TRAIN_METRIC[:3], n=4, k=1)
    assert lam_i == pytest.approx(0.5 * 0.961313, rel=1e-5)  # epoch 3: not compounded with epoch 2's λ
    # q^V < 1 but a fast-rising training metric: case 2, λ goes up
    lam_i, case, *_ = dynamic_lambda(1.0, [0.50, 0.49], [0.2, 0.9], n=4, k=1)
    assert case == CASE_OVERFIT and lam_i > 1.0
    # q^V > 1 with a falling training metric lies outside the paper's table
    assert dynamic_lambda(1.0, [0.4, 0.5], [0.9, 0.8], n=4, k=1)[1] == CASE_OTHER
    # safeguard: a non-finite validation loss keeps λ
    assert dynamic_lambda(2.0, [0.4, math.inf], [0.5, 0.6], n=4, k=1)[0] == 2.0


def _stats(epoch, val_loss, train_metric, val_metric=0.5):
    val = SplitScores(loss=val_loss, metrics={"accuracy": val_metric})
    return EpochRecord(epoch=epoch, train_loss=1.0, train_metrics={"accuracy": train_metric}, val=val, lr=0.1)


def _tiny_model():
    encoders = {m: MLPEncoder(ModalitySpec(m, "vector", (3,)), MLPParams(hidden=4, layers=1, out_dim=4))
                for m in ("a", "b")}
    return MultimodalModel(encoders, ConcatFusion({"a": 4, "b": 4}, 3, NoParams()), 3)


def _ctx(model, history=()):
    task = SimpleNamespace(name="t", metrics=("accuracy",), primary_metric="accuracy")
    return SimpleNamespace(model=model, task=task, device=torch.device("cpu"), history=list(history),
                           task_loss=torch.nn.functional.cross_entropy)


def test_balancer_reads_validation_loss_and_train_metric_from_history():
    bal = DynamicUDA(DynamicUDA.Params(n=4, k=1))
    history = [_stats(i, v, t) for i, (v, t) in enumerate(zip(VAL_LOSS[:5], TRAIN_METRIC[:5]))]
    ctx = _ctx(_tiny_model(), history)
    bal.setup(ctx)
    bal.on_epoch_start(ctx)
    assert bal.lam_i == pytest.approx(SCHEDULE[5][3], rel=1e-5)
    coefficients = bal.coefficients()
    assert coefficients["case"] == CASE_BOTH_UP and coefficients["lambda"] == pytest.approx(1.16922, rel=1e-5)


def test_a_non_finite_record_keeps_lambda_and_is_no_improvement():
    """The engine records a non-finite number as None: λ keeps its base value (the safeguard), and a missing
    validation score counts against the patience."""
    bal = DynamicUDA(DynamicUDA.Params(lam=2.0, off_patience=1))
    ctx = _ctx(_tiny_model(), [_stats(0, 0.4, 0.5), _stats(1, None, 0.6)])
    bal.setup(ctx)
    bal.on_epoch_start(ctx)
    assert bal.lam_i == 2.0 and bal.case == CASE_OTHER
    bal.on_epoch_end(ctx, _stats(2, 0.5, 0.5, val_metric=None))
    assert bal.switched_off


def _batch(gen):
    x = {m: torch.randn(6, 3, generator=gen) for m in ("a", "b")}
    views = {m: v + torch.randn(6, 3, generator=gen) for m, v in x.items()}
    return Batch(x, torch.randint(0, 3, (6,), generator=gen), views)


def test_gradient_flows_only_through_the_augmented_view():
    torch.manual_seed(0)
    model = _tiny_model()
    batch = _batch(torch.Generator().manual_seed(1))
    bal = UDA(UDA.Params(lam=2.0))
    ctx = _ctx(model)
    bal.setup(ctx)
    bal.on_epoch_start(ctx)
    out = model(batch)
    bal.loss(ctx, batch, out).backward()
    got = [p.grad.clone() for p in model.parameters()]

    def grads(target_detached: bool):
        model.zero_grad()
        clean = model(batch).logits
        q = model(batch.views).logits
        p = clean.detach() if target_detached else clean
        loss = torch.nn.functional.cross_entropy(clean, batch["label"]) + 2.0 * consistency_kl(p, q).mean()
        loss.backward()
        return [p.grad.clone() for p in model.parameters()]

    for g, want in zip(got, grads(target_detached=True)):
        torch.testing.assert_close(g, want)
    assert any(not torch.allclose(g, w) for g, w in zip(got, grads(target_detached=False)))


class _FixedLogits:
    """A stand-in model: the worked vector's p logits for the clean batch, its q logits for the augmented view."""

    modalities = ("a",)

    def __call__(self, batch):
        return ModelOutput(Q_LOGITS if batch["a"] is AUG else P_LOGITS, features={})


AUG = torch.ones(2, 1)


@pytest.mark.parametrize("params, consistency", [
    ({}, 0.166256),  # the paper's mean (Eq. 6) by default
    ({"lam": 4.0}, 4 * 0.166256),  # the notebook: a sum over micro-batches of 4, i.e. 4× the mean
    ({"reduction": "sum"}, 0.332512),  # a sum over the whole batch
])
def test_consistency_term_is_the_batch_mean_by_default(params, consistency):
    bal = UDA(UDA.Params(**params))
    ctx = _ctx(_FixedLogits())
    bal.setup(ctx)
    bal.on_epoch_start(ctx)
    batch = Batch({"a": torch.zeros(2, 1)}, torch.tensor([0, 1]), {"a": AUG})
    out = ModelOutput(P_LOGITS, features={})
    supervised = float(torch.nn.functional.cross_entropy(P_LOGITS, batch["label"]))
    assert float(bal.loss(ctx, batch, out)) - supervised == pytest.approx(consistency, rel=1e-5)


def test_only_the_chosen_modalities_are_augmented():
    batch = _batch(torch.Generator().manual_seed(2))
    bal = UDA(UDA.Params(augment=("b",)))
    bal.setup(_ctx(_tiny_model()))
    view = bal.augmented_batch(batch)
    assert view["a"] is batch["a"] and view["b"] is batch.views["b"]
    task = tiny_components(UDA).task
    assert UDA.check(UDA.Params(augment=("slow",)), task) == []
    assert UDA.check(UDA.Params(augment=("slw",)), task) == [
        "augment names 'slw', which is not one of the task's modalities (fast, slow); did you mean 'slow'?"]
    with pytest.raises(ValueError, match="augment names 'image'"):  # the engine refuses to train with it
        train_tiny(UDA, balancer_params={"augment": ("image",)})


def test_switched_off_after_patience_drops_the_consistency_term():
    model = _tiny_model()
    bal = UDA(UDA.Params(lam=1.0, off_patience=2))
    ctx = _ctx(model)
    bal.setup(ctx)
    for epoch, score in enumerate([0.6, 0.5, 0.55]):  # best at epoch 0, then two epochs without improvement
        bal.on_epoch_start(ctx)
        assert bal.lam_i == 1.0
        bal.on_epoch_end(ctx, _stats(epoch, 1.0, 0.5, val_metric=score))
    bal.on_epoch_start(ctx)
    batch = _batch(torch.Generator().manual_seed(3))
    out = model(batch)
    assert bal.lam_i == 0.0 and bal.coefficients()["uda_off"] == 1.0
    torch.testing.assert_close(bal.loss(ctx, batch, out), torch.nn.functional.cross_entropy(out.logits, batch["label"]))


def test_train_metric_must_belong_to_the_task_and_be_higher_is_better():
    task = tiny_components(DynamicUDA).task
    check = DynamicUDA.check
    assert check(DynamicUDA.Params(train_metric="macro_f1"), task) == []
    assert check(DynamicUDA.Params(train_metric="f1_micro"), task) == [
        "train_metric names 'f1_micro', which is not one of the task's metrics (accuracy, macro_f1, ece); "
        "did you mean 'macro_f1'?"]
    assert check(DynamicUDA.Params(train_metric="ece"), task) == ["train_metric must be higher-is-better; 'ece' is not"]


@pytest.mark.parametrize("fusion", ["concat", "sum"])
def test_uda_end_to_end(fusion):
    out = train_tiny(UDA, epochs=2, fusion=fusion, balancer_params={"lam": 0.5})
    assert out.status == "ok" and all(math.isfinite(e.train_loss) for e in out.history)
    for epoch in out.history:
        assert epoch.coefficients["lambda"] == 0.5 and epoch.coefficients["consistency"] > 0.0


@pytest.mark.parametrize("fusion", ["concat", "sum"])
def test_dynamic_uda_end_to_end(fusion):
    out = train_tiny(DynamicUDA, epochs=3, fusion=fusion, balancer_params={"augment": ("slow",)})
    assert out.status == "ok" and all(math.isfinite(e.train_loss) for e in out.history)
    cases = [e.coefficients["case"] for e in out.history]
    assert cases[:2] == [WARMUP, WARMUP] and cases[2] != WARMUP
    h = out.history
    expected, *_ = dynamic_lambda(1.0, [h[0].val.loss, h[1].val.loss],
                                  [h[0].train_metrics["accuracy"], h[1].train_metrics["accuracy"]], 4, 1)
    assert h[2].coefficients["lambda"] == pytest.approx(expected)
