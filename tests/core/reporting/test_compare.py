"""`mmbench compare`: per-entry differences between two boards, and a threshold for regression tests."""

import json

from typer.testing import CliRunner

from mmbench.cli import app
from mmbench.reporting import leaderboard as lb
from tests.fixtures.results import board_of, record


def _boards(tmp_path, b_joint, b_other):
    a = board_of([record(0, accuracy=0.80), record(0, "other", accuracy=0.70), record(0, "gone", accuracy=0.5)])
    b = board_of([record(0, accuracy=b_joint), record(0, "other", accuracy=b_other), record(0, "new", accuracy=0.6)])
    lb.write(a, tmp_path / "a.json")
    lb.write(b, tmp_path / "b.json")
    return str(tmp_path / "a.json"), str(tmp_path / "b.json")


def test_differences_are_signed_points_and_unmatched_entries_are_listed(tmp_path):
    a, b = _boards(tmp_path, b_joint=0.85, b_other=0.68)
    result = CliRunner().invoke(app, ["compare", a, b])
    assert result.exit_code == 0, result.output
    rows = {line.split("|")[1].strip(): line for line in result.output.splitlines() if line.startswith("| ")}
    assert "+5.00" in rows["joint mlp concat"] and "-2.00" in rows["other mlp concat"]
    assert "only in A: gone mlp concat" in result.output and "only in B: new mlp concat" in result.output


def test_a_lower_is_better_metric_counts_a_rise_as_worse(tmp_path):
    a, b = _boards(tmp_path, 0.8, 0.7)
    data = json.loads(open(b).read())
    data["entries"][0]["metrics"]["ece"]["mean"] = 0.15  # joint: ECE 0.10 -> 0.15
    open(b, "w").write(json.dumps(data))
    result = CliRunner().invoke(app, ["compare", a, b, "--metric", "ece", "--fail-on", "ece:2"])
    assert result.exit_code == 1 and "joint mlp concat: ece -5.00 points (allowed −2)" in result.output


def test_fail_on_a_threshold(tmp_path):
    a, b = _boards(tmp_path, b_joint=0.80, b_other=0.68)
    assert CliRunner().invoke(app, ["compare", a, b, "--fail-on", "accuracy:3"]).exit_code == 0
    failed = CliRunner().invoke(app, ["compare", a, b, "--fail-on", "accuracy:1.5"])
    assert failed.exit_code == 1 and "other mlp concat: accuracy -2.00 points (allowed −1.5)" in failed.output
    bad = CliRunner().invoke(app, ["compare", a, b, "--fail-on", "accuracy=1"])
    assert bad.exit_code == 2 and "METRIC:POINTS" in bad.output
