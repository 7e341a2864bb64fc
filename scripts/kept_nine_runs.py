"""Which sums a run's filters keep: each round's kept sums by their longest run of digit pairs summing
to 9 (the carries addition models get wrong), against fresh draws at the same level. A filter that
keeps mostly the sums without such runs trains the rounds on the easy cases.

    python scripts/kept_nine_runs.py --run runs/fa-24000-polish2-rounds/seed-0

Reads the kept prompts only, never the truth column.
"""

import argparse
import random
from collections import Counter
from pathlib import Path

import yaml
from datasets import load_from_disk

from si_hf.manifest import finished_rounds
from si_hf.records import round_dir
from si_hf.tasks import get_task
from si_hf.tasks.addition import longest_nine_run


def nine_run_shares(problems, cap: int = 3) -> list[float]:
    """The share of problems whose longest 9-run is 0, 1, ..., `cap` or more."""
    counts = Counter(min(longest_nine_run(*p.operands), cap) for p in problems)
    return [counts[k] / len(problems) for k in range(cap + 1)]


def kept_by_level(run: Path, task) -> dict[tuple[int, int], list]:
    """{(round, level): kept problems} for the finished rounds past round 0 (the base's true data); only
    each round's own rows."""
    kept = {}
    for k in finished_rounds(run):
        if k == 0:
            continue
        for row in load_from_disk(str(round_dir(run, k) / "data")).select_columns(["prompt", "round"]):
            if row["round"] == k:
                problem = task.parse(row["prompt"])
                kept.setdefault((k, problem.level), []).append(problem)
    return kept


def table_rows(kept: dict, task, draws: int, seed: int, cap: int = 3) -> list[list[str]]:
    rows = []
    for (k, level), problems in sorted(kept.items()):
        rng = random.Random(f"{seed}-{k}-{level}")  # the same fresh draws for a round on every call
        fresh = [task.sample(level, rng) for _ in range(draws)]
        for source, group in (("kept", problems), ("fresh draws", fresh)):
            rows.append([str(k), str(level), source, str(len(group))]
                        + [f"{share:.3f}" for share in nine_run_shares(group, cap)])
    return rows


def run_task(run: Path):
    recipe = run / "recipe.yaml"
    if not recipe.is_file():
        raise SystemExit(f"{run} has no recipe.yaml: not a run directory")
    task = get_task(yaml.safe_load(recipe.read_text())["task"])
    if not task.plants_carry_runs:
        raise SystemExit(f"{task.name} is not an addition task")
    return task


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", required=True, type=Path, help="a run directory (runs/<name>/seed-<s>)")
    parser.add_argument("--draws", type=int, default=4000, help="fresh problems drawn per round and level")
    parser.add_argument("--seed", type=int, default=0, help="seeds the fresh draws")
    args = parser.parse_args(argv)
    task = run_task(args.run)
    kept = kept_by_level(args.run, task)
    if not kept:
        raise SystemExit(f"{args.run} has no finished round past round 0")
    print("| round | level | sums | count | longest 9-run 0 | 1 | 2 | 3+ |\n|---|---|---|---|---|---|---|---|")
    for row in table_rows(kept, task, args.draws, args.seed):
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
