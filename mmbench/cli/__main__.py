"""`python -m mmbench.cli ...`, as the `mmbench` command."""

from mmbench.cli import app

app(prog_name="mmbench")
