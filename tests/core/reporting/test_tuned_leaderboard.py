"""Tuned entries on a leaderboard, from hand-written results: labels, chosen values, trial spread, never mixed."""

import pytest

from mmbench.reporting import leaderboard as lb
from mmbench.reporting import markdown as md
from mmbench.schema.cell import Tuning
from mmbench.schema.results import SplitScores
from tests.fixtures.results import board_of, record

SPACE = {"balancer.alpha": {"log_uniform": [0.05, 3.0]}, "optimizer.lr": {"log_uniform": [0.005, 0.5]}}


def tuning(stage, trial, params, search="s-ogm"):
    return Tuning(search=search, stage=stage, trial=trial, trials=3, sampler="random", seed=100, metric="accuracy",
                  space=SPACE, params=params)


def trial(number, val, balancer="ogm", search="s-ogm"):
    """A trial's result: validation scores only (None: it failed)."""
    params = {"balancer.alpha": 0.1 * (number + 1), "optimizer.lr": 0.01 * (number + 1)}
    r = record(100, balancer, status="ok" if val is not None else "failed", reason=None if val else "boom")
    return r.model_copy(update={"benchmark": "synthetic-tuned", "test": None, "tuning": tuning("trial", number, params,
                                                                                               search),
                                "val": SplitScores(metrics={"accuracy": val}) if val is not None else None})


def chosen(seed, accuracy, balancer="ogm", search="s-ogm", number=1):
    params = {"balancer.alpha": 0.1 * (number + 1), "optimizer.lr": 0.01 * (number + 1)}
    return record(seed, balancer, accuracy=accuracy).model_copy(
        update={"benchmark": "synthetic-tuned", "tuning": tuning("selected", number, params, search)})


def tuned_board():
    return board_of([trial(0, 0.70), trial(1, 0.90), trial(2, None), chosen(0, 0.88), chosen(1, 0.86),
                     trial(0, 0.80, "joint", "s-joint"), trial(1, 0.60, "joint", "s-joint"),
                     trial(2, 0.75, "joint", "s-joint"),
                     chosen(0, 0.80, "joint", "s-joint", 0), chosen(1, 0.82, "joint", "s-joint", 0)])


def test_trials_are_evidence_for_their_entry_never_entries_themselves():
    board = tuned_board()
    assert board.benchmark == "synthetic-tuned"
    assert sorted((e.balancer.name, e.seeds) for e in board.entries) == [("joint", [0, 1]), ("ogm", [0, 1])]
    ogm = next(e for e in board.entries if e.balancer.name == "ogm")
    assert ogm.hyperparameters == "tuned (3 trials)"
    s = ogm.search
    assert (s.trials, s.finished, s.selected_trial, s.metric, s.sampler) == (3, 2, 1, "accuracy", "random")
    assert s.trial_scores == [0.70, 0.90, None]
    assert s.chosen == {"balancer.alpha": pytest.approx(0.2), "optimizer.lr": 0.02} and s.space == SPACE


def test_entries_of_a_grid_without_search_say_defaults():
    [entry] = board_of([record(0), record(1)]).entries
    assert entry.hyperparameters == "defaults" and entry.search is None


def test_defaults_and_tuned_results_never_share_a_board():
    boards = lb.aggregate([record(0), record(1), chosen(0, 0.9), chosen(1, 0.9), trial(1, 0.9)])
    assert [(b.benchmark, {e.hyperparameters for e in b.entries}) for b in boards] == [
        ("synthetic", {"defaults"}), ("synthetic-tuned", {"tuned (3 trials)"})]


def test_the_markdown_shows_the_protocol_the_choices_and_the_spread():
    text = md.render_markdown(tuned_board())
    assert "Hyper-parameters: **tuned (3 trials)** per method" in text
    section = text.split("## Tuning")[1]
    rows = {row.split("|")[1].strip(): [c.strip() for c in row.split("|")[4:-1]] for row in section.splitlines()
            if row.startswith("| ") and not row.startswith("| balancer")}
    # ogm: scored trials 0.90, 0.70 -> best 90, median 80, worst 70, std 14.14; joint: 80, 75, 60, std 10.41
    assert rows["ogm"] == ["alpha=0.2, lr=0.02 (trial 1)", "2/3", "90.00 · 80.00 · 70.00 (std 14.14)"]
    assert rows["joint"] == ["alpha=0.1, lr=0.01 (trial 0)", "3/3", "80.00 · 75.00 · 60.00 (std 10.41)"]
    assert "Hyper-parameters: **defaults**" in md.render_markdown(board_of([record(0)]))


def test_republishing_a_trial_with_another_validation_score_replaces_it_and_says_so(tmp_path):
    from mmbench.reporting.publish import publish
    from mmbench.rundir import RunStore

    def run(name, results):
        store = RunStore(tmp_path / name)
        for r in results:
            store.save(r)
        return store.root

    publish(run("first", [trial(0, 0.70), chosen(0, 0.9)]), tmp_path / "boards")
    [report] = publish(run("second", [trial(0, 0.75), chosen(0, 0.9)]), tmp_path / "boards")
    assert (report.added, len(report.replaced), report.unchanged) == (0, 1, 1)
    assert lb.read(tmp_path / "boards" / "synthetic-tuned.json").entries[0].search.trial_scores == [0.75]


def test_a_tuned_entry_is_labelled_by_its_balancer_and_its_choices_are_in_the_tuning_section():
    def with_overrides(r):
        return r.model_copy(update={"balancer": r.balancer.model_copy(update={"overrides": {"alpha": 0.2, "beta": 1}})})

    board = board_of([with_overrides(r) for r in
                      (trial(0, 0.70), trial(1, 0.90), chosen(0, 0.88), chosen(1, 0.86))])
    ranking = md.render_markdown(board).split("## Tuning")[0]
    assert "| ogm " in ranking and "alpha=0.2, beta=1" not in ranking
    untuned = md.render_markdown(board_of([with_overrides(record(0, "ogm"))]))
    assert "| ogm (alpha=0.2, beta=1) " in untuned
