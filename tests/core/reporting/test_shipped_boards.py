"""The published boards are exactly what their cell files make: each shipped `<board>.json` and `<board>.md`
re-rendered from `<board>.cells.jsonl` (linking the shipped figures) gives the same bytes."""

import json

import pytest

from mmbench.reporting.leaderboard import aggregate
from mmbench.reporting.markdown import render_markdown
from mmbench.reporting.publish import _read_cells
from tests import ROOT

BOARDS = sorted(p.name.removesuffix(".cells.jsonl") for p in (ROOT / "leaderboards").glob("*.cells.jsonl"))


def shipped_figures(board: str) -> dict[str, dict[str, str]]:
    """Entry id (the board's own figure under "") -> figure kind -> the figure's path beside the board."""
    links: dict[str, dict[str, str]] = {}
    for path in sorted((ROOT / "leaderboards" / f"{board}-plots").glob("*.png")):
        entry, _, kind = path.stem.rpartition("-")
        key, kind = (entry, kind) if entry else ("", path.stem)
        links.setdefault(key, {})[kind] = path.relative_to(ROOT / "leaderboards").as_posix()
    return links


def test_there_are_shipped_boards():
    assert {"synthetic", "synthetic-tuned"} <= set(BOARDS)


@pytest.mark.parametrize("board", BOARDS)
def test_a_shipped_board_re_renders_to_the_same_bytes(board):
    [rebuilt] = aggregate(list(_read_cells(ROOT / "leaderboards" / f"{board}.cells.jsonl").values()))
    shipped = ROOT / "leaderboards" / board
    assert json.dumps(rebuilt.to_json(), indent=2, sort_keys=True, allow_nan=False) + "\n" == \
        shipped.with_suffix(".json").read_text()
    assert render_markdown(rebuilt, shipped_figures(board)) == shipped.with_suffix(".md").read_text()
