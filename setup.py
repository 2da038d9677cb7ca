"""The packages of the distribution, found rather than listed (pyproject.toml holds everything else): the core's
`mmbench.*` and the built-in plugins, which live in `plugins/` and install as `mmbench_plugins`, so a dataset's
folder under `plugins/tasks/` ships (code, `lists/`, `README.md`) without being named anywhere."""

from setuptools import find_packages, setup

setup(packages=find_packages(include=["mmbench", "mmbench.*"])
      + ["mmbench_plugins", *(f"mmbench_plugins.{name}" for name in find_packages("plugins"))])
