"""The synthetic task reproduces modality imbalance: joint training under-uses the slow modality."""

import numpy as np

from mmbench.testing import check_task, train_tiny
from mmbench_plugins.tasks.synthetic import SyntheticParams, SyntheticTask, generate


def test_the_task_contract():
    check_task(SyntheticTask, {"train_size": 10, "val_size": 10, "test_size": 10})


def test_generation_is_a_pure_function_of_the_parameters():
    a, ya = generate(SyntheticParams(seed=1, train_size=50, val_size=10, test_size=10))
    b, yb = generate(SyntheticParams(seed=1, train_size=50, val_size=10, test_size=10))
    c, _ = generate(SyntheticParams(seed=2, train_size=50, val_size=10, test_size=10))
    assert np.array_equal(ya, yb) and all(np.array_equal(a[m], b[m]) for m in a)
    assert not np.array_equal(a["fast"], c["fast"])


def test_sign_code_has_no_class_mean_and_linear_code_does():
    data, y = generate(SyntheticParams(train_size=20000, val_size=10, test_size=10))
    for cls in range(4):
        slow_mean = np.abs(data["slow"][y == cls].mean(0)).max()
        fast_mean = np.abs(data["fast"][y == cls].mean(0)).max()
        assert slow_mean < 0.1 < 1.0 < fast_mean


def test_three_modalities_and_splits():
    params = SyntheticParams(modalities=[
        {"name": "a", "dim": 4, "signal": 2.0}, {"name": "b", "dim": 6, "signal": 1.0},
        {"name": "c", "dim": 8, "signal": 1.0, "code": "sign"}], train_size=30, val_size=10, test_size=20)
    task = SyntheticTask(params)
    splits = task.splits()
    assert {k: len(v) for k, v in splits.items()} == {"train": 30, "val": 10, "test": 20}
    sample = splits["train"][0]
    assert sample["c"].shape == (8,) and sample["label"].dtype.is_floating_point is False


def test_joint_training_under_uses_the_slow_modality():
    """The slow modality's accuracy inside the jointly trained model is clearly below its own potential."""
    full = {"train_size": 2000, "val_size": 500, "test_size": 1000}
    enc = {"hidden": 64, "layers": 2, "out_dim": 32}
    joint = train_tiny("joint", epochs=10, task_params=full, encoder_params=enc)
    alone = train_tiny("unimodal", epochs=10, task_params=full, encoder_params=enc)
    slow_joint = joint.test.unimodal["slow"]["accuracy"]
    slow_alone = alone.test.unimodal["slow"]["accuracy"]
    assert slow_alone - slow_joint > 0.10, (slow_joint, slow_alone)
    # and the multimodal model needs both: it beats either modality alone
    assert joint.test.metrics["accuracy"] > max(alone.test.unimodal[m]["accuracy"] for m in ("fast", "slow")) + 0.05
