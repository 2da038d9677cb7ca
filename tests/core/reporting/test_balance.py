"""How balanced a model is: Shapley contributions, shares and imbalance degree pinned on hand-computed games (two
and three modalities), utilisation against the `unimodal` reference, and the cost columns."""

import pytest

from mmbench.reporting import balance
from mmbench.reporting import markdown as md
from tests.fixtures.results import board_of, record

#: v(∅) = 0.2, v(a) = 0.7, v(b) = 0.4, v(ab) = 0.9. By hand: φ_a = ½[(0.7 − 0.2) + (0.9 − 0.4)] = 0.5,
#: φ_b = ½[(0.4 − 0.2) + (0.9 − 0.7)] = 0.2 (sum 0.7 = v(ab) − v(∅)); shares 5/7 and 2/7; degree 3/7.
TWO = {"": 0.2, "fast": 0.7, "slow": 0.4, "fast+slow": 0.9}

#: v(∅) = 0, v(a) = 0.6, v(b) = 0.1, v(c) = 0, v(ab) = 0.6, v(ac) = 0.8, v(bc) = 0.1, v(abc) = 0.9 (weights 1/3 for
#: the empty and the full set of the others, 1/6 for one other). By hand:
#: φ_a = (0.6 + 0.8)/3 + (0.5 + 0.8)/6 = 41/60, φ_b = (0.1 + 0.1)/3 + (0 + 0.1)/6 = 5/60,
#: φ_c = (0 + 0.3)/3 + (0.2 + 0)/6 = 8/60 (sum 0.9 = v(abc) − v(∅)); shares 41/54, 5/54, 8/54; degree 36/54.
THREE = {"": 0.0, "a": 0.6, "b": 0.1, "c": 0.0, "a+b": 0.6, "a+c": 0.8, "b+c": 0.1, "a+b+c": 0.9}


def game(values):
    return {balance.coalition(k): v for k, v in values.items()}


def test_shapley_values_of_two_modalities_by_hand():
    phi = balance.shapley(game(TWO), ["fast", "slow"])
    assert phi == pytest.approx({"fast": 0.5, "slow": 0.2})
    share = balance.shares(phi)
    assert share == pytest.approx({"fast": 5 / 7, "slow": 2 / 7})
    assert balance.imbalance_degree(share) == pytest.approx(3 / 7)


def test_shapley_values_of_three_modalities_by_hand():
    phi = balance.shapley(game(THREE), ["a", "b", "c"])
    assert phi == pytest.approx({"a": 41 / 60, "b": 5 / 60, "c": 8 / 60})
    share = balance.shares(phi)
    assert share == pytest.approx({"a": 41 / 54, "b": 5 / 54, "c": 8 / 54})
    assert balance.imbalance_degree(share) == pytest.approx(36 / 54)


def test_no_shares_when_the_modalities_together_give_nothing():
    assert balance.shares({"fast": 0.1, "slow": -0.1}) is None


def test_a_lower_is_better_metric_counts_a_helpful_modality_in_its_own_units():
    # ece falls from 0.5 (no input) to 0.1: by hand on the negated game, gains 0.3 and 0.1, so the contributions
    # in ece's units are -0.3 and -0.1, shares 3/4 and 1/4
    coalitions = {"": {"ece": 0.5}, "fast": {"ece": 0.2}, "slow": {"ece": 0.4}, "fast+slow": {"ece": 0.1}}
    phi, share = balance.seed_contribution(coalitions, "ece", lower_is_better=True)
    assert phi == pytest.approx({"fast": -0.3, "slow": -0.1})
    assert share == pytest.approx({"fast": 0.75, "slow": 0.25})


def test_a_missing_coalition_or_score_gives_no_contribution():
    assert balance.seed_contribution({"": {"accuracy": 0.2}, "fast": {"accuracy": 0.7}}, "accuracy", False) is None
    scores = {k: {"accuracy": v} for k, v in TWO.items()} | {"slow": {"accuracy": None}}
    assert balance.seed_contribution(scores, "accuracy", False) is None


def coalitions(values, metric="accuracy"):
    return {k: {metric: v} for k, v in values.items()}


def test_an_entry_aggregates_each_seeds_contribution():
    other = {"": 0.2, "fast": 0.6, "slow": 0.6, "fast+slow": 0.9}  # symmetric: shares ½, degree 0
    board = board_of([record(0, coalitions=coalitions(TWO)), record(1, coalitions=coalitions(other)),
                      record(2)])  # a result from before coalitions were recorded
    c = board.entries[0].contribution
    assert c.shapley["fast"].per_seed[:2] == pytest.approx([0.5, 0.35]) and c.shapley["fast"].per_seed[2:] == [None]
    assert c.share["slow"].per_seed[:2] == pytest.approx([2 / 7, 0.5])
    assert c.imbalance_degree.mean == pytest.approx((3 / 7 + 0.0) / 2)
    assert board_of([record(0)]).entries[0].contribution is None


def test_utilisation_is_each_modalitys_score_over_the_unimodal_reference_with_the_same_encoders():
    references = [record(0, balancer="unimodal", unimodal={"fast": 0.8, "slow": 0.5}),
                  record(0, balancer="unimodal", fusion="sum", unimodal={"fast": 0.9, "slow": 0.5})]
    for r in references:
        r.reference = True
    board = board_of([record(0, unimodal={"fast": 0.75, "slow": 0.4}), *references])
    joint = next(e for e in board.entries if e.balancer.name == "joint")
    assert joint.utilisation == pytest.approx({"fast": 0.75 / 0.85, "slow": 0.4 / 0.5})
    assert all(not e.utilisation for e in board.entries if e.reference)
    assert not board_of([record(0)]).entries[0].utilisation  # no reference, no utilisation


def test_cost_is_the_flops_ratio_to_the_baseline_and_the_device_hours_of_a_run():
    board = board_of([record(s, step_flops=100.0, train_seconds=36.0 * (s + 1)) for s in (0, 1)]
                     + [record(s, balancer="agm", step_flops=300.0) for s in (0, 1)]
                     + [record(0, balancer="agm", fusion="sum", step_flops=300.0)])  # no joint with sum
    cost = {(e.balancer.name, e.fusion.name): e.cost for e in board.entries}
    assert cost[("joint", "concat")].flops_vs_baseline == 1.0
    assert cost[("joint", "concat")].device_hours == pytest.approx(54.0 / 3600)  # mean of 36 s and 72 s
    assert cost[("agm", "concat")].flops_vs_baseline == 3.0
    assert cost[("agm", "sum")].flops_vs_baseline is None


def test_the_markdown_shows_the_balance_and_cost_columns_only_where_measured():
    board = board_of([record(0, coalitions=coalitions(TWO), step_flops=2.5e6),
                      record(0, balancer="agm", coalitions=coalitions(TWO), step_flops=7.5e6)])
    text = md.render_markdown(board)
    header = next(line for line in text.splitlines() if line.startswith("| #"))
    cells = [c.strip() for c in header.split("|")]
    row = [c.strip() for c in next(line for line in text.splitlines() if "| agm" in line).split("|")]
    value = dict(zip(cells, row))
    assert (value["fast share (%)"], value["slow share (%)"], value["imbalance"]) == ("71.4", "28.6", "0.43")
    assert (value["MFLOP/step"], value["FLOPs × joint"]) == ("7.5", "3.00")
    plain = md.render_markdown(board_of([record(0)]))
    assert "share (%)" not in plain and "FLOP" not in plain and "util." not in plain
    assert "device-h/run" in plain
