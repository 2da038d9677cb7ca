"""Leaderboard aggregation, rendering, schema versions and publishing."""

import json

import pytest

from mmbench.reporting import leaderboard as lb
from mmbench.reporting import markdown as md
from mmbench.reporting.publish import publish
from mmbench.running import grid as grid_lib
from mmbench.running.runner import run_grid
from tests.conftest import TINY_GRID


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, registry):
    out = tmp_path_factory.mktemp("run")
    text = TINY_GRID.replace("balancers: [joint]", "balancers: [joint, unimodal]")
    run_grid(grid_lib.parse(text, registry), registry, out, grid_text=text)
    return out


def test_seed_aggregation_matches_the_per_seed_results(run_dir):
    board = lb.read(run_dir / "leaderboard.json")
    cells = [json.loads(p.read_text()) for p in (run_dir / "cells").glob("*.json")]
    for entry in board.entries:
        seeds = sorted((c for c in cells if c["entry_id"] == entry.id), key=lambda c: c["seed"])
        accs = [c["test"]["metrics"]["accuracy"] for c in seeds]
        stat = entry.metrics["accuracy"]
        assert stat.per_seed == accs
        assert stat.mean == pytest.approx(sum(accs) / 2)
        assert stat.std == pytest.approx(abs(accs[0] - accs[1]) / 2 ** 0.5)


def test_markdown_ranks_by_primary_metric_and_shows_gain_over_joint(run_dir):
    board = lb.read(run_dir / "leaderboard.json")
    ranked = md.ranked(board)
    means = [e.metrics["accuracy"].mean for e in ranked]
    assert means == sorted(means, reverse=True)
    text = md.render_markdown(board)
    assert f"version `{board.benchmark_version}`" in text
    joint_rows = [line for line in text.split("## References")[0].splitlines() if "| joint " in line]
    assert len(joint_rows) == 2 and all("| +0.00 " in row for row in joint_rows)
    assert "fast alone (%)" in text and "slow alone (%)" in text
    # unimodal is a reference: listed apart, never ranked
    assert {e.balancer.name for e in ranked} == {"joint"}
    ranking, references = text.split("## References (not ranked)")
    assert "| unimodal " not in ranking and references.count("| unimodal ") == 2


def test_a_grid_run_gives_the_board_its_balance_and_cost_fields(run_dir):
    board = lb.read(run_dir / "leaderboard.json")
    assert board.schema_ == "mmbench.leaderboard/1.1"
    for entry in board.entries:
        shares = entry.contribution.share
        for seed in range(2):  # each seed's shares add up to 1 (the model beats predicting from no input)
            assert sum(shares[m].per_seed[seed] for m in board.modalities) == pytest.approx(1.0)
        assert entry.profile.step_flops > 0 and entry.cost.device_hours > 0
        if entry.balancer.name == "joint":
            assert entry.cost.flops_vs_baseline == 1.0
            assert set(entry.utilisation) == {"fast", "slow"} and all(u > 0 for u in entry.utilisation.values())
    text = md.render_markdown(board)
    assert all(column in text for column in ("fast share (%)", "imbalance", "slow util.", "FLOPs × joint"))


def test_unknown_schema_major_is_refused(run_dir, tmp_path):
    data = json.loads((run_dir / "leaderboard.json").read_text())
    data["schema"] = "mmbench.leaderboard/2"
    path = tmp_path / "future.json"
    path.write_text(json.dumps(data))
    with pytest.raises(lb.LeaderboardError, match="unsupported schema 'mmbench.leaderboard/2'"):
        lb.read(path)
    data["schema"] = "mmbench.leaderboard/1.3"  # a minor version adds fields; readers ignore them
    data["a_future_field"] = {"x": 1}
    data["entries"][0]["another_future_field"] = [1, 2]
    path.write_text(json.dumps(data))
    assert lb.read(path).schema_ == "mmbench.leaderboard/1.3"


def test_publish_is_idempotent_and_refuses_another_benchmark_version(run_dir, tmp_path):
    target = tmp_path / "leaderboards"
    [first] = publish(run_dir, target)
    written = target / "synthetic.json"
    assert first.board == written and written.with_suffix(".md").exists() and first.added == 8
    before = written.read_text()
    [again] = publish(run_dir, target)
    assert (again.added, again.replaced, again.unchanged) == (0, [], 8) and written.read_text() == before
    assert lb.read(written).entries == lb.read(run_dir / "leaderboard.json").entries
    data = json.loads(written.read_text())
    data["benchmark_version"] = "0-old"
    written.write_text(json.dumps(data))
    with pytest.raises(lb.LeaderboardError, match="holds benchmark version '0-old'"):
        publish(run_dir, target)


def test_an_unreadable_leaderboard_is_an_error_naming_the_file(tmp_path):
    torn = tmp_path / "torn.json"
    torn.write_text('{"schema": "mmbench.leaderboard/1", "entr')
    with pytest.raises(lb.LeaderboardError, match=rf"^cannot read leaderboard {torn}: Unterminated string"):
        lb.read(torn)
    with pytest.raises(lb.LeaderboardError, match=rf"^cannot read leaderboard {tmp_path / 'absent.json'}: "):
        lb.read(tmp_path / "absent.json")
