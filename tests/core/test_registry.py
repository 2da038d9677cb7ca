"""The plugin registry over real entry points (dist-info folders put on sys.path, no installation)."""

import sys
import textwrap

import pytest

from mmbench import registry as registry_lib
from tests.fixtures.distributions import fake_distribution


def test_builtins_are_registered_through_entry_points(registry):
    assert {"joint", "unimodal"} <= set(registry.names("balancers"))
    comp = registry.get("tasks", "synthetic")
    assert comp.distribution == "mmbench" and comp.plugin == "synthetic"


def test_unknown_name_suggests_close_matches(registry):
    with pytest.raises(registry_lib.UnknownComponent) as info:
        registry.get("balancers", "jiont")
    assert info.value.suggestions == ["joint"]
    assert "did you mean 'joint'?" in str(info.value)


def test_broken_plugin_and_name_clash_are_reported_and_others_keep_working(tmp_path, monkeypatch):
    fake_distribution(
        tmp_path, "third_party",
        {"broken": "module_that_does_not_exist_xyz", "raising": "raising_plugin", "clashing": "clashing_plugin",
         "extra": "extra_plugin"},
        {
            "raising_plugin": """
                raise RuntimeError("this plugin cannot start here")
            """,
            "clashing_plugin": """
                from mmbench.api import hookimpl
                from mmbench.api import Balancer
                class FakeJoint(Balancer):
                    name = "joint"
                @hookimpl
                def mmbench_balancers():
                    return [FakeJoint]
            """,
            "extra_plugin": """
                from mmbench.api import hookimpl
                from mmbench.api import Balancer
                class Extra(Balancer):
                    name = "extra_balancer"
                @hookimpl
                def mmbench_balancers():
                    return [Extra]
            """,
        },
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    registry = registry_lib.load()
    problems = {p.plugin: p.message for p in registry.problems}
    assert "module_that_does_not_exist_xyz" in problems["broken"]
    assert "RuntimeError" in problems["raising"] and "cannot start here" in problems["raising"]
    assert "clashes" in problems["clashing"] and "'joint'" in problems["clashing"]
    # the built-in wins the clash; the healthy third-party plugin is there with its distribution
    assert registry.get("balancers", "joint").distribution == "mmbench"
    extra = registry.get("balancers", "extra_balancer")
    assert (extra.distribution, extra.version) == ("third_party", "0.1")
    for name in ("raising_plugin", "clashing_plugin", "extra_plugin"):
        sys.modules.pop(name, None)


def test_template_distribution_is_installed_and_registered(registry):
    """The example third-party package under plugins/template is pip-installed by the test command."""
    comp = registry.get("balancers", "modality_dropout")
    assert comp.distribution == "mmbench-example-balancer"


def test_the_default_registry_follows_the_plugin_folders_named_in_the_environment(tmp_path, monkeypatch):
    """A worker forked from the preloaded server reuses the server's registry only while its runner names the
    same plugin folders."""
    (tmp_path / "folder_balancer.py").write_text(textwrap.dedent("""
        from mmbench.api import hookimpl
        from mmbench.api import Balancer
        class FolderBalancer(Balancer):
            name = "folder_balancer"
        @hookimpl
        def mmbench_balancers():
            return [FolderBalancer]
    """))
    monkeypatch.setenv(registry_lib.PLUGINS_DIR_VARIABLE, "")
    installed = registry_lib.default()
    assert "folder_balancer" not in installed.names("balancers")
    monkeypatch.setenv(registry_lib.PLUGINS_DIR_VARIABLE, str(tmp_path))
    with_folder = registry_lib.default()
    assert "folder_balancer" in with_folder.names("balancers") and with_folder is registry_lib.default()
    monkeypatch.setenv(registry_lib.PLUGINS_DIR_VARIABLE, "")
    assert registry_lib.default() is installed


def test_a_plugin_folder_module_that_raises_is_reported_and_the_others_load(tmp_path):
    (tmp_path / "raises_at_import.py").write_text('raise ValueError("a setting this plugin needs is missing")\n')
    (tmp_path / "folder_balancer.py").write_text(textwrap.dedent("""
        from mmbench.api import Balancer, hookimpl
        class FolderBalancer(Balancer):
            name = "folder_balancer"
        @hookimpl
        def mmbench_balancers():
            return [FolderBalancer]
    """))
    registry = registry_lib.load(plugin_dirs=[tmp_path])
    [problem] = registry.problems
    assert problem.plugin == "raises_at_import" and "ValueError" in problem.message
    assert "folder_balancer" in registry.names("balancers") and "joint" in registry.names("balancers")
