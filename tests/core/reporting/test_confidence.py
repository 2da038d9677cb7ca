"""Confidence in a ranking: paired intervals against the baseline, rank stability, and how the Markdown shows them."""

import pytest
from scipy import stats  # a dev dependency (through scikit-learn)

from mmbench.reporting import confidence
from mmbench.reporting import markdown as md
from tests.fixtures.results import board_of, record


def test_the_t_quantiles_match_an_independent_implementation():
    for df in range(1, 121):
        assert confidence.t_975(df) == pytest.approx(stats.t.ppf(0.975, df), abs=1e-4), df


def test_a_paired_interval_computed_by_hand():
    # differences 0.02, 0.01, 0.04: mean 0.023333, sd 0.0152753, half-width 4.3027 * 0.0152753 / sqrt(3) = 0.0379461
    c = confidence.paired({0: 0.90, 1: 0.92, 2: 0.91, 7: 0.5}, {0: 0.88, 1: 0.91, 2: 0.87}, "joint")
    assert c.seeds == [0, 1, 2]  # seed 7 has no baseline run: unpaired, left out
    assert c.delta == pytest.approx(0.0233333, abs=1e-6)
    assert (c.low, c.high) == (pytest.approx(-0.0146128, abs=1e-6), pytest.approx(0.0612794, abs=1e-6))
    assert c.within_noise is True


def test_a_consistent_difference_is_outside_the_noise():
    # differences 0.05, 0.06, 0.04: mean 0.05, sd 0.01, half-width 4.3027 * 0.01 / sqrt(3) = 0.0248417
    c = confidence.paired({0: 0.95, 1: 0.96, 2: 0.94}, {0: 0.90, 1: 0.90, 2: 0.90}, "joint")
    assert (c.low, c.high) == (pytest.approx(0.0251583, abs=1e-6), pytest.approx(0.0748417, abs=1e-6))
    assert c.within_noise is False


def test_one_shared_seed_gives_a_difference_without_an_interval():
    c = confidence.paired({0: 0.95}, {0: 0.90, 1: 0.9}, "joint")
    assert c.delta == pytest.approx(0.05) and (c.low, c.high, c.within_noise) == (None, None, None)
    assert confidence.paired({3: 0.95}, {0: 0.90}, "joint") is None


def test_ranks_share_the_mean_rank_on_ties():
    assert confidence.ranks([0.9, 0.8, 0.9, 0.7], lower_is_better=False) == [1.5, 3.0, 1.5, 4.0]
    assert confidence.ranks([0.1, 0.3, 0.2], lower_is_better=True) == [1.0, 3.0, 2.0]


def test_kendall_tau_b_by_hand_and_against_scipy():
    assert confidence.kendall_tau_b([1, 2, 3, 4], [1, 2, 3, 4]) == 1.0
    assert confidence.kendall_tau_b([1, 2, 3, 4], [4, 3, 2, 1]) == -1.0
    # pairs of [1,2,3] vs [1,3,2]: (1,2) concordant, (1,3) concordant, (2,3) discordant -> (2 - 1) / 3
    assert confidence.kendall_tau_b([1, 2, 3], [1, 3, 2]) == pytest.approx(1 / 3)
    assert confidence.kendall_tau_b([1, 1, 1], [1, 2, 3]) is None
    a, b = [1.5, 1.5, 3, 4, 5], [2, 1, 3.5, 3.5, 5]
    assert confidence.kendall_tau_b(a, b) == pytest.approx(stats.kendalltau(a, b).statistic)


def three_seeds(balancer, scores, fusion="concat"):
    return [record(seed, balancer, accuracy=a, fusion=fusion) for seed, a in enumerate(scores)]


def test_every_method_is_compared_with_the_baseline_of_its_own_fusion():
    board = board_of(three_seeds("joint", [0.80, 0.82, 0.81]) + three_seeds("joint", [0.70, 0.70, 0.70], "sum")
                     + three_seeds("ogm", [0.85, 0.86, 0.84], "sum") + three_seeds("unimodal", [0.9, 0.9, 0.9]))
    by_name = {(e.balancer.name, e.fusion.name): e for e in board.entries}
    ogm = by_name[("ogm", "sum")].vs_baseline
    assert ogm.delta == pytest.approx(0.15) and ogm.seeds == [0, 1, 2] and ogm.within_noise is False
    assert by_name[("joint", "concat")].vs_baseline is None


def test_rank_stability_ranks_each_seed_alone():
    board = board_of(three_seeds("joint", [0.80, 0.80, 0.80]) + three_seeds("a", [0.90, 0.70, 0.85])
                     + three_seeds("b", [0.85, 0.75, 0.90]))
    stability = board.rank_stability
    ranks = {e.balancer.name: stability.ranks[e.id] for e in board.entries}
    assert ranks == {"joint": [3.0, 1.0, 3.0], "a": [1.0, 3.0, 2.0], "b": [2.0, 2.0, 1.0]}
    # taus of the seed pairs (0,1): -1, (0,2): 1/3, (1,2): -1/3 -> mean -1/3
    assert stability.seeds == [0, 1, 2] and stability.kendall_tau == pytest.approx(-1 / 3)


def test_references_and_unfinished_entries_are_not_ranked_over_seeds():
    board = board_of(three_seeds("joint", [0.8, 0.8, 0.8]) + three_seeds("a", [0.9, 0.7, 0.85])
                     + [record(s, "broken", status="failed", reason="x") for s in range(3)])
    assert set(board.rank_stability.ranks) == {e.id for e in board.entries if e.balancer.name in ("joint", "a")}
    single = board_of([record(0), record(0, "a", accuracy=0.9)])
    assert single.rank_stability is None


def test_the_markdown_marks_a_gain_within_noise_and_explains_it():
    board = board_of(three_seeds("joint", [0.80, 0.82, 0.81]) + three_seeds("noisy", [0.83, 0.80, 0.82])
                     + three_seeds("clear", [0.90, 0.91, 0.92]))
    text = md.render_markdown(board)
    ranking = text.split("## Confidence")[0].splitlines()
    header = next(row.split("|") for row in ranking if row.startswith("| #"))
    gain = next(i for i, name in enumerate(header) if name.strip().startswith("gain vs"))
    table = {row.split("|")[2].strip(): row.split("|") for row in ranking
             if row.startswith("| ") and row.split("|")[1].strip().isdigit()}
    assert table["noisy"][gain].strip() == "+0.67 ≈"
    assert table["clear"][gain].strip() == "+10.00"
    section = text.split("## Confidence")[1]
    rows = {row.split("|")[1].strip(): [c.strip() for c in row.split("|")[4:-1]] for row in section.splitlines()
            if row.startswith("| ") and not row.startswith("| balancer")}
    # clear: differences 0.10, 0.09, 0.11 -> sd 0.01 -> half-width 2.48 points
    assert rows["clear"] == ["+10.00", "[+7.52, +12.48]", "3", "better", "1, 1, 1"]
    assert rows["noisy"][3] == "within noise" and rows["joint"][0] == "baseline"
    assert "mean Kendall τ-b of" in section


def test_with_one_seed_the_markdown_gives_the_difference_without_an_interval():
    text = md.render_markdown(board_of([record(0), record(0, "a", accuracy=0.9)]))
    section = text.split("## Confidence")[1]
    assert "| +10.00 " in section and "one seed: no interval" in section and "Rank stability" not in section
