"""The anomaly rule: a method far below the baseline in the primary metric's own direction is flagged."""

from mmbench.reporting.anomalies import anomalies
from tests.fixtures.results import board_of, record


def test_a_lower_is_better_primary_flags_a_rise_not_a_fall():
    """ECE is lower-is-better: 8 points more than joint is far below it, 8 points less is far better."""
    board = board_of([
        record(0, ece=0.10, primary="ece"), record(1, ece=0.10, primary="ece"),
        record(0, "worse", ece=0.18, primary="ece"), record(1, "worse", ece=0.18, primary="ece"),
        record(0, "better", ece=0.02, primary="ece"), record(1, "better", ece=0.02, primary="ece"),
    ])
    assert anomalies(board) == ["worse (mlp, concat): +8.0 points vs joint"]


def test_a_higher_is_better_primary_flags_a_fall():
    board = board_of([record(0, accuracy=0.80), record(0, "worse", accuracy=0.72), record(0, "better", accuracy=0.88)])
    assert anomalies(board) == ["worse (mlp, concat): -8.0 points vs joint"]
