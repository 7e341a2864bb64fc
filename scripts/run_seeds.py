"""Run one recipe for several seeds, one after another, and aggregate them.

    python scripts/run_seeds.py --config recipes/copy/tiny.yaml --seeds 0 1 2 [--field value ...]

Seed s runs exactly as `si-hf-launch scripts/run_rounds.py --config ... --seed s
--output_dir <output_dir>/seed-s` would (so a rerun resumes each seed where it stopped), then
`<output_dir>/seeds.{json,md,png}` aggregate every seed found there. Where there are more machines, run
one job per seed (`--seeds s` each, the same output_dir), then `--aggregate_only` once they are done.
Exits with the first failing seed's code (2 recipe, 3 Hub, 4 rounds on disk).
"""

import argparse
import subprocess
import sys
from pathlib import Path

from si_hf.config import parse_recipe
from si_hf.errors import RecipeError
from si_hf.seeds import write_aggregate

ROOT = Path(__file__).resolve().parent


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", required=True, help="the recipe YAML")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds to run (default: 0 1 2)")
    parser.add_argument("--accelerate_config", default=str(ROOT.parent / "accelerate_config.yaml"),
                        help="the accelerate config each seed is launched with")
    parser.add_argument("--aggregate_only", action="store_true", help="run nothing; aggregate the seeds found")
    return parser.parse_known_args(argv)  # the rest are recipe fields (--field value), passed to every seed


def main(argv=None):
    args, fields = parse_args(argv)
    try:
        recipe = parse_recipe(["--config", args.config, *fields])
    except RecipeError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    out = Path(recipe.output_dir)
    for seed in [] if args.aggregate_only else args.seeds:
        print(f"== seed {seed}: {out / f'seed-{seed}'}", flush=True)
        cmd = [sys.executable, "-m", "si_hf.launch", "--config_file", args.accelerate_config,
               str(ROOT / "run_rounds.py"), "--config", args.config, *fields,
               "--seed", str(seed), "--output_dir", str(out / f"seed-{seed}")]
        rc = subprocess.call(cmd)
        if rc:
            print(f"error: seed {seed} failed (exit code {rc}); its finished rounds are kept, rerun to resume",
                  file=sys.stderr)
            return rc
    try:
        agg = write_aggregate(out)
    except ValueError as err:
        print(f"error: {out}: {err}", file=sys.stderr)
        return 4
    front = agg["across_seeds"]["final_frontier"]
    print(f"{len(agg['seeds'])} seeds in {out}: final frontier min {front['min']}, median {front['median']}, "
          f"max {front['max']}; worst kept-label accuracy {agg['across_seeds']['min_label_accuracy_kept']}; "
          f"see {out / 'seeds.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
