"""`synthetic`: a generated multimodal classification task that reproduces modality imbalance, no download.

Generative model (all draws from `numpy.random.default_rng(seed)`, so the data is a pure function of the
parameters). For every sample a class `y ~ Uniform{0..C-1}`; each modality m with dimension `d_m`, signal
strength `s_m`, coverage `c_m` and code `linear` or `sign` has unit-norm class prototypes `μ_{m,y} ∈ R^{d_m}`
and emits

    x_m = s_m · σ · r · μ_{m,y} + ε,   ε ~ N(0, I_{d_m}),   r ~ Bernoulli(c_m)

where `σ = +1` for the `linear` code and `σ ~ Uniform{-1, +1}` (drawn per sample) for the `sign` code.

* A **linear** modality's class means are distinct, so a linear read-out learns it in a few steps. With
  coverage < 1 the class signal is absent (pure noise) on a random subset of samples.
* A **sign** modality's class-conditional mean is zero: only the axis `±μ_y` carries the class, so it needs
  a non-linear encoder and many more steps, but it carries the class for every sample it covers.

The defaults pair a strong, fast, partially covered `fast` modality with a fully covered `slow` one. Joint
training fits the fast modality first; once it explains the covered samples the gradient left for the slow
encoder is small, so the slow modality ends well below what the same encoder reaches trained alone
(modality competition), while the best multimodal model needs both.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from pydantic import Field, field_validator
from torch.utils.data import Dataset

from mmbench.api import ModalitySpec, Params, Task, TensorDictDataset, hookimpl


class SyntheticModality(Params):
    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    dim: int = Field(ge=1, le=4096)
    signal: float = Field(gt=0.0, description="prototype scale s_m (signal-to-noise)")
    coverage: float = Field(1.0, gt=0.0, le=1.0, description="fraction of samples whose class signal is present")
    code: Literal["linear", "sign"] = "linear"


class SyntheticParams(Params):
    num_classes: int = Field(4, ge=2, le=100)
    modalities: tuple[SyntheticModality, ...] = (
        SyntheticModality(name="fast", dim=16, signal=5.0, coverage=0.8, code="linear"),
        SyntheticModality(name="slow", dim=64, signal=2.5, coverage=1.0, code="sign"),
    )
    train_size: int = Field(2000, ge=10)
    val_size: int = Field(500, ge=10)
    test_size: int = Field(1000, ge=10)
    augment_noise: float = Field(0.5, ge=0.0, description="std of the Gaussian noise of an augmented view")
    seed: int = Field(0, ge=0, description="data seed (the run seed only changes initialisation and order)")

    @field_validator("modalities")
    @classmethod
    def _two_or_three_unique(cls, value: tuple[SyntheticModality, ...]) -> tuple[SyntheticModality, ...]:
        names = [m.name for m in value]
        if not 2 <= len(value) <= 3:
            raise ValueError(f"the synthetic task has 2 or 3 modalities, got {len(value)}")
        if len(set(names)) != len(names):
            raise ValueError(f"modality names must be unique, got {names}")
        return value


def generate(params: SyntheticParams) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """All samples of all splits, as float32 arrays per modality and int64 labels."""
    rng = np.random.default_rng(params.seed)
    n = params.train_size + params.val_size + params.test_size
    y = rng.integers(0, params.num_classes, size=n)
    data: dict[str, np.ndarray] = {}
    for spec in params.modalities:
        prototypes = rng.standard_normal((params.num_classes, spec.dim))
        prototypes /= np.linalg.norm(prototypes, axis=1, keepdims=True)
        present = rng.random(n) < spec.coverage
        sign = rng.choice([-1.0, 1.0], size=n) if spec.code == "sign" else np.ones(n)
        scale = spec.signal * sign * present
        data[spec.name] = (scale[:, None] * prototypes[y] + rng.standard_normal((n, spec.dim))).astype(np.float32)
    return data, y.astype(np.int64)


class SyntheticTask(Task):
    name = "synthetic"
    version = "1"
    Params = SyntheticParams
    params: SyntheticParams
    metrics = ("accuracy", "macro_f1", "ece")
    primary_metric = "accuracy"

    @property
    def modalities(self) -> dict[str, ModalitySpec]:
        return {m.name: ModalitySpec(m.name, "vector", (m.dim,)) for m in self.params.modalities}

    @property
    def num_classes(self) -> int:
        return self.params.num_classes

    def splits(self) -> dict[str, Dataset]:
        data, y = generate(self.params)
        bounds = np.cumsum([0, self.params.train_size, self.params.val_size, self.params.test_size])
        out: dict[str, Dataset] = {}
        for split, lo, hi in zip(("train", "val", "test"), bounds[:-1], bounds[1:], strict=True):
            tensors = {m: torch.from_numpy(x[lo:hi]) for m, x in data.items()}
            out[split] = TensorDictDataset(tensors, torch.from_numpy(y[lo:hi]))
        return out

    def augment(self, modality: str, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Additive Gaussian noise: a label-preserving perturbation of a feature vector."""
        return x + self.params.augment_noise * torch.randn(x.shape, generator=generator)


@hookimpl
def mmbench_tasks():
    return [SyntheticTask]
