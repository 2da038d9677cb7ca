"""A tuned grid end to end (tiny, CPU): trials are ordinary cells that never read the test split; resume; boards."""

import io
import json

import pytest
from rich.console import Console
from torch.utils.data import Dataset

from mmbench import registry as registry_lib
from mmbench.contract.hooks import hookimpl
from mmbench.reporting import leaderboard as lb
from mmbench.reporting.publish import publish
from mmbench.rundir import RunStore
from mmbench.running import grid as grid_lib
from mmbench.running.runner import run_grid
from mmbench_plugins.tasks.synthetic import SyntheticTask
from tests.conftest import TINY_GRID

#: every access to a test split, in order, and (is it a trial, accesses so far) when each cell finished
READS: list[int] = []
FINISHED: list[tuple[bool, int]] = []


class Watched(Dataset):
    """A split that records every read."""

    def __init__(self, base: Dataset) -> None:
        self.base = base

    def __len__(self) -> int:
        READS.append(-1)
        return len(self.base)

    def __getitem__(self, index: int):
        READS.append(index)
        return self.base[index]


class WatchedTask(SyntheticTask):
    name = "watched"

    def splits(self):
        out = super().splits()
        out["test"] = Watched(out["test"])
        return out


class Plugin:
    @hookimpl
    def mmbench_tasks(self):
        return [WatchedTask]

    @hookimpl
    def mmbench_cell_finished(self, cell, result):
        FINISHED.append((cell["tuning"] is not None and cell["tuning"]["stage"] == "trial", len(READS)))


PLAIN = (TINY_GRID.replace("name: synthetic", "name: watched").replace("fusions: [concat, sum]", "fusions: [concat]")
         .replace("balancers: [joint]", "balancers: [joint, ogm]"))
TUNED = PLAIN.replace("name: tiny", "name: tiny-tuned") + "search: {trials: 2, seed: 3}\n"


@pytest.fixture(scope="module")
def registry():
    return registry_lib.load(extra_plugins=[Plugin()])


@pytest.fixture(scope="module")
def tuned_run(registry, tmp_path_factory):
    READS.clear()
    FINISHED.clear()
    out = tmp_path_factory.mktemp("tuned")
    log = io.StringIO()
    summary = run_grid(grid_lib.parse(TUNED, registry), registry, out, grid_text=TUNED,
                       console=Console(file=log, width=200))
    return out, summary, list(FINISHED), log.getvalue()


def test_no_trial_reads_the_test_split_and_the_chosen_runs_do(tuned_run):
    _, _, finished, _ = tuned_run
    trials = [reads for is_trial, reads in finished if is_trial]
    assert len(trials) == 4 and trials[-1] == 0  # two configurations x two trials, all before any test read
    assert len(finished) == 8 and finished[-1][1] > 0  # the four re-runs evaluated the test split


def test_the_log_shows_a_trials_validation_scores(tuned_run):
    log = tuned_run[3]
    trial_lines = [line for line in log.splitlines() if "seed=3:" in line]
    assert len(trial_lines) == 4 and all(" val accuracy=" in line for line in trial_lines)


def test_every_trial_is_an_ordinary_stored_cell_with_validation_scores_only(tuned_run):
    out, summary, _, _ = tuned_run
    results = RunStore(out).results()
    assert summary.counts == {"ok": 8} and len(results) == 8
    assert all((out / "cells" / f"{r.cell_id}.json").exists() for r in results)
    trials = [r for r in results if r.is_trial]
    assert len(trials) == 4
    assert all(r.test is None and r.val.metrics["accuracy"] is not None and r.seed == 3 for r in trials)


def test_a_second_run_resumes_every_cell_and_trains_nothing(tuned_run, registry):
    out, first, _, _ = tuned_run
    before = json.loads((out / "leaderboard.json").read_text())
    again = run_grid(grid_lib.parse(TUNED, registry), registry, out, grid_text=TUNED)
    assert again.resumed == 8 and again.counts == first.counts
    assert json.loads((out / "leaderboard.json").read_text()) == before


def test_the_board_says_tuned_and_shows_the_choice_and_the_trials(tuned_run):
    out, _, _, _ = tuned_run
    board = lb.read(out / "leaderboard.json")
    assert board.benchmark == "watched-tuned" and len(board.entries) == 2
    results = RunStore(out).results()
    for entry in board.entries:
        assert entry.hyperparameters == "tuned (2 trials)" and entry.seeds == [0, 1]
        chosen = [r for r in results if r.entry_id == entry.id]
        assert entry.search.chosen == chosen[0].tuning.params and entry.search.finished == 2
        trials = sorted((r for r in results if r.is_trial and r.tuning.search == chosen[0].tuning.search),
                        key=lambda r: r.tuning.trial)
        assert entry.search.trial_scores == [r.val.metrics["accuracy"] for r in trials]
        assert entry.train["optimizer"]["lr"] == entry.search.chosen["optimizer.lr"]
    markdown = (out / "leaderboard.md").read_text()
    assert "Hyper-parameters: **tuned (2 trials)**" in markdown and "## Tuning" in markdown


def test_defaults_and_tuned_runs_publish_to_separate_boards(tuned_run, registry, tmp_path):
    out, _, _, _ = tuned_run
    plain = tmp_path / "plain"
    run_grid(grid_lib.parse(PLAIN, registry), registry, plain, grid_text=PLAIN)
    boards = tmp_path / "boards"
    publish(plain, boards)
    publish(out, boards)
    assert sorted(p.name for p in boards.iterdir()) == [
        "README.md", "methods",  # the summary over every board, a page per method
        "watched-tuned.cells.jsonl", "watched-tuned.json", "watched-tuned.md",
        "watched.cells.jsonl", "watched.json", "watched.md"]
    assert {e.hyperparameters for e in lb.read(boards / "watched.json").entries} == {"defaults"}
    assert len((boards / "watched-tuned.cells.jsonl").read_text().splitlines()) == 8  # the trials are evidence too
