"""README opens with the two commands, and CI runs exactly the README's test command."""

import re

from tests import ROOT


def readme_commands():
    return re.findall(r"```bash\n(.+?)\n```", (ROOT / "README.md").read_text())


def test_readme_opens_with_run_and_test_commands():
    first, second = readme_commands()[:2]
    assert first.endswith("mmbench run --matrix grids/quickstart.yaml") and "pip install -e ." in first
    assert "pytest" in second


def test_ci_runs_the_readme_test_command_verbatim():
    ci = (ROOT / ".ci" / "run").read_text()
    assert f"TEST_COMMAND='{readme_commands()[1]}'" in ci


def test_quickstart_grid_is_valid(registry):
    from mmbench.running import grid

    parsed = grid.load(ROOT / "grids" / "quickstart.yaml", registry)
    assert [f.name for f in parsed.fusions] == ["concat", "sum"] and len(parsed.seeds) == 3


def test_readme_layout_maps_one_to_one_onto_the_folders():
    text = (ROOT / "README.md").read_text()
    layout = text[text.index("## Layout"):].split("```")[1]
    listed = set(re.findall(r"([\w.]+/)", layout))
    folders = {p.name + "/" for base in ("mmbench", "plugins") for p in (ROOT / base).iterdir()
               if p.is_dir() and not p.name.startswith(("_", ".")) and p.name not in ("build",)}
    top = {p.name + "/" for p in ROOT.iterdir() if p.is_dir() and not p.name.startswith(".")
           and p.name not in ("runs", "build", "mutants", "site") and not p.name.endswith(".egg-info")}
    assert folders | top <= listed, (folders | top) - listed
    assert listed <= folders | top, listed - (folders | top)


def test_the_docs_site_builds_in_strict_mode(tmp_path):
    """The plugin authors' guide and the API reference generated from the docstrings build without a broken
    reference (`mkdocs build --strict`)."""
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    reference = (tmp_path / "api" / "index.html").read_text()
    assert "check" in reference and "EpochMeans" in reference and "absent_input" in reference
    assert "check_balancer" in (tmp_path / "testing" / "index.html").read_text()


def test_the_datasets_guide_lists_every_modality_kind_and_the_encoders_that_read_it(registry):
    """docs/datasets.md's table of kinds is MODALITY_KINDS, and each row's encoders are the installed built-ins
    whose `accepts` names the kind."""
    from mmbench.contract.task import MODALITY_KINDS

    text = (ROOT / "docs" / "datasets.md").read_text()
    rows = re.findall(r"^\| `(\w+)` \| (.+?) \| (.+?) \|$", text, flags=re.MULTILINE)
    assert {kind: described for kind, described, _ in rows} == MODALITY_KINDS
    built_in = [n for n in registry.names("encoders")
                if registry.get("encoders", n).cls.__module__.startswith("mmbench_plugins.")]
    for kind, _, encoders in rows:
        readers = [n for n in built_in if kind in (registry.get("encoders", n).cls.accepts or ())]
        assert re.findall(r"`(\w+)`", encoders) == readers, kind
