"""Fit the law of sustainability on finished runs and print it (si_hf/sustainability.py).

    python scripts/fit_sustainability.py runs/sweep-copy [more run directories ...] [--collapse_accuracy 0.5]
        [--save law.json] [--plot law.png]

Every run found under the directories (a summary.jsonl at any depth) gives its kept-label error per
round; the law e_{k+1} = a + b e_k + c e_k^2 is fitted on all their consecutive rounds from the corrupted
one on (the step into it is the corruption, not the law). Printed: each
run's kept-label accuracy and frontier by round, and whether (and when) it collapsed; the coefficients
with their bootstrap uncertainty, the fit's error, the fixed points and the critical accuracy; and for
each run what the law predicts from its corrupted round's error (else round 1's) against what happened.
"""

import argparse
import sys
from pathlib import Path

from si_hf.sustainability import fit_law, kept_errors, plot_law, read_runs


def start_round(records) -> int:
    """Where a prediction starts: the corrupted round of a run that has one, else round 1."""
    return next((rec.round for rec in records if rec.labels and rec.labels.corruption), 1)


def collapsed_after(errors: list, collapse_accuracy: float) -> int | None:
    """Rounds after the first until the kept-label accuracy first fell below collapse_accuracy."""
    for n, e in enumerate(errors[1:], 1):
        if e is not None and 1.0 - e < collapse_accuracy:
            return n
    return None


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("directories", nargs="+")
    p.add_argument("--collapse_accuracy", type=float, default=0.5)
    p.add_argument("--save", help="write the law as JSON here (a recipe's sustainability_law)")
    p.add_argument("--plot", help="write the measured transitions, the law and its fixed points as a PNG here")
    args = p.parse_args(argv)
    runs = {d if name == "." else f"{d}/{name}": records
            for d in args.directories for name, records in read_runs(d).items()}
    if not runs:
        print(f"error: no finished run under {', '.join(args.directories)}", file=sys.stderr)
        return 2
    errors = {name: kept_errors(records) for name, records in runs.items()}
    # From the corrupted round on: the step into it is the corruption, not the law.
    series = {name: errors[name][start_round(records) - 1:] for name, records in runs.items()}
    for name, records in runs.items():
        accs = " ".join("-" if e is None else f"{1 - e:.3f}" for e in errors[name])
        print(f"{name}: kept-label accuracy {accs} | frontier {' '.join(str(r.frontier) for r in records)}")
    try:
        law = fit_law(list(series.values()))
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.save:
        law.save(args.save)
    if args.plot:
        Path(args.plot).write_bytes(plot_law(law, list(series.values())))
    (a, b, c), (sa, sb, sc) = law.coefficients, law.stderr
    print(f"law: e' = {a:.4f} (+-{sa:.4f}) + {b:.3f} (+-{sb:.3f}) e + {c:.3f} (+-{sc:.3f}) e^2; "
          f"rmse {law.rmse:.4f} on {law.transitions} transitions")
    points = ", ".join(f"{e:.3f} ({'stable' if stable else 'unstable'})" for e, stable in law.fixed_points())
    print(f"fixed points (error): {points or 'none in [0, 1]'}; critical kept-label accuracy: "
          f"{law.critical_accuracy() if law.critical_accuracy() is not None else 'none'}")
    for name, tail in series.items():
        first = next((e for e in tail if e is not None), None)
        if first is None:
            continue
        predicted = law.predict(first, len(tail) - 1, args.collapse_accuracy)
        print(f"{name}: from round {start_round(runs[name])}, predicted "
              f"{'sustains' if predicted is None else f'collapses after {predicted} rounds'}, "
              f"measured {'sustains' if (n := collapsed_after(tail, args.collapse_accuracy)) is None else n}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
