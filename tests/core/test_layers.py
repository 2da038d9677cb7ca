"""The house's two rules: every plugin imports the core through `mmbench.api` only (the door), and each layer of
the core imports only the layers below it (the floors, as `[tool.importlinter]` in pyproject.toml lists them)."""

import ast
from pathlib import Path

from importlinter.cli import lint_imports

from mmbench.scaffold import new_balancer, new_task
from tests import ROOT

#: what a plugin's own code may import of mmbench; its tests may also use the test kit
DOOR = {"mmbench", "mmbench.api", "mmbench.api.data", "mmbench.api.running"}
TEST_KIT = {"mmbench.testing"}


def core_imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every import of an `mmbench` module in a file, wherever it sits in the file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] if node.module != "mmbench" else [f"mmbench.{a.name}" for a in node.names]
            found += [(node.lineno, n) for n in names if n.split(".")[0] == "mmbench"]
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "mmbench"]
    return found


def inner_imports(folder: Path) -> list[str]:
    """`file:line module` for each import of the core's inner modules under `folder`."""
    bad = []
    for path in sorted(folder.rglob("*.py")):
        if "build" in path.relative_to(folder).parts:
            continue
        allowed = DOOR | (TEST_KIT if "tests" in path.relative_to(folder).parts else set())
        allowed |= {"mmbench.__version__"}
        bad += [f"{path.relative_to(folder)}:{line} {module}" for line, module in core_imports(path)
                if module not in allowed]
    return bad


def test_the_floors_and_the_door_hold():
    assert lint_imports(config_filename=str(ROOT / "pyproject.toml"), no_cache=True, no_logo=True) == 0


def test_no_built_in_plugin_imports_an_inner_module():
    assert inner_imports(ROOT / "plugins") == []


def test_the_templates_and_a_new_distribution_use_the_door_only(tmp_path):
    assert inner_imports(ROOT / "plugins" / "template") == []
    assert inner_imports(ROOT / "plugins" / "template_task") == []
    assert inner_imports(new_balancer("door_check", tmp_path)) == []
    assert inner_imports(new_task("door_check", tmp_path / "task")) == []


def test_the_door_check_sees_an_inner_import(tmp_path):
    (tmp_path / "plugin.py").write_text("from mmbench.api import Balancer\nfrom mmbench.data.media import read_audio\n")
    assert inner_imports(tmp_path) == ["plugin.py:2 mmbench.data.media"]
