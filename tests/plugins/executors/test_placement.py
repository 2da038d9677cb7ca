"""Cells placed by memory as well as by cores: a cell waits until its need fits beside the running ones, the
need is probed or known from an earlier run, and a worker killed for memory is named as such."""

from collections import deque

from mmbench.api.running import CellFinished, CellStarted, MemoryNeed, Notice, memory_key, probe_cell
from mmbench.running import grid as grid_lib
from mmbench.running.cells import expand
from mmbench.running.runner import run_grid
from mmbench_plugins.executors import local, placement, workers
from tests.conftest import TINY_GRID, Spy, results_without_timings

GB = 10**9


def tiny_cells(registry, text=TINY_GRID):
    return expand(grid_lib.parse(text, registry), registry)


def overlapping(events) -> int:
    """The most cells that were training at the same time."""
    running, most = 0, 0
    for event in events:
        running += isinstance(event, CellStarted) - isinstance(event, CellFinished)
        most = max(most, running)
    return most


def test_the_queue_head_waits_until_it_fits_and_a_cell_too_large_for_the_machine_runs_alone(registry):
    cells = tiny_cells(registry)  # two shapes: concat and sum, two seeds each
    concat = [c for c in cells if c.fusion.name == "concat"]
    told = []
    plan = placement.Placement({memory_key(concat[0]): MemoryNeed(6 * GB)}, told.append, budget=10 * GB)
    todo = deque(concat)
    first = plan.next_for(todo, None, [])
    assert first is concat[0]
    assert plan.next_for(todo, None, [(first, None)]) is None and list(todo) == concat[1:]  # 12 GB > 10 GB: waits
    [notice] = told
    assert isinstance(notice, Notice) and "needs about 6.0 GB" in notice.text and "one after another" in notice.text
    assert plan.next_for(todo, None, []) is concat[1]  # once alone, it starts
    big = placement.Placement({memory_key(concat[0]): MemoryNeed(30 * GB)}, told.append, budget=10 * GB)
    assert big.next_for(deque(concat), None, []) is concat[0] and "it runs alone" in told[-1].text


def test_a_gpus_memory_is_its_own_budget(registry):
    cells = [c for c in tiny_cells(registry) if c.fusion.name == "concat"]
    plan = placement.Placement({memory_key(cells[0]): MemoryNeed(GB, 30 * GB)}, lambda event: None, budget=100 * GB)
    plan.learn(cells[0], MemoryNeed(GB, 30 * GB), gpu_total=40 * GB)
    running = [(cells[0], "0")]
    assert plan.next_for(deque(cells[1:]), "0", running) is None  # 60 GB of one 40 GB GPU
    assert plan.next_for(deque(cells[1:]), "1", running) is cells[1]  # another GPU


def test_a_probe_measures_one_step_of_the_cells_shapes(registry):
    cell = tiny_cells(registry)[0]
    need = probe_cell(cell, registry)
    assert need.host > 10**8 and need.accelerator == 0  # a CPU process with torch loaded: hundreds of MB


def test_cells_that_do_not_fit_side_by_side_run_one_after_another(tmp_path, registry, monkeypatch):
    grid = grid_lib.parse(TINY_GRID, registry)
    run_grid(grid, registry, tmp_path / "in-process")
    roomy = Spy(local.LocalExecutor(local.LocalParams(workers=2)))
    run_grid(grid, registry, tmp_path / "roomy", executor=roomy)
    assert overlapping(roomy.events) == 2 and not any(isinstance(e, Notice) for e in roomy.events)

    class OneGigabyteEach(placement.Placement):
        """Whatever the probes measure, each cell needs 1 GB, and 1.5 GB are free: room for one, not two."""

        def learn(self, cell, need, gpu_total=None):
            super().learn(cell, MemoryNeed(GB), gpu_total)

    monkeypatch.setattr(workers, "Placement", lambda known, report: OneGigabyteEach(known, report, int(1.5 * GB)))
    tight = Spy(local.LocalExecutor(local.LocalParams(workers=2)))
    summary = run_grid(grid, registry, tmp_path / "tight", executor=tight)
    assert summary.counts == {"ok": 4} and overlapping(tight.events) == 1
    assert any(isinstance(e, Notice) and "one after another" in e.text for e in tight.events)
    assert results_without_timings(tmp_path / "tight") == results_without_timings(tmp_path / "in-process")


def test_a_worker_the_out_of_memory_killer_ends_is_named_with_the_memory_it_reached(tmp_path, registry,
                                                                                     monkeypatch):
    text = TINY_GRID.replace("epochs: 2", "epochs: 6").replace("seeds: [0, 1]", "seeds: [0]")
    spy = Spy(local.LocalExecutor(local.LocalParams(workers=2, max_retries=0)), kill_at_epoch=0)
    monkeypatch.setattr(workers, "oom_kills", lambda: len(spy.killed))  # the kernel counts the kill as its own
    run_grid(grid_lib.parse(text, registry), registry, tmp_path, executor=spy)
    [(killed, _)] = spy.killed
    [lost] = [e.result for e in spy.events if isinstance(e, CellFinished) and e.cell.cell_id == killed]
    assert lost.status == "failed" and "last killed by the out-of-memory killer at" in lost.reason
    assert " GB of memory" in lost.reason and "see the system log" not in lost.reason
