"""Reading a YAML document strictly: one document, string keys, no duplicate keys, clear messages.

Grids are written by hand; whatever YAML would silently accept or report obscurely (a key given twice, where
the last value silently wins; `lr: 0,05` in a flow mapping, which makes the key `05`; a tab; a second
document) becomes a message with its line. Only the safe loader is used: nothing is ever evaluated.
"""

from __future__ import annotations

from typing import Any

import yaml

MERGE_TAG = "tag:yaml.org,2002:merge"
STRING_TAG = "tag:yaml.org,2002:str"


class YamlProblem(Exception):
    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(message)
        self.message, self.line = message, line


def _line(mark) -> int | None:
    return mark.line + 1 if mark is not None else None


class _StrictLoader(yaml.SafeLoader):
    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        first: dict[str, int | None] = {}
        for key_node, _ in node.value:
            if key_node.tag == MERGE_TAG:
                continue
            line = _line(key_node.start_mark)
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag != STRING_TAG:
                raise YamlProblem(f"a key must be a name, got {key_node.value!r}; a decimal comma in a flow "
                                  "mapping (`lr: 0,05`) splits it into two keys: write 0.05", line)
            if key_node.value in first:
                raise YamlProblem(f"duplicate key {key_node.value!r} (first on line {first[key_node.value]}): the "
                                  "later value would silently win", line)
            first[key_node.value] = line
        return super().construct_mapping(node, deep)


def _friendly(exc: yaml.YAMLError) -> str:
    # a parser's error names its problem; a reader's (an unacceptable character) only its text, whose second
    # line says where (the message's line number says it instead)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    if "'\\t'" in problem:
        return "a tab character: YAML indents with spaces only"
    if "another document" in problem:
        return "a grid file holds one YAML document; a second one ('---') starts here"
    return f"not valid YAML: {problem}"


def load_yaml(text: str) -> tuple[Any, yaml.Node | None]:
    """The document's data and its node tree (for line numbers); raises `YamlProblem`."""
    try:
        loader = _StrictLoader(text)  # checks every character first
    except yaml.reader.ReaderError as exc:
        raise YamlProblem(_friendly(exc), text[:exc.position].count("\n") + 1) from None
    try:
        node = loader.get_single_node()
        return (loader.construct_document(node) if node is not None else None), node
    except RecursionError:
        raise YamlProblem("the document nests too deeply to be a grid") from None
    except yaml.YAMLError as exc:
        raise YamlProblem(_friendly(exc), _line(getattr(exc, "problem_mark", None))) from None
    finally:
        loader.dispose()


def decode(raw: bytes) -> str:
    """UTF-8 text, or a `YamlProblem` naming the line of the first undecodable byte."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise YamlProblem(f"not UTF-8 text: byte 0x{raw[exc.start]:02x} cannot be decoded", line) from None
