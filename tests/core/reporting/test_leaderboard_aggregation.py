"""Leaderboard aggregation and rendering from hand-written per-seed records: fast, nothing trains."""

import json
import math

import pytest
from pydantic import ValidationError

from mmbench.reporting import leaderboard as lb
from mmbench.reporting import markdown as md
from mmbench.reporting.publish import publish
from mmbench.rundir import RunStore, RunStoreError
from mmbench.schema.leaderboard import SCHEMA as LEADERBOARD_SCHEMA
from mmbench.schema.leaderboard import Stat
from mmbench.schema.results import CellResult
from tests.fixtures.results import board_of, record


def test_an_entry_takes_its_worst_seeds_status_and_reason():
    entry = lb.aggregate_entry([record(0), record(1, status="diverged", reason="non-finite training loss in epoch 3"),
                                record(2)], )
    assert entry.status == "diverged" and entry.reason == "non-finite training loss in epoch 3"
    assert entry.seed_status == {"0": "ok", "1": "diverged", "2": "ok"}
    failed = lb.aggregate_entry([record(0, status="failed", reason="RuntimeError: a"),
                                 record(1, status="diverged", reason="nan"), record(2)], )
    assert failed.status == "failed"
    two = lb.aggregate_entry([record(0, status="failed", reason="A"), record(1, status="failed", reason="B")])
    assert two.reason == "seed 0: A; seed 1: B"


def test_seed_statistics_use_the_sample_standard_deviation():
    entry = lb.aggregate_entry([record(2, accuracy=0.9), record(0, accuracy=0.7), record(1, accuracy=0.8)])
    assert entry.seeds == [0, 1, 2]
    stat = entry.metrics["accuracy"]
    assert stat.per_seed == [0.7, 0.8, 0.9]
    assert stat.mean == pytest.approx(0.8) and stat.std == pytest.approx(0.1)
    assert entry.created_at == "2026-11-03T00:00:00+00:00"  # the latest seed's


def test_imbalance_names_the_weakest_and_strongest_modality():
    entry = lb.aggregate_entry([record(0, unimodal={"fast": 0.9, "slow": 0.45}),
                                record(1, unimodal={"fast": 0.7, "slow": 0.35})], )
    assert (entry.imbalance.weakest, entry.imbalance.strongest) == ("slow", "fast")
    assert entry.imbalance.ratio == pytest.approx(0.4 / 0.8)


def test_imbalance_of_a_lower_is_better_metric_is_inverted():
    [r] = [record(0, unimodal={"fast": 0.9, "slow": 0.45}, primary="ece")]
    r.test.unimodal["fast"]["ece"] = 0.05  # fast is better calibrated
    r.test.unimodal["slow"]["ece"] = 0.30
    entry = lb.aggregate_entry([r])
    assert (entry.imbalance.weakest, entry.imbalance.strongest) == ("slow", "fast")


def test_coefficient_summary_follows_the_epochs_in_order():
    coefficients_0 = [{"k": 1.0}, {"k": 0.5}, {"k": 0.25}]
    coefficients_1 = [{"k": 3.0}, {"k": 1.5}, {"k": 0.75}]
    entry = lb.aggregate_entry([record(0, coefficients=coefficients_0), record(1, coefficients=coefficients_1)])
    summary = entry.diagnostics["k"]
    assert summary.per_epoch == [2.0, 1.0, 0.5]
    assert (summary.first, summary.last, summary.min, summary.max) == (2.0, 0.5, 0.5, 2.0)


def test_gain_over_joint_has_the_sign_of_the_difference():
    board = board_of([record(0, accuracy=0.80), record(1, accuracy=0.80),
                      record(0, "better", accuracy=0.85), record(1, "better", accuracy=0.85),
                      record(0, "worse", accuracy=0.75), record(1, "worse", accuracy=0.75),
                      record(0, "other_fusion", accuracy=0.9, fusion="sum")])
    lines = md.render_markdown(board).splitlines()
    header = [c.strip() for c in next(line for line in lines if line.startswith("| #")).split("|")]
    rows = [[c.strip() for c in line.split("|")] for line in lines
            if line.startswith("| ") and line.split("|")[1].strip().isdigit()]
    column = header.index("gain vs joint")
    gain = {row[header.index("balancer")]: row[column] for row in rows}
    assert gain == {"better": "+5.00", "joint": "+0.00", "worse": "-5.00", "other_fusion": "–"}
    assert [e.balancer.name for e in md.ranked(board)] == ["other_fusion", "better", "joint", "worse"]


def test_a_lower_is_better_primary_ranks_ascending():
    records = [record(0, "a", primary="ece"), record(0, "b", primary="ece"), record(0, "c", primary="ece")]
    for r, ece in zip(records, (0.3, 0.1, 0.2)):
        r.test.metrics["ece"] = ece
    assert [e.balancer.name for e in md.ranked(board_of(records))] == ["b", "c", "a"]


def test_failed_entries_are_listed_apart_and_never_ranked():
    board = board_of([record(0), record(0, "broken", status="failed", reason="RuntimeError: boom")])
    markdown = md.render_markdown(board)
    ranked_part, not_ranked = markdown.split("## To explain")[0], markdown.split("## Not ranked")[1]
    assert "broken" not in ranked_part and "RuntimeError: boom" in not_ranked
    assert [e.balancer.name for e in md.ranked(board)] == ["joint"]


def _run(tmp_path, name, records):
    """A run directory holding these cell results."""
    store = RunStore(tmp_path / name)
    for r in records:
        store.save(r)
    return store.root


def test_republishing_a_seed_with_another_outcome_replaces_that_cell_and_says_so(tmp_path):
    target = tmp_path / "boards"
    publish(_run(tmp_path, "first", [record(0, accuracy=0.7), record(0, "other", accuracy=0.6)]), target)
    [report] = publish(_run(tmp_path, "second", [record(0, accuracy=0.9)]), target)
    assert report.added == 0 and report.replaced == ["synthetic mlp concat joint seed=0"]
    board = lb.read(target / "synthetic.json")
    assert {e.balancer.name: e.metrics["accuracy"].mean for e in board.entries} == {"joint": 0.9, "other": 0.6}
    assert "90.00 ± 0.00" in (target / "synthetic.md").read_text()


def test_publishing_fewer_seeds_never_reduces_an_entry(tmp_path):
    target = tmp_path / "boards"
    publish(_run(tmp_path, "three", [record(s, accuracy=0.8 + s / 100) for s in (0, 1, 2)]), target)
    [report] = publish(_run(tmp_path, "one", [record(0, accuracy=0.8, train_seconds=99.0)]), target)
    assert (report.added, report.replaced, report.unchanged) == (0, [], 1)
    [entry] = lb.read(target / "synthetic.json").entries
    assert entry.seeds == [0, 1, 2] and entry.metrics["accuracy"].per_seed == pytest.approx([0.80, 0.81, 0.82])
    assert entry.profile.train_seconds.per_seed == [1.0, 1.0, 1.0]  # the re-run's timing did not overwrite


def test_new_seeds_are_merged_into_the_published_entry(tmp_path):
    target = tmp_path / "boards"
    publish(_run(tmp_path, "a", [record(0, accuracy=0.8), record(1, accuracy=0.9)]), target)
    [report] = publish(_run(tmp_path, "b", [record(1, accuracy=0.9), record(2, accuracy=0.7)]), target)
    assert (report.added, report.unchanged) == (1, 1)
    [entry] = lb.read(target / "synthetic.json").entries
    assert entry.seeds == [0, 1, 2] and entry.metrics["accuracy"].mean == pytest.approx(0.8)


def test_a_benchmark_name_is_never_a_path(tmp_path):
    hostile = record(0).model_dump(mode="json", by_alias=True) | {"benchmark": "../../escaped"}
    with pytest.raises(ValidationError, match="benchmark"):
        CellResult.model_validate(hostile)
    run = tmp_path / "run" / "cells"
    run.mkdir(parents=True)
    (run / "x.json").write_text(json.dumps(hostile))
    with pytest.raises(RunStoreError, match="benchmark: String should match pattern"):
        publish(tmp_path / "run", tmp_path / "boards")
    assert not (tmp_path / "escaped.json").exists() and not list(tmp_path.rglob("escaped*"))


def test_a_reason_with_a_bar_or_a_line_break_keeps_the_table_intact():
    board = board_of([record(0), record(0, "broken", status="failed", reason="ValueError: a | b\nsecond line")])
    rows = [line for line in md.render_markdown(board).splitlines() if line.startswith("| broken")]
    assert rows == [rows[0]] and "a \\| b second line" in rows[0]
    assert rows[0].count(" | ") == 4  # five columns


def test_written_json_round_trips_and_is_strict(tmp_path):
    path = tmp_path / "leaderboard.json"
    board = board_of([record(0), record(1, accuracy=0.6)])
    lb.write(board, path)
    data = json.loads(path.read_text())
    assert data["schema"] == LEADERBOARD_SCHEMA and lb.read(path) == board
    assert all(math.isfinite(v) for v in data["entries"][0]["metrics"]["accuracy"]["per_seed"])


def test_anomalous_rows_are_flagged_in_the_markdown():
    from mmbench.reporting.anomalies import anomalies

    board = board_of([
        record(0, accuracy=0.80), record(1, accuracy=0.80),
        record(0, "slightly_worse", accuracy=0.78), record(1, "slightly_worse", accuracy=0.78),
        record(0, "far_below", accuracy=0.70), record(1, "far_below", accuracy=0.72),
        record(0, "unstable", accuracy=0.90), record(1, "unstable", accuracy=0.80),
        record(0, "broken", status="diverged", reason="non-finite training loss in epoch 2"),
    ])
    flagged = anomalies(board)
    assert flagged == [
        "broken (mlp, concat): diverged (non-finite training loss in epoch 2)",
        "far_below (mlp, concat): -9.0 points vs joint",
        "unstable (mlp, concat): seeds 10.0 points apart (90.0, 80.0)",
    ]
    section = md.render_markdown(board).split("## To explain")[1]
    assert all(f"- {line}" in section for line in flagged) and "slightly_worse" not in section


def test_the_papers_number_and_the_difference_are_shown_when_the_grid_names_them():
    records = [record(0, accuracy=0.80), record(0, "ogm", accuracy=0.62)]
    for r in records:
        r.published_source = "Peng et al., CVPR 2022, Tab. 1"
    records[1].published = {"accuracy": 0.612}
    text = md.render_markdown(board_of(records))
    ranking = text.split("## Confidence")[0]
    assert "'paper': the accuracy the reproduced paper reports for that method (Peng et al., CVPR 2022, Tab. 1)" in text
    [row] = [line for line in ranking.splitlines() if line.startswith("| ") and "| ogm " in line]
    assert "| 61.20 " in row and "| +0.80 " in row
    [joint] = [line for line in ranking.splitlines() if line.startswith("| ") and "| joint " in line]
    assert joint.count("| – ") >= 2


def test_a_metric_no_seed_reported_keeps_a_none_per_seed():
    assert Stat.of([None, None]).model_dump() == {"mean": None, "std": None, "per_seed": [None, None]}


def test_a_run_over_two_benchmarks_writes_a_board_and_figures_per_benchmark(tmp_path):
    synthetic = [record(s, coefficients=({"k": 1.0}, {"k": 2.0})) for s in (0, 1)]
    other = [r.model_copy(update={"benchmark": "other", "task": r.task.model_copy(update={"name": "other"})})
             for r in synthetic]  # the same benchmark version string, another benchmark
    paths = lb.write_run_leaderboards(synthetic + other, tmp_path, plots=True)
    assert sorted(p.name for p in paths) == ["leaderboard.other.json", "leaderboard.synthetic.json"]
    for name in ("other", "synthetic"):
        board = lb.read(tmp_path / f"leaderboard.{name}.json")
        [entry] = board.entries
        figures = sorted(p.name for p in (tmp_path / f"leaderboard.{name}-plots").iterdir())
        assert figures == sorted([f"{entry.id}-curves.png", f"{entry.id}-coefficients.png", "modalities.png"])
        text = (tmp_path / f"leaderboard.{name}.md").read_text()
        assert f"leaderboard.{name}-plots/{entry.id}-curves.png" in text and "modalities.png" in text
    [single] = lb.write_run_leaderboards(synthetic, tmp_path / "one", plots=False)
    assert single.name == "leaderboard.json" and not list((tmp_path / "one").glob("*-plots"))
    assert ".png" not in single.with_suffix(".md").read_text()


def test_a_cell_file_that_is_not_a_cell_result_names_the_field(tmp_path):
    store = RunStore(tmp_path)
    data = record(0).to_json()
    data["test"]["metrics"] = "high"
    store.path("abc").parent.mkdir(parents=True, exist_ok=True)
    store.path("abc").write_text(json.dumps(data))
    with pytest.raises(RunStoreError, match=r"abc.json is not a cell result this mmbench can read \(test\.metrics: "
                                            r"Input should be a valid dictionary\); run the grid into a new directory"):
        store.load("abc")


def test_an_entry_names_its_worst_seeds_error_and_where_its_numbers_came_from():
    def with_error(result, **error):
        return CellResult.model_validate({**result.to_json(), "error": error})

    diverged = with_error(record(1, status="diverged", reason="non-finite training loss in epoch 3"),
                          type="NonFiniteLoss", message="non-finite training loss", epoch=3)
    failed = with_error(record(2, status="failed", reason="RuntimeError: boom"), type="RuntimeError", message="boom")
    entry = lb.aggregate_entry([record(0), diverged, failed])
    assert entry.error.model_dump() == {"seed": 2, "type": "RuntimeError", "epoch": None}  # the worst: failed
    assert lb.aggregate_entry([record(0), diverged]).error.model_dump() == \
        {"seed": 1, "type": "NonFiniteLoss", "epoch": 3}
    assert lb.aggregate_entry([record(0), record(1)]).error is None
    assert (entry.selection, entry.mmbench_version, entry.plugin_versions, entry.commit) == \
        ("best validation accuracy over epochs", "0.1.0", {"mmbench": "0.1.0"}, "abc")


def test_imbalance_spans_all_modalities_and_skips_one_without_the_primary_metric():
    three = record(0, unimodal={"fast": 0.9, "mid": 0.6, "slow": 0.3})
    entry = lb.aggregate_entry([three])
    assert (entry.imbalance.weakest, entry.imbalance.strongest) == ("slow", "fast")
    three.test.unimodal["slow"] = {"ece": 0.2}  # no accuracy for this modality
    entry = lb.aggregate_entry([three])
    assert (entry.imbalance.weakest, entry.imbalance.strongest) == ("mid", "fast")


def test_a_modality_one_seed_did_not_report_gets_a_none_for_that_seed():
    entry = lb.aggregate_entry([record(0, unimodal={"fast": 0.9, "slow": 0.3}), record(1, unimodal={"fast": 0.7})])
    assert entry.unimodal["slow"]["accuracy"].per_seed == [0.3, None]
    assert entry.unimodal["fast"]["accuracy"].mean == pytest.approx(0.8)


def test_a_seed_with_fewer_epochs_leaves_the_later_epochs_to_the_others():
    longer, shorter = [{"k": 1.0}, {"k": 0.5}, {"k": 0.25}], [{"k": 3.0}, {"k": 1.5}]
    entry = lb.aggregate_entry([record(0, coefficients=longer), record(1, coefficients=shorter)])
    assert entry.diagnostics["k"].per_epoch == [2.0, 1.0, 0.25]


def test_the_profile_averages_every_rate_and_share_over_seeds():
    first, second = record(0), record(1)
    second.profile.step_samples_per_second, second.profile.samples_per_second = 40.0, 30.0
    second.profile.data_wait_fraction, second.profile.validation_fraction = 0.3, 0.4
    second.profile.balancer_hook_fraction, second.profile.seconds_per_epoch = 0.2, 3.0
    profile = lb.aggregate_entry([first, second]).profile
    assert (profile.step_samples_per_second, profile.samples_per_second) == (30.0, 20.0)
    assert (profile.data_wait_fraction, profile.validation_fraction) == pytest.approx((0.2, 0.3))
    assert (profile.balancer_hook_fraction, profile.seconds_per_epoch) == (0.1, 2.0)


def test_entries_are_ordered_by_balancer_then_fusion_whatever_their_ids():
    fusions = ["concat", "film", "gated", "sum", "tf"]
    records = [record(0, balancer, fusion=fusion) for balancer in ("b", "a") for fusion in reversed(fusions)]
    assert [(e.balancer.name, e.fusion.name) for e in board_of(records).entries] == \
        [("a", f) for f in fusions] + [("b", f) for f in fusions]


def test_missing_modality_scores_are_aggregated_per_modality():
    first, second = record(0), record(1)
    second.test.missing_modality["slow"]["accuracy"] = 0.7
    entry = lb.aggregate_entry([first, second])
    assert entry.missing_modality["slow"]["accuracy"].per_seed == [0.5, 0.7]
    assert entry.missing_modality["fast"]["accuracy"].mean == pytest.approx(0.5)
