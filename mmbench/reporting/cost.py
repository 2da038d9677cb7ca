"""What a method costs: its training step's FLOPs against the baseline's with the same encoders and fusion (a
method that is +0.5 points for 4x the compute reads that way), and the device-hours of one training run."""

from __future__ import annotations

from mmbench.reporting.confidence import setting
from mmbench.schema.leaderboard import Cost, Entry, Leaderboard


def device_hours(entry: Entry) -> float | None:
    """Training wall time of one run (mean over the seeds) times the devices it held, in hours; a CPU is one."""
    profile = entry.profile
    if profile is None or profile.train_seconds.mean is None:
        return None
    return profile.train_seconds.mean * profile.device.get("count", 1) / 3600.0


def step_flops(entry: Entry) -> float | None:
    return entry.profile.step_flops if entry.profile is not None else None


def annotate(board: Leaderboard) -> None:
    """Set every finished entry's cost."""
    baseline = {setting(e): step_flops(e) for e in board.entries if e.balancer.name == board.baseline}
    for entry in board.entries:
        if entry.profile is None:
            continue
        flops, base = step_flops(entry), baseline.get(setting(entry))
        entry.cost = Cost(device_hours=device_hours(entry), flops_vs_baseline=flops / base if flops and base else None)
