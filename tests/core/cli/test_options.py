"""KEY=VALUE options read one way (`-x`, `--param`), and their parameters checked as a grid's are."""

import pytest
from typer.testing import CliRunner

from mmbench import registry as registry_lib
from mmbench.cli import app
from mmbench.cli.errors import ParameterError
from mmbench.cli.options import key_values
from tests.fixtures.distributions import broken_plugins_folder


def test_values_are_yaml_an_empty_one_is_null_and_quotes_give_an_empty_string():
    assert key_values(["a=", "b=''", "c=two words", "d=null", " e =3", "f=a=b"], "x") == \
        {"a": None, "b": "", "c": "two words", "d": None, "e": 3, "f": "a=b"}


@pytest.mark.parametrize("pair", ["novalue", "=1", " =1"])
def test_a_pair_without_a_key_or_equals_sign_names_its_owner(pair):
    with pytest.raises(ParameterError, match=rf"^task 'x': parameter {pair!r}: expected KEY=VALUE$"):
        key_values([pair], "task 'x'")


def test_a_misspelt_task_parameter_gets_a_suggestion_and_nothing_is_written(tmp_path):
    root = tmp_path / "root"
    for command in (["prepare", "twitter2015", "--raw", str(tmp_path)], ["check", "twitter2015"]):
        result = CliRunner().invoke(app, ["data", *command, "--root", str(root), "--param", "tokenzier=x"])
        assert result.exit_code == 2 and "Traceback" not in result.output
        assert "task 'twitter2015' parameters: tokenzier: unknown key 'tokenzier'; did you mean 'tokenizer'?" \
            in result.output
    assert not root.exists()


def test_a_task_parameter_of_the_wrong_type_says_what_was_given(tmp_path):
    result = CliRunner().invoke(app, ["data", "check", "twitter2015", "--root", str(tmp_path),
                                      "--param", "max_length=[1"])
    assert result.exit_code == 2 and "task 'twitter2015': the value of 'max_length' is not valid YAML" in result.output
    result = CliRunner().invoke(app, ["data", "check", "twitter2015", "--root", str(tmp_path),
                                      "--param", "max_length=long"])
    assert result.exit_code == 2 and "max_length: Input should be a valid integer" in result.output
    assert "(got 'long')" in result.output


def test_the_data_commands_load_a_plugin_folder(tmp_path, monkeypatch):
    folder = broken_plugins_folder(tmp_path)
    monkeypatch.setenv(registry_lib.PLUGINS_DIR_VARIABLE, "")
    without = CliRunner().invoke(app, ["data", "list", "--data-root", str(tmp_path / "data")])
    assert without.exit_code == 0 and "flaky" not in without.output
    listed = CliRunner().invoke(app, ["data", "list", "--data-root", str(tmp_path / "data"),
                                      "--plugins-dir", str(folder)], env={"COLUMNS": "200"})
    assert listed.exit_code == 0 and "flaky" in listed.output and "not prepared" in listed.output
