"""The grid's `search` block: every bad input is a clear problem with its YAML path, before anything trains."""

import pytest
from typer.testing import CliRunner

from mmbench.cli import app
from mmbench.running import grid as grid_lib
from mmbench.running.cells import expand
from tests.conftest import TINY_GRID

SEARCH = TINY_GRID.replace("balancers: [joint]", "balancers: [joint, ogm]") + "search: {trials: 3}\n"


def searched(block: str, balancers: str = "[joint, ogm]") -> str:
    return TINY_GRID.replace("balancers: [joint]", f"balancers: {balancers}") + block


def problems_of(text, registry):
    with pytest.raises(grid_lib.GridError) as info:
        grid_lib.parse(text, registry, source="g.yaml")
    return [(p.path, p.message) for p in info.value.problems]


def test_a_search_block_parses_with_its_defaults(registry):
    grid = grid_lib.parse(SEARCH, registry)
    assert (grid.search.trials, grid.search.sampler, grid.search.seed, grid.search.metric) == (3, "random", 0, None)


BAD = [
    ("no trials", "search: {trials: 0}\n",
     [("search.trials", "trials must be at least 1, got 0: it is the number of configurations each method tries")]),
    ("unknown sampler", "search: {trials: 2, sampler: grid}\n",
     [("search.sampler", "Input should be 'random' or 'tpe' (got 'grid')")]),
    ("a metric the task does not report", "search: {trials: 2, metric: acuracy}\n",
     [("search.metric", "task 'synthetic' does not report 'acuracy'; did you mean 'accuracy'? (it reports accuracy, "
                        "macro_f1, ece)")]),
    ("outside the documented range", "search: {trials: 2, space: {balancers: {ogm: {alpha: {log_uniform: [0.01, 5]}}}}}\n",
     [("search.space.balancers.ogm.alpha", "log_uniform [0.01, 5] lies outside the documented range of ogm's 'alpha', "
                                           "log_uniform [0.05, 3.0]: narrow it (a wider range is a change to the "
                                           "component's declaration)")]),
    ("outside the field's constraints", "search: {trials: 2, space: {balancers: {ogm: {modulation_ends: {int: [-1, 3]}}}}}\n",
     [("search.space.balancers.ogm.modulation_ends", "int [-1, 3] includes -1, which 'modulation_ends' refuses: input "
                                                     "should be greater than or equal to 0")]),
    ("the learning rate outside its range", "search: {trials: 2, space: {optimizer: {lr: {log_uniform: [1e-6, 0.1]}}}}\n",
     [("search.space.optimizer.lr", "log_uniform [1e-06, 0.1] lies outside the documented range of the optimizer's "
                                    "'lr', log_uniform [1e-05, 1.0]: narrow it (a wider range is a change to the "
                                    "component's declaration)")]),
    ("momentum may not reach 1", "search: {trials: 2, space: {optimizer: {momentum: {uniform: [0.5, 1.0]}}}}\n",
     [("search.space.optimizer.momentum", "uniform [0.5, 1.0] includes 1.0, which 'momentum' refuses: input should be "
                                          "less than 1")]),
    ("a malformed distribution", "search: {trials: 2, space: {balancers: {ogm: {alpha: {loguniform: [0.1, 1]}}}}}\n",
     [("search.space.balancers.ogm.alpha", "a search distribution is one of {log_uniform: [...]}, {uniform: [...]}, "
                                           "{int: [...]}, {log_int: [...]}, {choice: [...]}, got {'loguniform': [0.1, "
                                           "1]} (or write 'fixed' to keep the parameter as it is)")]),
    ("a balancer the grid does not have", "search: {trials: 2, space: {balancers: {ogm_ge: {alpha: fixed}}}}\n",
     [("search.space.balancers.ogm_ge", "'ogm_ge' is not one of the grid's balancers; did you mean 'ogm'?")]),
    ("an unknown parameter", "search: {trials: 2, space: {balancers: {ogm: {alpa: fixed}}}}\n",
     [("search.space.balancers.ogm.alpa", "ogm has no parameter 'alpa'; did you mean 'alpha'? (parameters: "
                                          "modulation_starts, modulation_ends, alpha, modulate, formula)")]),
    ("an unknown key in the block", "search: {trials: 2, seeds: 3}\n",
     [("search.seeds", "unknown key 'seeds'; did you mean 'seed'? (allowed: metric, sampler, seed, space, trials)")]),
]


@pytest.mark.parametrize("block, expected", [(b, e) for _, b, e in BAD], ids=[c for c, _, _ in BAD])
def test_bad_search_input_gets_an_exact_problem(block, expected, registry):
    assert problems_of(searched(block), registry) == expected


def test_a_parameter_fixed_in_the_grid_cannot_also_be_searched(registry):
    text = searched("search: {trials: 2, space: {balancers: {ogm: {alpha: {log_uniform: [0.1, 1]}}}}}\n",
                    balancers="[joint, {name: ogm, params: {alpha: 0.3}}]")
    assert problems_of(text, registry) == [
        ("search.space.balancers.ogm.alpha", "'alpha' is set in the grid's ogm entry, which fixes it: search it or "
                                             "fix it, not both")]


def test_a_configuration_with_nothing_left_to_search_is_refused(registry):
    text = searched("search: {trials: 2, space: {optimizer: {lr: fixed, weight_decay: fixed}}}\n")
    assert problems_of(text, registry) == [
        ("balancers[0]", "nothing to search for 'joint': it declares no searchable parameter that the grid leaves "
                         "free, and the optimizer's are fixed")]


def test_problems_carry_the_line_of_the_search_block(registry):
    text = searched("search:\n  trials: 4\n  metric: auc\n")
    with pytest.raises(grid_lib.GridError) as info:
        grid_lib.parse(text, registry)
    [problem] = info.value.problems
    assert problem.line == len(text.splitlines())


def test_validate_reports_search_problems_and_exits_2_before_anything_trains(tmp_path):
    path = tmp_path / "g.yaml"
    path.write_text(searched("search: {trials: 0, metric: auc}\n"))
    result = CliRunner().invoke(app, ["validate", str(path)])
    assert result.exit_code == 2 and not (tmp_path / "runs").exists()
    assert "search.trials" in result.output and "trials must be at least 1" in result.output


def test_validate_counts_the_trials_and_the_re_runs(tmp_path):
    path = tmp_path / "g.yaml"
    path.write_text(SEARCH)  # joint and ogm, each with concat and sum: 4 configurations
    result = CliRunner().invoke(app, ["validate", str(path)])
    assert result.exit_code == 0, result.output
    assert "4 configurations tuned with 3 trials each, then re-run on 2 seed(s): 20 cells to train" in result.output


def test_a_tuned_grid_is_its_own_benchmark_and_its_budget_is_part_of_the_version(registry):
    plain = expand(grid_lib.parse(TINY_GRID, registry), registry)[0]
    tuned = expand(grid_lib.parse(searched("search: {trials: 3}\n", "[joint]"), registry), registry)[0]
    bigger = expand(grid_lib.parse(searched("search: {trials: 4}\n", "[joint]"), registry), registry)[0]
    reseeded = expand(grid_lib.parse(searched("search: {trials: 3, seed: 9}\n", "[joint]"), registry), registry)[0]
    assert (plain.benchmark, tuned.benchmark) == ("synthetic", "synthetic-tuned")
    assert len({plain.benchmark_version, tuned.benchmark_version, bigger.benchmark_version}) == 3
    assert reseeded.benchmark_version == tuned.benchmark_version  # a search seed is not a different protocol
