"""The public surface for plugin authors: everything a task, encoder, fusion, balancer or executor may use.

Import from here (`from mmbench.api import Balancer, Params, hookimpl`); the core's inner modules may move,
this module keeps their names. `mmbench.protocols` and `mmbench.hookspecs` stay importable too.
"""

from mmbench.data.datasets import TensorDictDataset
from mmbench.data.prepared import DataError, Manifest
from mmbench.hookspecs import hookimpl
from mmbench.protocols import (
    Balancer,
    Batch,
    Encoder,
    Fusion,
    FusionOutput,
    Incompatible,
    Inputs,
    ModalitySpec,
    ModelOutput,
    Requirements,
    Task,
    unknown_names,
)
from mmbench.running.executors import CellFinished, CellStarted, EpochEnded, Event, Executor, ExecutorError, Relay
from mmbench.running.worker import run_cell
from mmbench.schema.cell import Cell
from mmbench.schema import search_space as search
from mmbench.schema.params import EpochWindowParams, NoParams, Params
from mmbench.schema.results import EpochRecord, SplitScores
from mmbench.training import late_fusion, metrics
from mmbench.training.accumulate import EpochMeans
from mmbench.training.context import TrainContext

__all__ = [
    "Cell", "ExecutorError", "Relay", "run_cell",
    "Balancer", "Batch", "CellFinished", "CellStarted", "DataError", "EpochEnded", "EpochMeans", "EpochRecord",
    "EpochWindowParams", "Encoder", "Event", "Executor", "Fusion", "FusionOutput", "Incompatible", "Inputs",
    "Manifest", "ModalitySpec", "ModelOutput", "NoParams", "Params", "Requirements", "SplitScores", "Task",
    "TensorDictDataset", "TrainContext", "hookimpl", "late_fusion", "metrics", "search", "unknown_names",
]
