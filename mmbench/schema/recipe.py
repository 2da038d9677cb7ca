"""The training recipe of a cell: optimizer, scheduler, epochs, batch size, where it runs (no torch).

`mmbench.training.optim` turns it into torch objects. Fields listed in `EXECUTION_ONLY` decide where and how
fast a cell runs, never its result, so they are left out of a cell's identity. Some of them (the device, the
kernels cuDNN autotuning or `torch.compile` choose, the memory layout) change floating-point rounding, as running
on another GPU model does; none changes what is computed, so a cell keeps its identity across them.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, NonNegativeInt, PositiveFloat, PositiveInt, field_validator

from mmbench.schema.params import Params

#: recipe fields that change where a cell runs, not its result
EXECUTION_ONLY = frozenset({"device", "num_workers", "channels_last", "deterministic", "compile"})


class OptimizerConfig(Params):
    name: Literal["sgd", "adam", "adamw"] = "sgd"
    lr: PositiveFloat = Field(1e-2, json_schema_extra={"search": {"log_uniform": [1e-5, 1.0]}},
                              description="learning rate (searched: SGD typically 1e-3-0.3, Adam 1e-5-1e-2)")
    momentum: float = Field(0.9, ge=0.0, lt=1.0, description="SGD only")
    weight_decay: float = Field(0.0, ge=0.0, json_schema_extra={"search": {"log_uniform": [1e-6, 1e-2]}},
                                description="L2 weight decay (searched on a log scale, so never exactly 0)")
    betas: tuple[float, float] = Field((0.9, 0.999), description="Adam/AdamW only")


class SchedulerConfig(Params):
    name: Literal["none", "step", "cosine"] = "none"
    step_size: PositiveInt = Field(30, description="epochs between decays (step)")
    gamma: float = Field(0.1, gt=0.0, le=1.0, description="decay factor (step)")


class TrainRecipe(Params):
    epochs: PositiveInt = 10
    batch_size: PositiveInt = 64
    eval_batch_size: PositiveInt | None = None
    optimizer: OptimizerConfig = OptimizerConfig()
    scheduler: SchedulerConfig = SchedulerConfig()
    device: str = Field("auto", description="'auto' (CUDA when available), 'cpu', 'cuda' or 'cuda:N'")
    bf16: bool = Field(True, description="bf16 autocast on CUDA; CPU always runs float32")
    cpu_threads: PositiveInt = Field(
        1, description="intra-op threads on CPU. Part of a cell's identity: CPU results can depend on the thread "
                       "count. One thread is fastest for the small models CPU grids run, and lets cells share "
                       "a machine without oversubscribing it")
    num_workers: NonNegativeInt | Literal["auto"] = Field(
        "auto", description="data-loading worker processes. 'auto': none on the CPU and for in-memory datasets; on "
                            "CUDA one per CPU of the process but one, at most 8")
    channels_last: bool = Field(True, description="channels-last memory layout for conv nets on CUDA")
    deterministic: bool = Field(
        False, description="on CUDA, deterministic kernels and no cuDNN autotuning: repeatable bit for bit on the "
                           "same GPU, slower. CPU runs are always deterministic")
    compile: bool = Field(False, description="torch.compile the encoders and the fusion (pays off on long "
                                             "GPU cells; compilation takes minutes on a CPU)")

    @field_validator("device")
    @classmethod
    def _known_device(cls, value: str) -> str:
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", value):
            raise ValueError(f"unknown device {value!r}: write 'auto', 'cpu', 'cuda' or 'cuda:N' (N = 0, 1, ...)")
        return value

    def identity(self) -> dict:
        """The recipe as it enters a cell's identity: everything but the execution-only fields."""
        return self.model_dump(mode="json", exclude=set(EXECUTION_ONLY))
