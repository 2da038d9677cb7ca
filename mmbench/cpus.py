"""How many CPUs this process may use: one rule, torch-free, for the trainer's data loaders, the local executor's
workers and the figure drawers of a leaderboard."""

from __future__ import annotations

import os


def usable_cpus() -> int:
    """CPUs this process may run on: its share under the `gpus` executor or Slurm, else the machine's."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1
