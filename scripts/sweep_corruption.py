"""Corruption sweeps: how far a run goes when a share of one round's kept labels is wrong on purpose.

    python scripts/sweep_corruption.py --config recipes/copy/tiny.yaml --corrupt_round 3 \\
        --fractions 0 0.05 0.1 0.2 0.4 --modes digits drop_tail --seeds 0 --rounds_after 6 [--field value ...]

For each seed s, rounds 0..k-1 run once, in <output_dir>/seed-<s>/shared. Every (mode, fraction) then
continues from its round k-1 (`init_from`, si_hf/branch.py: the rounds are copied, not computed again)
in <output_dir>/seed-<s>/<mode>-<fraction>, with round k's kept labels corrupted, up to round
k + rounds_after; fraction 0 is one uncorrupted continuation, `clean`. Every run is launched as
`si-hf-launch scripts/run_rounds.py` would be, so a rerun resumes each where it stopped. Shared rounds
that are all finished are not launched again, so several sweeps of one seed can run at once (say, one
mode each) once the first has finished them. Exits with the first failing run's code (2 recipe, 3 Hub,
4 rounds on disk).
"""

import argparse
import subprocess
import sys
from pathlib import Path

from si_hf.config import parse_recipe
from si_hf.errors import RecipeError
from si_hf.manifest import finished_rounds
from si_hf.records import round_name

ROOT = Path(__file__).resolve().parent


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", required=True, help="the recipe YAML")
    parser.add_argument("--corrupt_round", type=int, required=True, help="k: the round whose labels are corrupted")
    parser.add_argument("--fractions", type=float, nargs="+", required=True, help="shares of kept labels corrupted")
    parser.add_argument("--modes", nargs="+", default=["digits"], help="corruption modes (si_hf.corruption)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--rounds_after", type=int, default=6, help="rounds each run goes on after round k")
    parser.add_argument("--accelerate_config", default=str(ROOT.parent / "accelerate_config.yaml"))
    return parser.parse_known_args(argv)  # the rest are recipe fields (--field value), passed to every run


def sweep_runs(args) -> list[tuple[str, list[str]]]:
    """(run name, its fields) for one seed: the shared rounds first, then every continuation."""
    k = args.corrupt_round
    runs = [("shared", ["--num_rounds", str(k - 1)])]
    branch = ["--num_rounds", str(k + args.rounds_after)]
    for fraction in sorted(set(args.fractions)):
        for mode in args.modes if fraction else ["none"]:
            name = f"{mode}-{fraction:g}" if fraction else "clean"
            corrupt = ["--corrupt_round", str(k), "--corrupt_fraction", str(fraction), "--corrupt_mode", mode]
            runs.append((name, branch + (corrupt if fraction else [])))
    return runs


def main(argv=None):
    args, fields = parse_args(argv)
    if args.corrupt_round < 1 or args.rounds_after < 0:
        print("error: --corrupt_round must be >= 1 and --rounds_after >= 0", file=sys.stderr)
        return 2
    try:
        # Every run's recipe is checked before any runs: a bad field fails now, not after the shared rounds.
        recipes = [parse_recipe(["--config", args.config, *fields, *run_fields]) for _, run_fields in sweep_runs(args)]
        out = Path(recipes[0].output_dir)
    except RecipeError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for seed in args.seeds:
        shared = out / f"seed-{seed}" / "shared"
        for name, run_fields in sweep_runs(args):
            if name == "shared" and args.corrupt_round - 1 in finished_rounds(shared):
                print(f"== seed {seed}, shared: rounds 0-{args.corrupt_round - 1} finished in {shared}", flush=True)
                continue  # not even resumed: it would take the run's lock from a sweep running beside this one
            start = [] if name == "shared" else ["--init_from", f"{shared}@{round_name(args.corrupt_round - 1)}"]
            print(f"== seed {seed}, {name}: {out / f'seed-{seed}' / name}", flush=True)
            cmd = [sys.executable, "-m", "si_hf.launch", "--config_file", args.accelerate_config,
                   str(ROOT / "run_rounds.py"), "--config", args.config, *fields, *run_fields, *start,
                   "--seed", str(seed), "--output_dir", str(out / f"seed-{seed}" / name)]
            rc = subprocess.call(cmd)
            if rc:
                print(f"error: seed {seed}, {name} failed (exit code {rc}); rerun to resume", file=sys.stderr)
                return rc
    return 0


if __name__ == "__main__":
    sys.exit(main())
