"""The plugin registry: pluggy over the `mmbench` entry-point group, with lookup by name.

Each entry point is loaded on its own so that a plugin that fails to import is reported by name while the
others keep working. A component name offered by two plugins is a clash: the built-in one (or, between
third parties, the first by distribution name) is kept and the clash is reported.
"""

from __future__ import annotations

import difflib
import importlib.metadata
import importlib.util
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cache, lru_cache
from pathlib import Path
from types import ModuleType
from typing import Any

import pluggy

from mmbench.contract import hooks as hookspecs
from mmbench.contract.errors import DataError, Incompatible

KINDS = ("encoders", "fusions", "balancers", "tasks", "executors")
BUILTIN_DISTRIBUTION = "mmbench"


@dataclass(frozen=True)
class Component:
    kind: str
    name: str
    cls: type[Any]  # the class a plugin offers: its kind's contract class (Balancer, Encoder, ...)
    plugin: str
    distribution: str
    version: str


@dataclass(frozen=True)
class Resolved:
    """A component class with its validated parameters."""

    component: Component
    params: Any

    @property
    def cls(self) -> type[Any]:
        return self.component.cls

    def spec(self) -> dict[str, Any]:
        """Name, full parameters (defaults filled in) and those set away from the defaults, as cells record them."""
        return {"name": self.component.name, "params": self.params.model_dump(mode="json"),
                "overrides": self.params.model_dump(mode="json", include=self.params.model_fields_set)}


@dataclass
class PluginProblem:
    plugin: str
    message: str
    distribution: str | None = None

    def __str__(self) -> str:
        source = f" ({self.distribution})" if self.distribution else ""
        return f"plugin {self.plugin!r}{source}: {self.message}"


class UnknownComponent(LookupError):
    def __init__(self, kind: str, name: str, known: Iterable[str]) -> None:
        self.kind, self.name = kind, name
        self.suggestions = difflib.get_close_matches(name, sorted(known), n=3, cutoff=0.5)
        hint = f"; did you mean {' or '.join(repr(s) for s in self.suggestions)}?" if self.suggestions else ""
        super().__init__(f"unknown {kind[:-1]} {name!r}{hint} (known: {', '.join(sorted(known)) or 'none'})")


class PluginError(Exception):
    """A plugin's own code raised an exception the contract does not define (most often a bug in the plugin):
    one line naming the component, where it comes from and the exception; the exception is its `__cause__`."""

    def __init__(self, component: Component, call: str, error: Exception) -> None:
        self.component, self.call, self.error = component, call, error
        source = ", ".join(filter(None, [f"plugin {component.plugin!r}",
                                         f"{component.distribution} {component.version}".strip()]))
        super().__init__(f"{component.kind[:-1]} {component.name!r} ({source}) raised {type(error).__name__} "
                         f"{call}: {error}")


@contextmanager
def plugin_code(component: Component, call: str, expected: tuple[type[Exception], ...] = ()) -> Iterator[None]:
    """Run some of `component`'s own code (`call` says which, e.g. "in check()"). The errors a component raises
    by contract (`DataError`, `Incompatible`, and `expected`) pass as they are; any other exception becomes a
    `PluginError`, so that the command line names the plugin instead of showing a traceback."""
    passing: tuple[type[Exception], ...] = (DataError, Incompatible, *expected)
    try:
        yield
    except passing:
        raise
    except Exception as exc:
        raise PluginError(component, call, exc) from exc


@dataclass
class Registry:
    components: dict[str, dict[str, Component]] = field(default_factory=lambda: {k: {} for k in KINDS})
    problems: list[PluginProblem] = field(default_factory=list)
    manager: pluggy.PluginManager = field(default_factory=lambda: _new_manager())

    @property
    def hook(self) -> Any:
        return self.manager.hook

    def get(self, kind: str, name: str) -> Component:
        table = self.components[kind]
        if name not in table:
            raise UnknownComponent(kind, name, table)
        return table[name]

    def resolve(self, kind: str, name: str, params: Mapping[str, Any] | None = None) -> Resolved:
        """The one place a name and raw parameters become a class and a validated parameter model.

        Raises `UnknownComponent`, or pydantic's `ValidationError` for bad parameters.
        """
        component = self.get(kind, name)
        return Resolved(component, component.cls.Params.model_validate(dict(params or {})))

    def names(self, kind: str) -> list[str]:
        return sorted(self.components[kind])

    def unknown_task_defaults(self) -> dict[str, list[str]]:
        """Balancer -> the task names its `task_defaults` key that no installed plugin provides. Such a default
        is never applied; a key that is not a planned task's name is a typo that silently drops it."""
        tasks = set(self.components["tasks"])
        found = {name: sorted(set(getattr(c.cls, "task_defaults", {})) - tasks)
                 for name, c in self.components["balancers"].items()}
        return {name: keys for name, keys in sorted(found.items()) if keys}

    def notify(self, hook: str, **kwargs: Any) -> list[PluginProblem]:
        """Call every observer implementation of `hook`; one that raises is reported (once per plugin and hook)
        and never stops the run. Returns the problems that are new."""
        new = []
        for impl in getattr(self.hook, hook).get_hookimpls():
            try:
                impl.function(**{name: kwargs[name] for name in impl.argnames})
            except Exception as exc:  # noqa: BLE001 -- an observer never stops a run: reported instead
                problem = PluginProblem(impl.plugin_name, f"observer {hook} raised {exc!r}")
                if problem not in self.problems:
                    self.problems.append(problem)
                    new.append(problem)
        return new



def _new_manager() -> pluggy.PluginManager:
    manager = pluggy.PluginManager(hookspecs.PROJECT)
    manager.add_hookspecs(hookspecs)
    return manager


def _defect(kind: str, cls: object) -> str | None:
    """Why `cls` cannot be registered as a component of `kind` (None when it can)."""
    from pydantic import BaseModel

    label = getattr(cls, "__qualname__", repr(cls))
    if not isinstance(cls, type):
        return f"{cls!r}, which is not a class"
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", name):
        return f"class {label} without a valid `name` (an identifier, got {name!r})"
    params = getattr(cls, "Params", None)
    if not (isinstance(params, type) and issubclass(params, BaseModel)):
        return f"class {label} ({name!r}) whose `Params` is not a pydantic model"
    return None


def _collect(registry: Registry, dists: dict[str, tuple[str, str]]) -> None:
    manager = registry.manager
    for kind in KINDS:
        hook = getattr(manager.hook, f"mmbench_{kind}")
        offers: list[Component] = []
        for impl in hook.get_hookimpls():
            plugin_name = impl.plugin_name
            dist, version = dists.get(plugin_name, ("(in-process)", ""))
            try:
                classes = list(impl.function() or [])
            except Exception as exc:  # noqa: BLE001 -- a broken plugin must not take the others down
                registry.problems.append(PluginProblem(plugin_name, f"{kind} hook failed: {exc!r}", dist))
                continue
            for cls in classes:
                defect = _defect(kind, cls)
                if defect:
                    registry.problems.append(PluginProblem(plugin_name, f"{kind} hook offers {defect}", dist))
                else:
                    offers.append(Component(kind, cls.name, cls, plugin_name, dist, version))
        # built-ins first, then third parties by distribution name, so clashes resolve deterministically
        offers.sort(key=lambda c: (c.distribution != BUILTIN_DISTRIBUTION, c.distribution, c.plugin))
        table = registry.components[kind]
        for comp in offers:
            if comp.name in table:
                kept = table[comp.name]
                registry.problems.append(PluginProblem(
                    comp.plugin, f"{kind[:-1]} name {comp.name!r} clashes with plugin {kept.plugin!r} "
                    f"({kept.distribution}); keeping {kept.plugin!r}"))
                continue
            table[comp.name] = comp


#: folders of plugin modules to load besides the installed ones (`mmbench run --plugins-dir`), os.pathsep-separated;
#: an environment variable so that worker processes load them too
PLUGINS_DIR_VARIABLE = "MMBENCH_PLUGINS_DIR"


def _load_folder(registry: Registry, folder: Path) -> dict[str, tuple[str, str]]:
    """Register every `*.py` module of `folder` as a plugin named after its file; a module that fails to import
    is reported like a broken installed plugin."""
    found: dict[str, tuple[str, str]] = {}
    if not folder.is_dir():
        registry.problems.append(PluginProblem(str(folder), "plugins folder not found", None))
        return found
    for path in sorted(folder.glob("*.py")):
        name = path.stem
        try:
            spec = importlib.util.spec_from_file_location(f"mmbench_local_plugins.{name}", path)
            if spec is None or spec.loader is None:
                raise ImportError(f"{path} is not a Python module")
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            registry.manager.register(module, name=name)
            found[name] = (f"{folder} (not installed)", "")
        except Exception as exc:  # noqa: BLE001 -- reported like a broken installed plugin
            registry.problems.append(PluginProblem(name, f"failed to load {path}: {exc!r}", str(folder)))
    return found


def load(extra_plugins: Iterable[ModuleType | object] = (), plugin_dirs: Iterable[str | Path] = ()) -> Registry:
    """Load every installed plugin, the modules of `plugin_dirs`, and `extra_plugins` (registered in-process)
    into a fresh registry."""
    registry = Registry()
    dists: dict[str, tuple[str, str]] = {}
    # each read of a distribution's name or version parses its metadata file again: once per distribution
    provenance = cache(lambda dist: (dist.name, dist.version))
    # one pass over the installed distributions' entry points (pluggy's loader rescans them all per call)
    for ep in importlib.metadata.entry_points(group=hookspecs.PROJECT):
        if registry.manager.get_plugin(ep.name) is not None:
            registry.problems.append(PluginProblem(
                ep.name, f"entry point name {ep.name!r} is registered twice; ignoring {ep.value!r}"))
            continue
        try:
            registry.manager.register(ep.load(), name=ep.name)
        except Exception as exc:  # noqa: BLE001 -- a plugin that fails to import is reported by name
            registry.problems.append(PluginProblem(ep.name, f"failed to load {ep.value!r}: {exc!r}",
                                                   provenance(ep.dist)[0] if ep.dist is not None else None))
            continue
        if ep.dist is not None:
            dists[ep.name] = provenance(ep.dist)
    for folder in plugin_dirs:
        dists.update(_load_folder(registry, Path(folder)))
    for plugin in extra_plugins:
        registry.manager.register(plugin)
    _collect(registry, dists)
    return registry


def default() -> Registry:
    """The registry of installed plugins (and of the folders in $MMBENCH_PLUGINS_DIR), loaded once per process
    and value of that variable (a worker forked from the preloaded server inherits the server's)."""
    return _default_for(os.environ.get(PLUGINS_DIR_VARIABLE, ""))


@lru_cache(maxsize=4)
def _default_for(folders: str) -> Registry:
    return load(plugin_dirs=[f for f in folders.split(os.pathsep) if f])
