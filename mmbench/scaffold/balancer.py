"""`mmbench new balancer NAME`: a new balancer distribution in the layout of `plugins/template/`.

The generated balancer trains (joint training that reports its loss as a coefficient), installs, registers
through the `mmbench` entry point and passes `mmbench.testing.check_balancer` from its own tests, so an author
starts from something that works and replaces `loss` (or another hook) with the method.
"""

from __future__ import annotations

from pathlib import Path

from mmbench.scaffold.names import distribution

PYPROJECT = '''[build-system]
requires = ["setuptools>=77"]
build-backend = "setuptools.build_meta"

[project]
name = "{dist}"
version = "0.1.0"
description = "The {name} balancer for mmbench"
requires-python = ">=3.11"
# the mmbench releases this plugin was written and tested against
dependencies = ["{requirement}"]

[project.optional-dependencies]
dev = ["pytest>=8"]

# The door every plugin uses: an entry point in the group `mmbench` naming a module with hook implementations.
[project.entry-points.mmbench]
{name} = "{package}.{name}"

[tool.setuptools]
packages = ["{package}"]
'''

MODULE = '''"""`{name}`: <one line: what the method does> (<authors>, <venue year>).

<Where it acts in the training step (loss, after backward, optimizer step, epoch end), its formulas and its
defaults, and where it differs from the official code and why.>
"""

from __future__ import annotations

from pydantic import Field

from mmbench.api import Balancer, EpochMeans, Params, Requirements, hookimpl


class {cls}Params(Params):
    weight: float = Field(1.0, gt=0.0, description="scale of the training loss (replace with the method's own)")


class {cls}(Balancer):
    """<One line shown by `mmbench list balancers`.>"""

    name = "{name}"
    Params = {cls}Params
    requires = Requirements()  # declare what the method needs, e.g. unimodal_heads=True
    task_defaults: dict = {{}}  # per-task defaults from the paper, keyed by task name

    def setup(self, ctx) -> None:
        self.stats = EpochMeans()

    def loss(self, ctx, batch, out):
        loss = self.params.weight * ctx.task_loss(out.logits, batch.label)
        self.stats.add("loss", loss)  # kept on the device: no host sync per step
        return loss

    def coefficients(self) -> dict[str, float]:
        return self.stats.read()


@hookimpl
def mmbench_balancers():
    return [{cls}]
'''

TEST = '''"""The contract every mmbench balancer keeps, and the method's own arithmetic pinned to hand-computed
numbers."""

import pytest
import torch

from mmbench.testing import check_balancer, tiny_components, tiny_context
from {package}.{name} import {cls}


def test_contract():
    check_balancer({cls})


def test_the_loss_is_the_weighted_task_loss():
    balancer, ctx, batch = tiny_context(tiny_components({cls}, balancer_params={{"weight": 2.0}}))
    out = ctx.model(batch.inputs)
    expected = 2.0 * torch.nn.functional.cross_entropy(out.logits, batch.label)
    assert balancer.loss(ctx, batch, out).item() == pytest.approx(expected.item())
'''

README = '''# {dist}

The `{name}` balancer for [mmbench](https://github.com/mmbench/mmbench).

```bash
pip install -e ".[dev]" && python -m pytest -q    # install next to mmbench, run the plugin's tests
mmbench plugins                                   # lists {name} with this distribution and version
```
'''


def new_balancer(name: str, folder: Path) -> Path:
    """Write the distribution `mmbench-<name>` into `folder`; refuses an existing one."""
    root, values = distribution(name, "balancer", folder)
    package = values["package"]
    files = {"pyproject.toml": PYPROJECT, "README.md": README, f"{package}/__init__.py": "",
             f"{package}/{name}.py": MODULE, f"tests/test_{name}.py": TEST}
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text.format(**values))
    return root
