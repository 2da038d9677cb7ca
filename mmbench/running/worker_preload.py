"""What the workers' server imports once, so that no worker pays for it (`worker_server.PRELOAD`).

torch and mmbench; torch's compiler front end, which every torch.optim optimizer imports (over a second); the
installed plugins (a plugin that fails to import is left to each worker's registry, which reports it). Then the
heap is frozen (`gc.freeze`), so that the workers' garbage collections neither walk nor copy the pages of what
they inherited.
"""

import contextlib
import gc
import importlib.metadata

import torch._dynamo  # noqa: F401

import mmbench.api  # noqa: F401
from mmbench import hookspecs

for entry_point in importlib.metadata.entry_points(group=hookspecs.PROJECT):
    with contextlib.suppress(Exception):
        entry_point.load()
gc.freeze()
