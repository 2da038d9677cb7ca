"""Where the quickstart's time goes, per process: runs `mmbench run --matrix grids/quickstart.yaml` under
`perf record -e cpu-clock` (Linux perf, root or perf_event_paranoid <= 1) and prints, for each Python process of
the run (the runner, the workers' server, the workers, the runner's figure drawers), its first and last sample in
seconds from the start and its CPU-seconds; the runner's CPU-seconds are split into before, while and after the
workers train.

    python benchmarks/quickstart_phases.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

from quickstart_wall import COMMAND, GRID

HZ = 499  # samples per CPU-second


def record(perf_data: Path) -> None:
    with tempfile.TemporaryDirectory() as out:
        subprocess.run(["perf", "record", "-q", "-e", "cpu-clock", "-F", str(HZ), "-o", str(perf_data), "--",
                        sys.executable, "-c", COMMAND, "run", "--matrix", str(GRID), "--out", out], cwd=out,
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def samples(perf_data: Path) -> dict[int, list[float]]:
    """pid -> sample times of the run's Python processes (the ones with more than a fifth of a CPU-second)."""
    script = subprocess.run(["perf", "script", "-i", str(perf_data), "-F", "comm,pid,time"], check=True,
                            capture_output=True, text=True).stdout
    times: dict[int, list[float]] = defaultdict(list)
    for line in script.splitlines():
        fields = line.split()
        if len(fields) == 3 and fields[0].startswith("python"):
            times[int(fields[1])].append(float(fields[2].rstrip(":")))
    return {pid: sorted(t) for pid, t in times.items() if len(t) > HZ / 5}


def report(times: dict[int, list[float]]) -> str:
    start = min(t[0] for t in times.values())
    runner, server, *forked = sorted(times, key=lambda pid: times[pid][0])
    # the training workers start together; the runner forks its figure drawers after their last cell
    workers = [pid for pid in forked if times[pid][0] < times[forked[0]][-1]]
    drawers = [pid for pid in forked if pid not in workers]
    first, last = min(times[w][0] for w in workers), max(times[w][-1] for w in workers)
    before, during, after = (sum(1 for t in times[runner] if test(t)) / HZ
                             for test in (lambda t: t < first, lambda t: first <= t <= last, lambda t: t > last))
    parts = [f"runner 0-{times[runner][-1] - start:.1f} s ({before:.1f} + {during:.1f} + {after:.1f} CPU-s before, "
             "while and after the workers train)"]
    named = [("server", server), *((f"worker {i}", pid) for i, pid in enumerate(workers)),
             *((f"figures {i}", pid) for i, pid in enumerate(drawers))]
    for name, pid in named:
        t = times[pid]
        parts.append(f"{name} {t[0] - start:.1f}-{t[-1] - start:.1f} s ({len(t) / HZ:.1f} CPU-s)")
    return "; ".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        for round_ in range(args.rounds):
            perf_data = Path(scratch) / f"round{round_}.data"
            record(perf_data)
            print(f"round {round_ + 1}: {report(samples(perf_data))}", flush=True)


if __name__ == "__main__":
    main()
