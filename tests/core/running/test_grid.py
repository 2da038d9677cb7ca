"""A corpus of invalid grids, each with the exact problem (YAML path + message) it must get."""

import pytest

from mmbench.running import grid as grid_lib
from mmbench.schema.yaml_text import YamlProblem, decode, load_yaml
from tests.conftest import TINY_GRID


def problems_of(text, registry):
    with pytest.raises(grid_lib.GridError) as info:
        grid_lib.parse(text, registry, source="g.yaml")
    return [(p.path, p.message) for p in info.value.problems], info.value


def test_valid_grid_parses(registry):
    grid = grid_lib.parse(TINY_GRID, registry)
    assert grid.name == "tiny" and grid.seeds == [0, 1]
    assert [f.name for f in grid.fusions] == ["concat", "sum"]


INVALID = [
    ("unknown balancer", TINY_GRID.replace("balancers: [joint]", "balancers: [joint, jiont]"),
     [("balancers[1].name", "unknown balancer 'jiont'; did you mean 'joint'? (known: {known})")]),
    ("unknown top-level key", TINY_GRID.replace("seeds:", "sedes: [3]\nseeds:"),
     [("sedes", "unknown key 'sedes'; did you mean 'seeds'? (allowed: {grid_fields})")]),
    ("unknown encoder param", TINY_GRID.replace("hidden: 16", "hiden: 16"),
     [("encoders[0].*.params.hiden",
       "unknown key 'hiden'; did you mean 'hidden'? (allowed: dropout, hidden, layers, out_dim)")]),
    ("bad value", TINY_GRID.replace("epochs: 2", "epochs: -1"),
     [("train.epochs", "Input should be greater than 0 (got -1)")]),
    ("unknown optimizer", TINY_GRID.replace("name: sgd", "name: sgdd"),
     [("train.optimizer.name", "Input should be 'sgd', 'adam' or 'adamw' (got 'sgdd')")]),
    ("unknown modality", TINY_GRID.replace('"*": {name: mlp', 'fats: {name: mlp'),
     [("encoders[0].fats", "the task has no modality 'fats'; did you mean 'fast'? (modalities: fast, slow)"),
      ("encoders[0]", "no encoder for modality fast, slow (add it or a '*' entry)")]),
    ("task parameter out of range", TINY_GRID.replace("train_size: 128", "train_size: 2"),
     [("tasks[0].params.train_size", "Input should be greater than or equal to 10 (got 2)")]),
    ("duplicate seeds", TINY_GRID.replace("seeds: [0, 1]", "seeds: [0, 0]"),
     [("seeds", "seeds must be unique, got [0, 0]")]),
    ("missing section", TINY_GRID.replace("fusions: [concat, sum]\n", ""),
     [("fusions", "Field required")]),
    ("not a mapping", "- just\n- a list\n", [("", "a grid is a YAML mapping of sections (name, tasks, ...), got a list")]),
    ("unknown key in a component", TINY_GRID.replace("balancers: [joint]", "balancers: [{name: joint, parms: {}}]"),
     [("balancers[0].parms", "unknown key 'parms'; did you mean 'params'? (allowed: name, params)")]),
    ("unknown key in a task", TINY_GRID.replace("  - name: synthetic", "  - name: synthetic\n    rot: /data"),
     [("tasks[0].rot", "unknown key 'rot'; did you mean 'root'? (allowed: name, params, root)")]),
    ("unknown recipe key", TINY_GRID.replace("epochs: 2", "epochs: 2\n  epoch: 3"),
     [("train.epoch", "unknown key 'epoch'; did you mean 'epochs'? (allowed: {recipe_fields})")]),
]


@pytest.mark.parametrize("text, expected", [(t, e) for _, t, e in INVALID], ids=[c for c, _, _ in INVALID])
def test_invalid_grid_gets_exact_problems(text, expected, registry):
    known = ", ".join(registry.names("balancers"))
    grid_fields = ", ".join(sorted(grid_lib.Grid.model_fields))
    recipe_fields = ", ".join(sorted(grid_lib.TrainRecipe.model_fields))
    expected = [(p, m.format(known=known, grid_fields=grid_fields, recipe_fields=recipe_fields)) for p, m in expected]
    found, _ = problems_of(text, registry)
    assert found == expected


def _line_of(text, fragment):
    [line] = [i for i, row in enumerate(text.splitlines(), 1) if fragment in row]
    return line


def test_problems_carry_yaml_line_numbers(registry):
    text = TINY_GRID.replace("balancers: [joint]", "balancers: [joint, jiont]")
    _, error = problems_of(text, registry)
    line = _line_of(text, "balancers: [joint, jiont]")
    assert error.problems[0].line == line
    assert f"balancers[1].name (line {line})" in str(error)


def test_every_problem_has_the_exact_line_of_its_value(registry):
    structural = TINY_GRID.replace("epochs: 2", "epochs: -1").replace("seeds: [0, 1]", "seeds:\n  - 0\n  - x")
    _, error = problems_of(structural, registry)
    assert {p.path: p.line for p in error.problems} == {"train.epochs": _line_of(structural, "epochs: -1"),
                                                        "seeds[1]": _line_of(structural, "  - x")}
    semantic = TINY_GRID.replace("hidden: 16", "hiden: 16") \
        .replace("balancers: [joint]", "balancers:\n  - joint\n  - name: ogm\n    params:\n      alpah: 0.1")
    _, error = problems_of(semantic, registry)
    assert {p.path: p.line for p in error.problems} == {
        "encoders[0].*.params.hiden": _line_of(semantic, "hiden: 16"),
        "balancers[1].params.alpah": _line_of(semantic, "alpah: 0.1")}


def test_yaml_is_never_evaluated_as_code(registry, tmp_path):
    marker = tmp_path / "pwned"
    text = f"!!python/object/apply:os.system ['touch {marker}']\n"
    found, _ = problems_of(text, registry)
    assert found[0][0] == "" and "not valid YAML" in found[0][1]
    assert not marker.exists()


def test_broken_yaml_reports_the_line(registry):
    _, error = problems_of("name: x\nseeds: [0]\ntasks: [synthetic\nfusions: [concat]\n", registry)
    assert "not valid YAML" in error.problems[0].message
    assert error.problems[0].line == 4  # where the parser found the unclosed flow sequence


@pytest.mark.parametrize(("text", "message", "line"), [
    ("a: 1\nb: [1, 2\n", "not valid YAML: expected ',' or ']', but got '<stream end>'", 3),
    ('a: 1\nb: "open\n', "not valid YAML: found unexpected end of stream", 3),
    ("a: 1\n\tb: 2\n", "a tab character: YAML indents with spaces only", 2),
    ("a: 1\n---\nb: 2\n", "a grid file holds one YAML document; a second one ('---') starts here", 2),
    ("a: 1\nb: t\x07iny\n", "not valid YAML: unacceptable character #x0007: special characters are not allowed",
     2),
    ("a: 1\nb: 2\na: 3\n", "duplicate key 'a' (first on line 1): the later value would silently win", 3),
    ("b: 1\nopt: {lr: 0,05}\n", "a key must be a name, got '05'; a decimal comma in a flow mapping (`lr: 0,05`) "
                                "splits it into two keys: write 0.05", 2),
])
def test_a_yaml_error_is_one_line_naming_the_problem_and_its_line(text, message, line):
    with pytest.raises(YamlProblem) as raised:
        load_yaml(text)
    assert (raised.value.message, raised.value.line) == (message, line)
    assert str(raised.value) == message


def test_a_byte_that_is_not_utf8_is_named_with_its_line():
    with pytest.raises(YamlProblem) as raised:
        decode(b"name: tiny\nseeds: [0]\nbalancers: [j\xe9int]\n")
    assert (raised.value.message, raised.value.line) == ("not UTF-8 text: byte 0xe9 cannot be decoded", 3)
    assert decode("name: tïny\n".encode()) == "name: tïny\n"
