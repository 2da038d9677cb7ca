"""`mmbench new`: a new plugin distribution that installs, registers and passes its own tests.

`new_balancer(name, folder)` writes a balancer distribution in the layout of `plugins/template/`;
`new_task(name, folder)` writes a dataset distribution, the rendering of `task_template/` (which
`plugins/template_task/` shows for the name `example_task`).
"""

from mmbench.scaffold.balancer import new_balancer
from mmbench.scaffold.names import requirement
from mmbench.scaffold.task import new_task

__all__ = ["new_balancer", "new_task", "requirement"]
