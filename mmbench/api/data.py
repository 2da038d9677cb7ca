"""The face for dataset authors: from an official release on disk to a prepared root that trains fast.

Subclass `PreparedTask` (it holds the prepared-data lifecycle: prepare, manifest and fingerprint, splits with a
validation hold-out, check) and fill in the dataset: its samples as `Item`s, a picklable processor that decodes
one item's raw files with the media readers here, the prepared fields, the split lists (`SplitFiles`, shipped
with their sha256) and the datasets that read the memory-mapped `PreparedArrays`. `docs/datasets.md` walks
through it; `mmbench new task NAME` writes a working start.
"""

from mmbench.contract.errors import DataError
from mmbench.data.media import (
    FLOW_METHODS,
    MediaError,
    fit_length,
    log_power_spectrogram,
    log_spectrogram,
    optical_flow,
    read_audio,
    read_clip,
    read_frames,
    read_image,
    resample,
)
from mmbench.data.prepare import Item, Label, Outcome, kept_hash
from mmbench.data.prepared import Manifest
from mmbench.data.splits import SplitFiles, sha256
from mmbench.data.store import PreparedArrays
from mmbench.data.task import HoldoutParams, PreparedTask

__all__ = [
    "FLOW_METHODS", "DataError", "HoldoutParams", "Item", "Label", "Manifest", "MediaError", "Outcome",
    "PreparedArrays", "PreparedTask", "SplitFiles", "fit_length", "kept_hash", "log_power_spectrogram",
    "log_spectrogram", "optical_flow", "read_audio", "read_clip", "read_frames", "read_image", "resample", "sha256",
]
