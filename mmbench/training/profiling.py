"""Timing, memory and environment records for every cell."""

from __future__ import annotations

import contextlib
import importlib.metadata
import platform
import resource
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch


@dataclass
class StepClock:
    """Per-step compute time and time blocked waiting for data, without a device sync per step.

    On CUDA each step is bracketed by events that are only read at `finish()`; on CPU the host clock is
    exact because the work is synchronous.
    """

    device: torch.device
    step_seconds: list[float] = field(default_factory=list)
    data_wait_seconds: float = 0.0
    samples: int = 0
    _events: list[tuple[torch.cuda.Event, torch.cuda.Event]] = field(default_factory=list)

    def timed_fetch(self, iterator):
        start = time.perf_counter()
        batch = next(iterator)
        self.data_wait_seconds += time.perf_counter() - start
        return batch

    def start(self):
        if self.device.type == "cuda":
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            return event
        return time.perf_counter()

    def stop(self, started, batch_size: int) -> None:
        self.samples += batch_size
        if self.device.type == "cuda":
            end = torch.cuda.Event(enable_timing=True)
            end.record()
            self._events.append((started, end))
        else:
            self.step_seconds.append(time.perf_counter() - started)

    def finish(self) -> None:
        """Resolve pending device events (one sync, at the end of an epoch)."""
        if self._events:
            torch.cuda.synchronize(self.device)
            self.step_seconds.extend(s.elapsed_time(e) / 1000.0 for s, e in self._events)
            self._events.clear()


class Stopwatch:
    """Seconds spent inside named `with stopwatch(name):` blocks (host time; the blocks it wraps synchronise
    with the device themselves where they read results)."""

    def __init__(self) -> None:
        self.seconds: defaultdict[str, float] = defaultdict(float)

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] += time.perf_counter() - start


def step_summary(step_seconds: list[float]) -> dict[str, float]:
    if not step_seconds:
        return {"median": 0.0, "p90": 0.0}
    ms = np.asarray(step_seconds) * 1000.0
    return {"median": float(np.median(ms)), "p90": float(np.percentile(ms, 90))}


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_accelerator_memory(device: torch.device) -> int:
    return int(torch.cuda.max_memory_allocated(device)) if device.type == "cuda" else 0


def reset_peak_host_rss() -> str:
    """Start a new peak-RSS window, so each cell reports its own peak and not the process's since start.

    Linux resets the peak (VmHWM) on writing 5 to /proc/self/clear_refs. Returns the scope the next
    `peak_host_rss_bytes()` covers: "cell", or "process" where the peak cannot be reset.
    """
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return "cell"
    except OSError:
        return "process"


def peak_host_rss_bytes() -> int:
    """Peak resident set size since the last reset (Linux), else since the process started."""
    try:
        status = Path("/proc/self/status").read_text()
        return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:"))) * 1024
    except (OSError, StopIteration):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return int(peak if sys.platform == "darwin" else peak * 1024)


def cpu_model() -> str:
    """The processor's marketing name (Linux reads /proc/cpuinfo), else what `platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@dataclass
class StepFlops:
    """Floating-point operations of one training step, counted by torch's `FlopCounterMode` on the cell's first
    step: the forward and backward passes and any extra pass the balancer makes. That step trains as every other
    does, only counted (no extra step runs); counting slows it on the host, and it is the warm-up step anyway.
    A compiled model (`compile: true`) is not counted: dynamo does not trace a forward run under the counter's
    dispatch mode, so counting would leave the model uncompiled."""

    total: int | None = None
    enabled: bool = True

    def counting(self, step: int) -> contextlib.AbstractContextManager:
        """Count the step numbered `step` of the cell when it is the first; any other runs as it is."""
        return self._count() if step == 0 and self.enabled else contextlib.nullcontext()

    @contextlib.contextmanager
    def _count(self) -> Iterator[None]:
        from torch.utils.flop_counter import FlopCounterMode

        with FlopCounterMode(display=False) as counter:
            yield
        self.total = counter.get_total_flops() or None


def device_description(device: torch.device) -> dict[str, Any]:
    """What ran the cell: the accelerator's name, or the CPU model with the intra-op threads it was given."""
    if device.type == "cuda":
        return {"type": "cuda", "name": torch.cuda.get_device_name(device), "count": 1}
    return {"type": device.type, "name": cpu_model(), "count": 1, "threads": torch.get_num_threads()}


def _git_commit() -> str | None:
    try:
        root = Path(__file__).resolve().parent.parent
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=5, check=True)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def environment(plugin_distributions: dict[str, str]) -> dict[str, object]:
    """Versions of everything that can move a number, recorded with each cell."""
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "os": platform.platform(),
        "mmbench": importlib.metadata.version("mmbench"),
        "plugins": plugin_distributions,
        "commit": _git_commit(),
    }
