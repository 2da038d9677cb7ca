"""Engine speed settings: batched fetching, loader processes and pinned memory, channels-last, cuDNN flags and
torch.compile. The CUDA choices are functions of the device, checked here with a CUDA device object."""


import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, default_collate

from mmbench.contract.batch import Batch
from mmbench.data.datasets import TensorDictDataset
from mmbench.schema.recipe import OptimizerConfig, TrainRecipe
from mmbench.testing import tiny_components
from mmbench.training import acceleration
from mmbench.training.engine import collate, train

CUDA = torch.device("cuda")
CPU = torch.device("cpu")


def small_dataset():
    tensors = {"a": torch.arange(24.0).reshape(6, 4), "b": torch.arange(12).reshape(6, 2)}
    return TensorDictDataset(tensors, torch.tensor([0, 1, 2, 0, 1, 2]))


def test_a_batch_is_fetched_whole_and_equals_the_stacked_samples():
    data = small_dataset()
    batched = collate(data.__getitems__([4, 0, 5]))
    stacked = collate([data[4], data[0], data[5]])
    assert batched.inputs.keys() == stacked.inputs.keys() == {"a", "b"}
    for m in ("a", "b"):
        assert torch.equal(batched.inputs[m], stacked.inputs[m])
    assert batched.label.tolist() == [1, 0, 2]
    assert batched.inputs["a"][1].tolist() == [0.0, 1.0, 2.0, 3.0]


def test_the_data_loader_makes_one_fetch_per_batch(monkeypatch):
    data = small_dataset()
    calls = []
    original = TensorDictDataset.__getitems__
    monkeypatch.setattr(TensorDictDataset, "__getitems__",
                        lambda self, idx: calls.append(list(idx)) or original(self, idx))
    monkeypatch.setattr(TensorDictDataset, "__getitem__", lambda self, i: pytest.fail("fetched one sample"))
    batches = list(DataLoader(data, batch_size=4, collate_fn=collate))
    assert calls == [[0, 1, 2, 3], [4, 5]]
    assert [b.label.tolist() for b in batches] == [[0, 1, 2, 0], [1, 2]]


def _tiny_run(**recipe):
    fixed = TrainRecipe(epochs=2, batch_size=32, device="cpu", optimizer=OptimizerConfig(lr=0.05), **recipe)
    return train(tiny_components("joint"), fixed, seed=1)


def test_batched_fetching_trains_exactly_as_per_sample_fetching(monkeypatch):
    batched = _tiny_run()
    monkeypatch.setattr(TensorDictDataset, "__getitems__", None)  # the DataLoader falls back to __getitem__
    per_sample = _tiny_run()
    assert [h.train_loss for h in batched.history] == [h.train_loss for h in per_sample.history]
    assert batched.test.metrics == per_sample.test.metrics


class OnDisk(Dataset):
    """A dataset that does not declare itself in memory."""

    def __len__(self):
        return 4

    def __getitem__(self, i):
        return {"a": torch.zeros(2), "label": torch.tensor(0)}


@pytest.mark.parametrize("device, dataset, cpus, expected", [
    (CPU, OnDisk(), 16, {"num_workers": 0, "pin_memory": False}),
    (CUDA, small_dataset(), 16, {"num_workers": 0, "pin_memory": True}),
    (CUDA, OnDisk(), 16, {"num_workers": 8, "pin_memory": True}),
    (CUDA, OnDisk(), 5, {"num_workers": 4, "pin_memory": True}),
    (CUDA, OnDisk(), 1, {"num_workers": 1, "pin_memory": True}),
])
def test_auto_loader_workers_follow_the_device_the_dataset_and_the_cpus(device, dataset, cpus, expected, monkeypatch):
    monkeypatch.setattr(acceleration, "usable_cpus", lambda: cpus)
    options = acceleration.loader_options(device, TrainRecipe(), dataset)
    started = options.pop("worker_init_fn")
    assert options == expected
    # each loader worker asks to end with the process that trains
    assert started is (acceleration.loader_worker_started if expected["num_workers"] else None)


def test_an_explicit_worker_count_is_kept():
    options = acceleration.loader_options(CPU, TrainRecipe(num_workers=3), small_dataset())
    assert options == {"num_workers": 3, "pin_memory": False, "worker_init_fn": acceleration.loader_worker_started}


def test_a_batch_pins_every_tensor_when_the_loader_pins_it(monkeypatch):
    from torch.utils.data._utils.pin_memory import pin_memory

    pinned = []
    monkeypatch.setattr(torch.Tensor, "pin_memory", lambda t: pinned.append(t) or t + 100)  # CPU-only: no real pinning
    batch = Batch({"a": torch.zeros(2), "b": {"ids": torch.ones(2)}}, torch.tensor([1, 2]), {"a": torch.ones(2)})
    out = pin_memory(batch)
    assert isinstance(out, Batch) and len(pinned) == 4
    assert out.inputs["b"]["ids"].tolist() == [101.0, 101.0] and out.label.tolist() == [101, 102]
    assert out.views["a"].tolist() == [101.0, 101.0]


class Conv(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)


@pytest.mark.parametrize("model, device, allowed, expected", [
    (Conv(), CUDA, True, torch.channels_last),
    (Conv(), CUDA, False, torch.preserve_format),
    (Conv(), CPU, True, torch.preserve_format),
    (nn.Linear(3, 4), CUDA, True, torch.preserve_format),
])
def test_channels_last_only_for_conv_nets_on_cuda_when_allowed(model, device, allowed, expected):
    assert acceleration.memory_format(model, device, TrainRecipe(channels_last=allowed)) == expected


@pytest.fixture
def backend_flags():
    saved = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
             torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic, torch.get_num_threads())
    yield
    torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
    torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = saved[2], saved[3]
    torch.set_num_threads(saved[4])


def test_cuda_autotunes_unless_the_recipe_asks_for_determinism(backend_flags):
    acceleration.configure_backends(CUDA, TrainRecipe())
    assert torch.backends.cudnn.benchmark and not torch.backends.cudnn.deterministic
    assert not torch.are_deterministic_algorithms_enabled()
    acceleration.configure_backends(CUDA, TrainRecipe(deterministic=True))
    assert not torch.backends.cudnn.benchmark and torch.backends.cudnn.deterministic
    assert torch.are_deterministic_algorithms_enabled()


def test_the_cpu_is_always_deterministic_with_the_recipe_threads(backend_flags):
    acceleration.configure_backends(CPU, TrainRecipe(deterministic=False, cpu_threads=2))
    assert torch.are_deterministic_algorithms_enabled() and torch.get_num_threads() == 2


def test_compile_compiles_the_encoders_and_the_fusion_and_trains_the_same(monkeypatch):
    import torch._dynamo
    from torch._dynamo.utils import counters

    compiled = []
    real = torch.compile

    def eager_compile(fn, **kwargs):  # dynamo's tracing without inductor's C++ build, which takes minutes on a CPU
        compiled.append(fn.__self__)
        return real(fn, backend="eager", **kwargs)

    plain = _tiny_run()
    monkeypatch.setattr(torch, "compile", eager_compile)
    torch._dynamo.reset()
    counters.clear()
    out = _tiny_run(compile=True)
    assert sorted(type(m).__name__ for m in compiled) == ["ConcatFusion", "MLPEncoder", "MLPEncoder"]
    assert counters["frames"]["ok"] >= 3  # each compiled forward was traced
    assert [h.train_loss for h in out.history] == pytest.approx([h.train_loss for h in plain.history], abs=1e-6)
    assert out.test.metrics == pytest.approx(plain.test.metrics, abs=1e-6)


def test_compile_is_off_by_default():
    model = nn.Linear(2, 2)
    forward = model.forward
    acceleration.compile_model(model, TrainRecipe())
    assert model.forward == forward


def test_batches_collate_unchanged_from_a_list_of_samples():
    samples = [{"a": torch.tensor([1.0]), "label": torch.tensor(1)},
               {"a": torch.tensor([2.0]), "label": torch.tensor(0)}]
    batch = collate(samples)
    assert torch.equal(batch.inputs["a"], default_collate([s["a"] for s in samples])) and batch.label.tolist() == [1, 0]


def test_loader_worker_processes_change_no_result():
    in_process, with_workers = _tiny_run(), _tiny_run(num_workers=2)
    assert [h.train_loss for h in with_workers.history] == [h.train_loss for h in in_process.history]
    assert with_workers.test.metrics == in_process.test.metrics


def test_the_shuffle_is_random_samplers_order_and_draws_once_per_pass():
    from torch.utils.data import RandomSampler

    from mmbench.training.batches import Shuffle

    generator = torch.Generator().manual_seed(3)
    order = list(Shuffle(range(10), generator))  # read to its end, as a loader with workers does
    assert order == list(RandomSampler(range(10), generator=torch.Generator().manual_seed(3)))
    once = torch.Generator().manual_seed(3)
    torch.randperm(10, generator=once)
    assert torch.equal(generator.get_state(), once.get_state())
