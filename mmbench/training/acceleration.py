"""How fast a cell runs, never what it computes: backend flags, data-loader processes and pinned memory, the
channels-last layout for conv nets, `torch.compile`.

Each follows an execution-only recipe field (`mmbench.schema.recipe.EXECUTION_ONLY`). The CPU keeps the engine
deterministic and single-process. The CUDA choices are plain functions of the device, so the tests exercise
them on a CPU by handing them a CUDA device object.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from mmbench.cpus import usable_cpus
from mmbench.lifetime import end_with_parent
from mmbench.schema.recipe import TrainRecipe
from mmbench.training.model import MultimodalModel

#: data-loading processes per cell at most: beyond this, more processes only add memory
MAX_LOADER_WORKERS = 8


def configure_backends(device: torch.device, recipe: TrainRecipe) -> None:
    """Process-wide flags, set afresh for every cell (a worker process runs many)."""
    if device.type == "cpu":
        _deterministic_kernels(True, recipe)
        torch.set_num_threads(recipe.cpu_threads)
    elif device.type == "cuda":
        if recipe.deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # what deterministic cuBLAS needs
        _deterministic_kernels(recipe.deterministic, recipe)
        torch.backends.cudnn.deterministic = recipe.deterministic
        torch.backends.cudnn.benchmark = not recipe.deterministic  # autotuning picks kernels by timing them


def _deterministic_kernels(mode: bool, recipe: TrainRecipe) -> None:
    """Deterministic kernels on or off (warning where an operation has none). `torch.use_deterministic_algorithms`
    also sets the flag of torch.compile's backend, importing the compiler (seconds); a cell that does not compile
    sets the kernel flag alone, unless the compiler is loaded already (its flag must then follow)."""
    if recipe.compile or "torch._inductor.config" in sys.modules:
        torch.use_deterministic_algorithms(mode, warn_only=True)
    else:
        torch._C._set_deterministic_algorithms(mode, warn_only=True)


def loader_options(device: torch.device, recipe: TrainRecipe, dataset: Dataset) -> dict[str, Any]:
    """DataLoader keywords. `num_workers: auto` means none on the CPU (the training loop needs the cores) and for
    in-memory datasets (a batch is one indexing), else a process per usable CPU but one, up to
    `MAX_LOADER_WORKERS`; each keeps torch's two batches ahead, so what waits in memory grows with the CPUs,
    not beyond. On CUDA batches are pinned so the copy to the GPU runs asynchronously.

    Workers start with each pass over a split, never persist: a persistent loader draws its seed from the
    random generators once instead of every pass, which shifts the shuffling (and the global generator) from the
    second epoch on, so the worker count would change results.
    """
    workers = recipe.num_workers
    if workers == "auto":
        in_memory = getattr(dataset, "in_memory", False)
        workers = 0 if device.type != "cuda" or in_memory else max(1, min(MAX_LOADER_WORKERS, usable_cpus() - 1))
    return {"num_workers": workers, "pin_memory": device.type == "cuda",
            "worker_init_fn": loader_worker_started if workers else None}


def loader_worker_started(worker_id: int) -> None:
    """A data-loader worker ends with the process that trains (torch's own check waits up to five seconds)."""
    end_with_parent()


def memory_format(model: nn.Module, device: torch.device, recipe: TrainRecipe) -> torch.memory_format:
    """channels-last for a model with 2-D convolutions on CUDA (tensor cores want NHWC), when the recipe allows.

    Converting the weights is enough: a convolution whose weight is channels-last computes in that layout and
    converts its input itself.
    """
    convolutional = any(isinstance(m, nn.Conv2d) for m in model.modules())
    if recipe.channels_last and device.type == "cuda" and convolutional:
        return torch.channels_last
    return torch.preserve_format


def compile_model(model: MultimodalModel, recipe: TrainRecipe) -> None:
    """With `compile: true`, `torch.compile` each encoder's and the fusion's forward, in place.

    The model object, its parameters and its state-dict keys stay the same, so balancers and checkpoints see
    no difference; the engine's glue and the balancer hooks stay eager.
    """
    if not recipe.compile:
        return
    for module in (*model.encoders.values(), *([model.fusion] if model.fusion is not None else [])):
        module.forward = torch.compile(module.forward)  # compiled in place: the same module, keys and parameters
