"""`mmbench new balancer`, `mmbench new task` and `--plugins-dir`: a new method or dataset runs and passes its own
tests before it is packaged."""

import os
import subprocess
import sys

from typer.testing import CliRunner

from mmbench import registry as registry_lib
from mmbench.cli import app
from mmbench.scaffold import new_task, requirement
from mmbench.testing import check_balancer
from tests import ROOT
from tests.conftest import TINY_GRID


def test_the_scaffold_registers_from_a_folder_and_passes_its_own_tests(tmp_path):
    created = CliRunner().invoke(app, ["new", "balancer", "my_method", "--dir", str(tmp_path)])
    assert created.exit_code == 0, created.output
    root = tmp_path / "mmbench-my-method"
    assert f'dependencies = ["{requirement()}"]' in (root / "pyproject.toml").read_text()
    assert 'my_method = "mmbench_my_method.my_method"' in (root / "pyproject.toml").read_text()
    registry = registry_lib.load(plugin_dirs=[root / "mmbench_my_method"])
    component = registry.get("balancers", "my_method")
    assert component.distribution == f"{root / 'mmbench_my_method'} (not installed)"
    check_balancer(component.cls, registry=registry)
    tests = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(root / "tests")],
                           capture_output=True, text=True, timeout=300, cwd=root,
                           env={**os.environ, "PYTHONPATH": str(root)})
    assert tests.returncode == 0 and "2 passed" in tests.stdout, tests.stdout + tests.stderr
    again = CliRunner().invoke(app, ["new", "balancer", "my_method", "--dir", str(tmp_path)])
    assert again.exit_code == 2 and "already exists" in again.output


def test_run_with_plugins_dir_trains_an_uninstalled_balancer(tmp_path, monkeypatch):
    CliRunner().invoke(app, ["new", "balancer", "my_method", "--dir", str(tmp_path)])
    grid = tmp_path / "grid.yaml"
    grid.write_text(TINY_GRID.replace("balancers: [joint]", "balancers: [joint, {name: my_method, params: "
                                      "{weight: 0.5}}]").replace("seeds: [0, 1]", "seeds: [0]"))
    folder = tmp_path / "mmbench-my-method" / "mmbench_my_method"
    monkeypatch.setenv(registry_lib.PLUGINS_DIR_VARIABLE, "")
    result = CliRunner().invoke(app, ["run", "--matrix", str(grid), "--out", str(tmp_path / "run"),
                                      "--plugins-dir", str(folder), "--no-plots"])
    assert result.exit_code == 0, result.output
    assert "my_method (weight=0.5)" in result.output


def test_a_name_that_is_not_an_identifier_is_refused(tmp_path):
    result = CliRunner().invoke(app, ["new", "balancer", "My-Method", "--dir", str(tmp_path)])
    assert result.exit_code == 2 and "lower-case letters" in result.output


def test_a_new_task_registers_from_a_folder_passes_its_own_tests_and_its_grid_validates(tmp_path):
    created = CliRunner().invoke(app, ["new", "task", "my_dataset", "--dir", str(tmp_path)])
    assert created.exit_code == 0, created.output
    root = tmp_path / "mmbench-my-dataset"
    pyproject = (root / "pyproject.toml").read_text()
    assert f'dependencies = ["{requirement()}"]' in pyproject
    assert 'my_dataset = "mmbench_my_dataset.my_dataset"' in pyproject
    registry = registry_lib.load(plugin_dirs=[root / "mmbench_my_dataset"])
    component = registry.get("tasks", "my_dataset")
    assert component.cls.__name__ == "MyDatasetTask" and component.cls.needs_data
    tests = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(root / "tests")],
                           capture_output=True, text=True, timeout=600, cwd=root,
                           env={**os.environ, "PYTHONPATH": str(root)})
    assert tests.returncode == 0 and "3 passed" in tests.stdout, tests.stdout + tests.stderr
    grid = CliRunner().invoke(app, ["validate", str(root / "grid.yaml"), "--fake-data", "--plugins-dir",
                                    str(root / "mmbench_my_dataset")])
    assert grid.exit_code == 0, grid.output
    again = CliRunner().invoke(app, ["new", "task", "my_dataset", "--dir", str(tmp_path)])
    assert again.exit_code == 2 and "already exists" in again.output
    bad = CliRunner().invoke(app, ["new", "task", "My-Dataset", "--dir", str(tmp_path)])
    assert bad.exit_code == 2 and "lower-case letters" in bad.output


def test_the_task_template_is_what_mmbench_new_task_writes(tmp_path):
    """`plugins/template_task/` is the scaffold's rendering for `example_task`, file for file."""
    made = new_task("example_task", tmp_path)
    template = ROOT / "plugins" / "template_task"

    def files(folder):
        return {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()
                and not {"build", "__pycache__"} & set(p.relative_to(folder).parts)
                and not any(part.endswith(".egg-info") for part in p.relative_to(folder).parts)}

    assert files(made) == files(template)
