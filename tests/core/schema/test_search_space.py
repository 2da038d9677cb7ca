"""Search distributions declared in parameter models: parsing, ranges, and the built-in declarations."""

import pytest
from pydantic import Field

from mmbench import registry as registry_lib
from mmbench.api import Balancer, Params, hookimpl, search
from mmbench.schema.recipe import OptimizerConfig
from mmbench.schema.search import SearchConfig, group_space
from mmbench.schema.search_space import Distribution, SpaceError, declared, field_problem


@pytest.mark.parametrize("raw, kind, low, high, choices", [
    ({"log_uniform": [0.01, 1]}, "log_uniform", 0.01, 1, ()),
    ({"uniform": [-1.0, 2.5]}, "uniform", -1.0, 2.5, ()),
    ({"int": [0, 8]}, "int", 0, 8, ()),
    ({"log_int": [1, 20]}, "log_int", 1, 20, ()),
    ({"choice": ["a", 3, None]}, "choice", 0.0, 0.0, ("a", 3, None)),
])
def test_every_written_form_parses_and_writes_back(raw, kind, low, high, choices):
    dist = Distribution.parse(raw)
    assert (dist.kind, dist.low, dist.high, dist.choices) == (kind, low, high, choices)
    assert dist.to_json() == {k: list(v) for k, v in raw.items()}


@pytest.mark.parametrize("raw, message", [
    ({"loguniform": [0.1, 1]}, "a search distribution is one of {log_uniform: [...]}"),
    ({"uniform": [1, 1]}, "uniform needs low < high, got [1, 1]"),
    ({"log_uniform": [0, 1]}, "log_uniform needs low > 0 (a logarithmic scale), got [0, 1]"),
    ({"int": [1, 2.5]}, "int takes whole numbers, got [1, 2.5]"),
    ({"uniform": [0, "one"]}, "uniform takes [low, high], two numbers, got [0, 'one']"),
    ({"uniform": [0, float("inf")]}, "uniform takes [low, high], two numbers"),
    ({"choice": []}, "choice takes a non-empty list, got []"),
    ({"choice": [1, 1]}, "choice lists a value twice: [1, 1]"),
    ({"uniform": [0, 1], "int": [0, 1]}, "a search distribution is one of"),
    ("fixd", "a search distribution is one of"),
])
def test_a_malformed_distribution_says_what_is_wrong(raw, message):
    with pytest.raises(SpaceError) as info:
        Distribution.parse(raw)
    assert message in str(info.value)


def test_an_exponent_yaml_reads_as_text_is_taken_as_its_number():
    # YAML 1.1 reads 1e-5 (no decimal point) as the string '1e-5'; pydantic accepts it for `lr`, so does a space
    assert Distribution.parse({"log_uniform": ["1e-5", 0.1]}).low == 1e-5


def test_within_means_every_drawable_value_is_drawable_by_the_outer_one():
    outer = Distribution.parse({"log_uniform": [0.05, 3.0]})
    assert Distribution.parse({"log_uniform": [0.1, 1.0]}).within(outer)
    assert Distribution.parse({"uniform": [0.05, 3.0]}).within(outer)  # same interval, another scale
    assert not Distribution.parse({"log_uniform": [0.01, 1.0]}).within(outer)
    assert not Distribution.parse({"log_uniform": [0.1, 5.0]}).within(outer)
    assert Distribution.parse({"int": [1, 3]}).within(outer)
    assert not Distribution.parse({"uniform": [1, 3]}).within(Distribution.parse({"int": [1, 5]}))  # fractions
    assert Distribution.parse({"choice": [1, 2]}).within(Distribution.parse({"choice": [1, 2, 3]}))
    assert not Distribution.parse({"choice": [1, 4]}).within(Distribution.parse({"choice": [1, 2, 3]}))
    assert not Distribution.parse({"choice": [1, 2]}).within(Distribution.parse({"int": [1, 3]}))


class Demo(Params):
    positive: float = Field(1.0, gt=0.0, le=100.0)
    count: int | None = Field(None, ge=1)
    mode: str = "a"


@pytest.mark.parametrize("name, raw, problem", [
    ("positive", {"uniform": [0.0, 1.0]}, "uniform [0.0, 1.0] includes 0.0, which 'positive' refuses: input should "
                                          "be greater than 0"),
    ("positive", {"log_uniform": [1.0, 200.0]}, "includes 200.0, which 'positive' refuses: input should be less "
                                                "than or equal to 100"),
    ("count", {"uniform": [1, 5]}, "uniform [1, 5] draws fractions, but 'count' is a whole number: use int or "
                                   "log_int"),
    ("count", {"int": [0, 5]}, "int [0, 5] includes 0, which 'count' refuses"),
    ("mode", {"choice": ["a", 2]}, "includes 2, which 'mode' refuses: input should be a valid string"),
])
def test_a_distribution_must_draw_only_values_the_field_accepts(name, raw, problem):
    assert problem in field_problem(Demo, name, Distribution.parse(raw))


@pytest.mark.parametrize("name, raw", [("positive", {"log_uniform": [0.01, 100.0]}), ("count", {"log_int": [1, 9]}),
                                       ("mode", {"choice": ["a", "b"]}), ("positive", {"int": [1, 3]})])
def test_a_distribution_inside_the_field_has_no_problem(name, raw):
    assert field_problem(Demo, name, Distribution.parse(raw)) is None


def test_the_helpers_write_exactly_the_plain_dictionary_a_plugin_may_write_itself():
    assert search.log_uniform(0.05, 3.0) == {"search": {"log_uniform": [0.05, 3.0]}}
    assert search.uniform(0.0, 0.5) == {"search": {"uniform": [0.0, 0.5]}}
    assert search.int_range(1, 20, log=True) == {"search": {"log_int": [1, 20]}}
    assert search.int_range(0, 2) == {"search": {"int": [0, 2]}}
    assert search.choice("a", "b") == {"search": {"choice": ["a", "b"]}}
    with pytest.raises(SpaceError, match="needs low < high"):
        search.uniform(1.0, 0.5)


def test_a_declaration_outside_its_own_field_is_a_defect_named_by_class_and_field():
    class Broken(Params):
        alpha: float = Field(0.5, gt=0.0, le=1.0, json_schema_extra=search.uniform(0.0, 2.0))

    with pytest.raises(SpaceError, match=r"Broken.alpha declares a search distribution outside its own constraints: "
                                         r"uniform \[0.0, 2.0\] includes 0.0"):
        declared(Broken)

    class Malformed(Params):
        alpha: float = Field(0.5, json_schema_extra={"search": {"uniform": [1.0]}})

    with pytest.raises(SpaceError, match=r"Malformed.alpha declares a malformed search distribution: uniform takes"):
        declared(Malformed)


def test_every_registered_components_declarations_lie_inside_their_fields(registry):
    counted = 0
    for kind in registry_lib.KINDS:
        for name in registry.names(kind):
            counted += len(declared(registry.get(kind, name).cls.Params))  # raises on a defective declaration
    assert counted >= 20  # the built-in balancers declare their tunable parameters


def test_the_recipes_learning_rate_and_weight_decay_are_searchable():
    assert {n: str(d) for n, d in declared(OptimizerConfig).items()} == {
        "lr": "log_uniform [1e-05, 1.0]", "weight_decay": "log_uniform [1e-06, 0.01]"}


def test_a_declaration_shows_in_the_components_json_schema(registry):
    schema = registry.get("balancers", "ogm").cls.Params.model_json_schema()
    assert schema["properties"]["alpha"]["search"] == {"log_uniform": [0.05, 3.0]}


class ThirdPartyParams(Params):
    strength: float = Field(1.0, gt=0.0, json_schema_extra=search.log_uniform(0.1, 10.0))
    steps: int = Field(3, ge=1, json_schema_extra=search.int_range(1, 5))
    plain: float = 0.5


class ThirdParty(Balancer):
    """A balancer from another distribution, declaring its space through the public API."""

    name = "third_party"
    Params = ThirdPartyParams


class ThirdPartyPlugin:
    @hookimpl
    def mmbench_balancers(self):
        return [ThirdParty]


def test_a_third_party_declaration_is_searched_like_a_built_in_one():
    registry = registry_lib.load(extra_plugins=[ThirdPartyPlugin()])
    cls = registry.get("balancers", "third_party").cls
    space = group_space(SearchConfig(trials=2), cls)
    assert {n: str(d) for n, d in space.items()} == {
        "balancer.steps": "int [1, 5]", "balancer.strength": "log_uniform [0.1, 10.0]",
        "optimizer.lr": "log_uniform [1e-05, 1.0]", "optimizer.weight_decay": "log_uniform [1e-06, 0.01]"}


def test_the_grid_narrows_fixes_or_adds_and_its_written_parameters_stay_fixed():
    config = SearchConfig(trials=2, space={
        "balancers": {"third_party": {"strength": {"log_uniform": [1.0, 2.0]}, "plain": {"uniform": [0.0, 1.0]}}},
        "optimizer": {"weight_decay": "fixed"}})
    space = group_space(config, ThirdParty, fixed=["steps"])
    assert {n: str(d) for n, d in space.items()} == {
        "balancer.plain": "uniform [0.0, 1.0]", "balancer.strength": "log_uniform [1.0, 2.0]",
        "optimizer.lr": "log_uniform [1e-05, 1.0]"}
