"""Figures next to a leaderboard: they decode, carry drawn content, and the Markdown links them."""

from PIL import Image
from typer.testing import CliRunner

from mmbench.cli import app
from tests.conftest import TINY_GRID

GRID = TINY_GRID.replace("balancers: [joint]", "balancers: [joint, ogm]").replace("fusions: [concat, sum]",
                                                                                  "fusions: [concat]")


def _drawn(path) -> int:
    """How many distinct colours the image uses (a blank figure has one or two)."""
    with Image.open(path) as image:
        assert image.format == "PNG" and image.width > 300 and image.height > 150
        return len(image.convert("RGB").getcolors(maxcolors=1 << 20))


def test_run_writes_curves_coefficients_and_the_modality_chart_and_links_them(tmp_path):
    grid = tmp_path / "grid.yaml"
    grid.write_text(GRID)
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["run", "--matrix", str(grid), "--out", str(out)])
    assert result.exit_code == 0, result.output
    folder = out / "leaderboard-plots"
    curves = sorted(folder.glob("*-curves.png"))
    coefficients = sorted(folder.glob("*-coefficients.png"))
    assert len(curves) == 2 and len(coefficients) == 1  # joint reports no coefficients, ogm does
    for path in [*curves, *coefficients, folder / "modalities.png"]:
        assert _drawn(path) > 20, path
    markdown = (out / "leaderboard.md").read_text()
    assert "![each modality alone and together](leaderboard-plots/modalities.png)" in markdown
    assert f"[coefficients](leaderboard-plots/{coefficients[0].name})" in markdown
    assert all(f"[curves](leaderboard-plots/{p.name})" in markdown for p in curves)
