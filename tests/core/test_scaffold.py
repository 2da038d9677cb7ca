"""`mmbench new balancer` and `--plugins-dir`: a new method runs and passes its own tests before it is packaged."""

import os
import subprocess
import sys

from typer.testing import CliRunner

from mmbench import registry as registry_lib
from mmbench.cli import app
from mmbench.scaffold import requirement
from mmbench.testing import check_balancer
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
