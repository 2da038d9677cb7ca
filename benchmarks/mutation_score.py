"""Kill rate of a `mutmut run` (mutation testing of the core), overall and per module.

    .venv/bin/mutmut run            # hours: mutates the core ([tool.mutmut]) and runs the tests covering each mutant
    .venv/bin/python benchmarks/mutation_score.py [--survivors]

Where a whole run does not fit, judge a seeded uniform sample and score it alone:

    .venv/bin/mutmut run $(.venv/bin/python benchmarks/mutation_score.py --sample 200 --seed 6)
    .venv/bin/python benchmarks/mutation_score.py --sample 200 --seed 6 --score

A mutant is killed when a test fails (or times out) with it; it survives when every test covering it passes;
"no tests" means no test reaches the mutated code, which counts against the score like a survivor.
"""

from __future__ import annotations

import argparse
import json
import random
from collections import Counter, defaultdict
from pathlib import Path

KILLED = {1, 3, 36, 24, -24, 152, 255}  # failures and timeouts
SURVIVED = {0}
NO_TESTS = {5, 33}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mutants", type=Path, default=Path("mutants"))
    parser.add_argument("--survivors", action="store_true", help="list the surviving mutants")
    parser.add_argument("--sample", type=int, help="print the names of a uniform sample of this many mutants")
    parser.add_argument("--seed", type=int, default=0, help="the sample's seed")
    parser.add_argument("--score", action="store_true", help="with --sample: score that sample only")
    args = parser.parse_args()
    codes = {}
    for meta in sorted(args.mutants.rglob("*.py.meta")):
        module = str(meta.relative_to(args.mutants)).removesuffix(".meta")
        codes.update({key: (module, code) for key, code in
                      json.loads(meta.read_text()).get("exit_code_by_key", {}).items()})
    if args.sample:
        chosen = sorted(random.Random(args.seed).sample(sorted(codes), args.sample))
        if not args.score:
            print("\n".join(chosen))
            return
        codes = {key: codes[key] for key in chosen}
    per_module: dict[str, Counter] = defaultdict(Counter)
    survivors = []
    for key, (module, code) in codes.items():
        status = ("killed" if code in KILLED else "survived" if code in SURVIVED else
                  "no tests" if code in NO_TESTS else "not checked" if code is None else "other")
        per_module[module][status] += 1
        if status in ("survived", "no tests"):
            survivors.append(f"{status:<9} {key}")
    total = sum(per_module.values(), Counter())
    print(f"{'module':<42} {'killed':>7} {'survived':>9} {'no tests':>9} {'unchecked':>10} {'kill rate':>10}")
    for module, counts in [*sorted(per_module.items()), ("total", total)]:
        judged = counts["killed"] + counts["survived"] + counts["no tests"]
        rate = f"{100 * counts['killed'] / judged:.1f} %" if judged else "–"
        print(f"{module:<42} {counts['killed']:>7} {counts['survived']:>9} {counts['no tests']:>9} "
              f"{counts['not checked'] + counts['other']:>10} {rate:>10}")
    if args.survivors:
        print("\n".join(survivors))


if __name__ == "__main__":
    main()
