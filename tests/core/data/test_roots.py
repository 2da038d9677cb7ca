"""Where prepared data is found, and how its fingerprint enters cell identities and benchmark versions."""

from pathlib import Path

import pytest
from typer.testing import CliRunner

from mmbench import registry as registry_lib
from mmbench.api import DataError, ModalitySpec, hookimpl
from mmbench.api.data import PreparedTask
from mmbench.data.prepared import Manifest, write_manifest
from mmbench.data.roots import resolve_data_root
from mmbench.running import grid as grid_lib
from mmbench.running.cells import expand


def test_resolution_order(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("MMBENCH_DATA", raising=False)
    assert resolve_data_root("cremad") == tmp_path / "cache" / "mmbench" / "data" / "cremad"
    monkeypatch.setenv("MMBENCH_DATA", str(tmp_path / "env"))
    assert resolve_data_root("cremad") == tmp_path / "env" / "cremad"
    assert resolve_data_root("cremad", grid_data_root=str(tmp_path / "grid")) == tmp_path / "grid" / "cremad"
    assert resolve_data_root("cremad", task_root=str(tmp_path / "mine"), grid_data_root="x") == tmp_path / "mine"
    assert resolve_data_root("cremad", explicit=tmp_path / "cli", task_root="mine") == tmp_path / "cli" / "cremad"


class Prepared(PreparedTask):
    name = "prepared_test"
    version = "3"
    source = "made by the test"

    @property
    def modalities(self):
        return {"a": ModalitySpec("a", "vector", (4,)), "b": ModalitySpec("b", "vector", (4,))}

    @property
    def num_classes(self):
        return 2


class Plugin:
    @hookimpl
    def mmbench_tasks(self):
        return [Prepared]


GRID = """
name: prepared
tasks: [prepared_test]
encoders: [{"*": mlp}]
fusions: [concat]
balancers: [joint]
seeds: [0]
"""


@pytest.fixture
def registry():
    return registry_lib.load(extra_plugins=[Plugin()])


def _cell(registry, data_root):
    return expand(grid_lib.parse(GRID, registry), registry, data_root)[0]


def _manifest(**changes):
    base = {"task": "prepared_test", "version": "3", "split_hashes": {"train": "aa", "test": "bb"},
            "preprocessing": {"sample_rate": 16000}}
    return Manifest(**{**base, **changes})


def test_a_missing_root_says_how_to_prepare_it(registry, tmp_path):
    with pytest.raises(DataError, match=r"not a prepared 'prepared_test' root .*mmbench data prepare prepared_test "
                                        r"--raw DIR` \(made by the test\)"):
        _cell(registry, tmp_path)


def test_the_fingerprint_enters_the_cell_id_and_the_benchmark_version(registry, tmp_path):
    write_manifest(tmp_path / "prepared_test", _manifest())
    first = _cell(registry, tmp_path)
    assert first.task.fingerprint == _manifest().fingerprint and first.data_root == str(tmp_path / "prepared_test")
    write_manifest(tmp_path / "prepared_test", _manifest(preprocessing={"sample_rate": 22050}))
    other = _cell(registry, tmp_path)
    assert other.cell_id != first.cell_id and other.benchmark_version != first.benchmark_version
    write_manifest(tmp_path / "prepared_test", _manifest(split_hashes={"train": "aa", "test": "cc"}))
    assert _cell(registry, tmp_path).cell_id not in {first.cell_id, other.cell_id}


def test_a_partial_copy_never_shares_a_fingerprint_with_the_full_one():
    full, partial = _manifest(), _manifest(partial=True)
    assert partial.fingerprint.startswith("partial-") and partial.fingerprint != full.fingerprint


def test_a_manifest_of_another_task_is_refused(registry, tmp_path):
    write_manifest(tmp_path / "prepared_test", _manifest(task="cremad"))
    with pytest.raises(DataError, match="holds prepared 'cremad' data"):
        _cell(registry, tmp_path)


def test_validate_reports_missing_data_before_anything_trains(registry, tmp_path, monkeypatch):
    from mmbench import cli

    monkeypatch.setattr(registry_lib, "default", lambda: registry)
    grid = tmp_path / "grid.yaml"
    grid.write_text(GRID)
    result = CliRunner().invoke(cli.app, ["validate", str(grid), "--data-root", str(tmp_path / "nowhere")])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "data problem" in result.output and str(Path(tmp_path / "nowhere" / "prepared_test")) in result.output
    result = CliRunner().invoke(cli.app, ["run", "--matrix", str(grid), "--data-root", str(tmp_path / "nowhere"),
                                          "--out", str(tmp_path / "run")])
    assert result.exit_code == 2 and "cannot run:" in result.output and "mmbench data prepare" in result.output
    assert not (tmp_path / "run" / "cells").exists()
