"""The core and the built-in plugins are lint-clean (ruff) and type-check (mypy), with pyproject.toml's settings.

mypy reads `plugins/` as the package it installs as, `mmbench_plugins`, through a folder of links made here."""

import subprocess
import sys

from tests import ROOT


def test_ruff_finds_nothing():
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "mmbench", "plugins"], cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_finds_nothing(tmp_path):
    (tmp_path / "mmbench").symlink_to(ROOT / "mmbench")
    (tmp_path / "mmbench_plugins").symlink_to(ROOT / "plugins")
    result = subprocess.run([sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml"),
                             "--cache-dir", str(tmp_path / ".mypy_cache"), "-p", "mmbench", "-p", "mmbench_plugins"],
                            cwd=tmp_path, env={"MYPYPATH": str(tmp_path), "PATH": ""}, capture_output=True, text=True,
                            timeout=900)
    assert result.returncode == 0, result.stdout[-20000:] + result.stderr
