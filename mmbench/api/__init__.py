"""The one face of mmbench for plugin authors: everything an encoder, fusion, balancer or task may import.

Import from here (`from mmbench.api import Balancer, Params, hookimpl`), from `mmbench.api.data` when you write
a dataset (the prepare harness, media readers, prepared arrays, split lists), and from `mmbench.api.running`
when you write an executor. The core's inner modules may move; these names stay.
"""

from mmbench.contract.balancer import Balancer, Requirements
from mmbench.contract.batch import Batch, Inputs, ModelOutput
from mmbench.contract.context import Batches, TrainContext
from mmbench.contract.encoder import Encoder
from mmbench.contract.errors import DataError, Incompatible, unknown_names
from mmbench.contract.fusion import Fusion, FusionOutput
from mmbench.contract.hooks import hookimpl
from mmbench.contract.model import Model
from mmbench.contract.stages import EpochData, Stage
from mmbench.contract.task import MODALITY_KINDS, ModalitySpec, Task
from mmbench.data.datasets import TensorDictDataset
from mmbench.schema import search_space as search
from mmbench.schema.params import EpochWindowParams, NoParams, Params
from mmbench.schema.results import EpochRecord, SplitScores
from mmbench.training import late_fusion, metrics
from mmbench.training.accumulate import EpochMeans

__all__ = [
    "MODALITY_KINDS", "Balancer", "Batch", "Batches", "DataError", "Encoder", "EpochData", "EpochMeans", "EpochRecord",
    "EpochWindowParams",
    "Fusion", "FusionOutput", "Incompatible", "Inputs", "ModalitySpec", "Model", "ModelOutput", "NoParams",
    "Params", "Requirements", "SplitScores", "Stage", "Task", "TensorDictDataset", "TrainContext", "hookimpl",
    "late_fusion", "metrics", "search", "unknown_names",
]
