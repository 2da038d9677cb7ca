"""`mmbench new task NAME`: a new dataset distribution, the rendering of `task_template/` for NAME.

The generated task reads a small raw layout (a CSV of ids, splits and labels, a WAV and a PNG per sample) into
a prepared root through `PreparedTask`; it installs, registers through the `mmbench` entry point, passes
`mmbench.testing.check_task` from its own tests (which write a tiny copy of the release), and comes with a grid.
An author replaces the layout, the processing and the classes with the dataset's. `plugins/template_task/` is
this rendering for the name `example_task`.
"""

from __future__ import annotations

from pathlib import Path
from string import Template

from mmbench.scaffold.names import distribution

TEMPLATE = Path(__file__).parent / "task_template"
#: template file -> the file it becomes (formatted with the names)
FILES = {"pyproject.toml.tmpl": "pyproject.toml", "README.md.tmpl": "README.md", "grid.yaml.tmpl": "grid.yaml",
         "package/__init__.py.tmpl": "{package}/__init__.py", "package/module.py.tmpl": "{package}/{name}.py",
         "tests/test_module.py.tmpl": "tests/test_{name}.py"}


def new_task(name: str, folder: Path) -> Path:
    """Write the distribution `mmbench-<name>` into `folder`; refuses an existing one."""
    root, values = distribution(name, "task", folder, suffix="Task")
    for template, target in FILES.items():
        path = root / target.format(**values)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(Template((TEMPLATE / template).read_text()).substitute(values))
    return root
