"""The face for dataset authors: from an official release on disk to a prepared root that trains fast.

A task lists its samples as `Item`s and gives a picklable `process(item) -> {field: array}`; `prepare_samples`
runs it over worker processes, resumably, and reports every missing or bad sample; the prepared root holds
memory-mapped arrays (`PreparedArrays`), the kept ids and labels, and a `Manifest` whose fingerprint enters
every cell's identity. Split lists ship inside the plugin package with their sha256 (`SplitFiles`).
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
    resample,
)
from mmbench.data.prepare import (
    ARRAYS,
    MAX_BAD_FRACTION,
    REPORT,
    SAMPLES,
    Item,
    checked_raw,
    kept_hash,
    prepare_samples,
    raw_error,
    read_samples,
    split_rows,
    split_size_problems,
    write_prepared_manifest,
)
from mmbench.data.prepared import Manifest, read_manifest, write_manifest
from mmbench.data.splits import SUMS, SplitFiles, sha256, stratified_holdout
from mmbench.data.store import PreparedArrays, write_arrays
from mmbench.data.task import PreparedTask
from mmbench.files import atomic_write_json

__all__ = [
    "ARRAYS", "FLOW_METHODS", "MAX_BAD_FRACTION", "REPORT", "SAMPLES", "SUMS", "DataError", "Item", "Manifest",
    "MediaError", "PreparedArrays", "PreparedTask", "SplitFiles", "atomic_write_json", "checked_raw", "fit_length", "kept_hash",
    "log_power_spectrogram", "log_spectrogram", "optical_flow", "prepare_samples", "raw_error", "read_audio",
    "read_clip", "read_frames", "read_manifest", "read_samples", "resample", "sha256", "split_rows",
    "split_size_problems", "stratified_holdout", "write_arrays", "write_manifest", "write_prepared_manifest",
]
