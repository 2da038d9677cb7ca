"""Malformed grids through the real command line: exit 2 before anything trains, the YAML path and the problem
named, never a traceback."""

import pytest
from typer.testing import CliRunner

from mmbench.cli import app
from tests.conftest import TINY_GRID

SWEEP = TINY_GRID.replace("balancers: [joint]", "balancers: [{name: mslr, params: {init_scale: {audio: 0.9}}}]")

#: (case, grid text or bytes, where the problem is, what the message must say)
CORPUS = [
    ("modality in balancer params", SWEEP, "balancers[0].params", "init_scale names 'audio'"),
    ("modality in MIE params", TINY_GRID.replace("balancers: [joint]",
                                                 "balancers: [{name: mie, params: {rho_per_modality: {video: 1}}}]"),
     "balancers[0].params", "rho_per_modality names 'video'"),
    ("infinite learning rate", TINY_GRID.replace("lr: 0.05", "lr: .inf"), "train.optimizer.lr", "finite number"),
    ("infinite task parameter", TINY_GRID.replace("train_size: 128", "train_size: 128, augment_noise: .inf"),
     "tasks[0].params.augment_noise", "finite number"),
    ("NaN balancer parameter", TINY_GRID.replace("balancers: [joint]",
                                                 "balancers: [{name: pm_mo, params: {prior_loc: .nan}}]"),
     "balancers[0].params.prior_loc", "finite number"),
    ("device cuda:x", TINY_GRID.replace("device: cpu", "device: cuda:x"), "train.device", "unknown device 'cuda:x'"),
    ("device gpu", TINY_GRID.replace("device: cpu", "device: gpu"), "train.device", "unknown device 'gpu'"),
    ("device cuda:-1", TINY_GRID.replace("device: cpu", "device: cuda:-1"), "train.device", "unknown device"),
    ("huge seed", TINY_GRID.replace("seeds: [0, 1]", "seeds: [0, 18446744073709551616]"), "seeds[1]",
     "less than 4294967296"),
    ("negative seed", TINY_GRID.replace("seeds: [0, 1]", "seeds: [-1]"), "seeds[0]", "greater than or equal to 0"),
    ("duplicate key", TINY_GRID + "name: again\n", "<root>", "duplicate key 'name' (first on line 1)"),
    ("deep nesting", "name: x\ntasks: " + "[" * 3000 + "]" * 3000 + "\n", "<root>", "nests too deeply"),
    ("non-UTF-8 byte", TINY_GRID.encode().replace(b"name: tiny", b"name: t\xe9ny"), "<root>", "not UTF-8"),
    ("empty file", "", "<root>", "the grid file is empty"),
    ("only a comment", "# nothing here\n", "<root>", "the grid file is empty"),
    ("tab indentation", TINY_GRID.replace("  epochs: 2", "\tepochs: 2"), "<root>", "a tab character"),
    ("two documents", TINY_GRID + "---\nname: second\n", "<root>", "one YAML document"),
    ("decimal comma", TINY_GRID.replace("lr: 0.05", "lr: 0,05"), "<root>", "decimal comma"),
    ("unknown baseline", TINY_GRID + "baseline: jiont\n", "baseline", "did you mean 'joint'?"),
    ("list instead of a grid", "- a\n- b\n", "<root>", "a grid is a YAML mapping"),
    ("paper numbers for a balancer not in the grid", TINY_GRID + "published: {source: paper, results: {ogm: "
     "{accuracy: 0.6}}}\n", "published.results.ogm", "names no balancer of the grid"),
    ("paper numbers for an unknown metric", TINY_GRID + "published: {source: paper, results: {joint: "
     "{auc: 0.6}}}\n", "published.results.joint.auc", "reports no metric 'auc'"),
]


@pytest.mark.parametrize("text, path, message", [c[1:] for c in CORPUS], ids=[c[0] for c in CORPUS])
def test_malformed_grid_is_refused_with_its_path_and_problem(tmp_path, text, path, message):
    grid = tmp_path / "grid.yaml"
    grid.write_bytes(text if isinstance(text, bytes) else text.encode())
    for args in (["validate", str(grid)], ["run", "--matrix", str(grid), "--out", str(tmp_path / "run")]):
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 2, result.output
        assert "Traceback" not in result.output and isinstance(result.exception, SystemExit)
        problems = [line for line in result.output.splitlines() if line.startswith("  - ")]
        assert any(line.startswith(f"  - {path}") and message in line for line in problems), result.output
    assert not (tmp_path / "run").exists()
