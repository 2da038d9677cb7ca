"""The views across boards: each method's mean rank and wins/ties/losses against the baseline over every published
board, and its page with its rows, parameters and departures from the official code."""

from mmbench.reporting import summary
from tests.fixtures.results import board_of, record


def seeds(balancer, accuracies, fusion="concat", notes=None):
    return [record(s, balancer=balancer, accuracy=a, fusion=fusion, notes=notes) for s, a in enumerate(accuracies)]


def boards():
    """Board a: mlb clearly above joint (a win), ogm within noise (a tie). Board b: ogm clearly below (a loss),
    mlb with sum only, where there is no joint to compare with."""
    a = board_of(seeds("joint", [0.80, 0.81, 0.82]) + seeds("mlb", [0.90, 0.91, 0.92], notes="* β_max = 2.")
                 + seeds("ogm", [0.80, 0.84, 0.82]))
    b = board_of(seeds("joint", [0.70, 0.71, 0.72]) + seeds("ogm", [0.60, 0.61, 0.62])
                 + seeds("mlb", [0.65, 0.66, 0.67], fusion="sum"))
    return {"a": a, "b": b}


def table(text):
    rows = [line for line in text.splitlines() if line.startswith("| [")]
    return {row.split("]")[0].removeprefix("| ["): [c.strip() for c in row.split("|")[2:-1]] for row in rows}


def test_mean_rank_and_wins_ties_losses_over_the_boards():
    rows = table(summary.render_summary(boards()))
    # ranks by best row: board a mlb 1, ogm 2, joint 3; board b joint 1, mlb 2, ogm 3
    assert rows["mlb"][:3] == ["1.50", "2", "1 / 0 / 0"]
    assert rows["ogm"][:3] == ["2.50", "2", "0 / 1 / 1"]
    assert rows["joint"][:3] == ["2.00", "2", "baseline"]
    assert list(rows) == ["mlb", "joint", "ogm"]  # best mean rank first
    assert "[a #1 concat](a.md)" in rows["mlb"][3] and "[b #2 sum](b.md)" in rows["mlb"][3]


def test_a_method_page_has_its_rows_parameters_and_departures(tmp_path):
    pages = summary.render_all(boards())
    assert set(pages) == {"README.md", "methods/joint.md", "methods/mlb.md", "methods/ogm.md"}
    page = pages["methods/mlb.md"]
    assert "[a #1 concat](a.md)" in page and "[b #2 sum](b.md)" in page
    assert "## Departures from the official code\n\n* β_max = 2." in page
    assert "Its docstring names none" in pages["methods/ogm.md"]


def test_the_summary_is_written_beside_the_boards_and_stale_pages_leave(tmp_path):
    for name, board in boards().items():
        (tmp_path / f"{name}.json").write_text(board.model_dump_json(by_alias=True))
    (tmp_path / "methods").mkdir()
    (tmp_path / "methods" / "gone.md").write_text("a method no board holds any more")
    written = summary.write_summary(tmp_path)
    assert (tmp_path / "README.md") in written and not (tmp_path / "methods" / "gone.md").exists()
    assert (tmp_path / "methods" / "ogm.md").read_text() == summary.render_all(boards())["methods/ogm.md"]
