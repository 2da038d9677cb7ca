"""The strict YAML reader's messages: one line naming the problem, with the line it is on."""

import os

import pytest

from mmbench import files
from mmbench.schema.yaml_text import YamlProblem, load_yaml


@pytest.mark.parametrize(("text", "message", "line"), [
    ("a: 1\nb: [1, 2\n", "not valid YAML: expected ',' or ']', but got '<stream end>'", 3),
    ('a: 1\nb: "open\n', "not valid YAML: found unexpected end of stream", 3),
    ("a: 1\n\tb: 2\n", "a tab character: YAML indents with spaces only", 2),
    ("a: 1\n---\nb: 2\n", "a grid file holds one YAML document; a second one ('---') starts here", 2),
])
def test_a_yaml_error_is_one_line_naming_the_problem_and_its_line(text, message, line):
    with pytest.raises(YamlProblem) as raised:
        load_yaml(text)
    assert (raised.value.message, raised.value.line) == (message, line)


def test_written_files_get_the_mode_a_plain_open_would_give(tmp_path):
    previous = os.umask(0o027)
    try:
        assert files._file_mode() == 0o640
        assert os.umask(0o027) == 0o027  # and the process's umask is left as it was
    finally:
        os.umask(previous)
    files.atomic_write_text(tmp_path / "result.json", "{}")
    assert (tmp_path / "result.json").stat().st_mode & 0o777 == files.FILE_MODE
