"""Fit the law of sustainability on finished runs, and test it on held-out ones (si_hf/sustainability.py).

    python scripts/fit_sustainability.py runs/sweep-copy [more run directories ...] [--state next_level]
        [--holdout '*digits-0.05' ...] [--collapse_accuracy 0.5] [--save law.json] [--plot law.png]
        [--phases phases.png] [--start_round 1] [--skip_rounds 0]
    python scripts/fit_sustainability.py runs/sweep3 --law law.json    # a saved law, not refitted

Every run found under the directories (a summary.jsonl at any depth) gives its state by round; the law
logit e_{k+1} = alpha + beta logit e_k is fitted on the consecutive rounds of the runs that no --holdout
pattern (fnmatch, on the run's name as printed) matches, from each run's corrupted round on (the step
into it is the corruption, not the law). Printed: each run's accuracy and frontier by round; the
coefficients with their bootstrap uncertainty, the fit's error, the fixed point and the critical
accuracy; and for each run what the law predicts from its corrupted round (else round 1) against what
happened, a hit when both say sustained, or both collapsed within 2 rounds of each other; the held-out
runs' hits counted. A run has collapsed when its accuracy fell below --collapse_accuracy and stayed
below to its last round. --bounds fits on the rounds at no error or every error too. --law scores every
run against a law saved before (a pre-registered test: nothing is fitted, every run is held out).
--start_round: where the runs without a corruption start (a sweep's clean run: its corrupted round).
--skip_rounds n: every run starts n rounds later (fitted and predicted from there), so that the law
carries the state a corruption left after the filters had a round to act on it, not the corruption.
A state of several errors (--state next_two_levels) is judged, printed and plotted by its first.
"""

import argparse
import sys
from fnmatch import fnmatch
from pathlib import Path

from si_hf.sustainability import (
    STATE_TEXT,
    STATES,
    Law,
    collapsed_after,
    corruption_of,
    distinct_runs,
    fit_law,
    judged,
    plot_law,
    plot_phases,
    read_runs,
    vectors,
)

TOLERANCE = 2  # rounds a predicted collapse may be off and still count as a hit


def start_round(corruption, clean_start: int = 1, skip: int = 0) -> int:
    """Where a prediction starts: `skip` rounds after the corrupted round of a run that has one
    (`corruption_of`), else after `clean_start`."""
    return (corruption[0] if corruption else clean_start) + skip


def outcome_text(n: int | None) -> str:
    return "sustains" if n is None else f"collapses after {n}"


def is_hit(predicted: int | None, measured: int | None) -> bool:
    if predicted is None or measured is None:
        return predicted is measured
    return abs(predicted - measured) <= TOLERANCE


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("directories", nargs="+")
    p.add_argument("--state", choices=sorted(STATES), default="next_level", help="the error the law carries")
    p.add_argument("--holdout", nargs="+", default=[], help="runs (fnmatch patterns) left out of the fit, predicted")
    p.add_argument("--collapse_accuracy", type=float, default=0.5)
    p.add_argument("--bounds", action="store_true", help="fit on rounds at no error or every error too")
    p.add_argument("--law", help="score every run against this saved law (--save) instead of fitting one")
    p.add_argument("--start_round", type=int, default=1, help="where runs without a corruption start")
    p.add_argument("--skip_rounds", type=int, default=0, help="every run starts this many rounds later")
    p.add_argument("--save", help="write the law as JSON here (a recipe's sustainability_law)")
    p.add_argument("--plot", help="write the measured transitions, the law and its fixed point as a PNG here")
    p.add_argument("--phases", help="write the phase diagram (mode x fraction -> outcome) as a PNG here")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    runs = distinct_runs({d if name == "." else f"{d}/{name}": records
                          for d in args.directories for name, records in read_runs(d).items()})
    if not runs:
        print(f"error: no finished run under {', '.join(args.directories)}", file=sys.stderr)
        return 2
    if args.law and (args.holdout or args.bounds):
        print("error: --law scores every run against a saved law and fits nothing: --holdout and --bounds "
              "do not apply", file=sys.stderr)
        return 2
    try:
        saved = Law.load(args.law) if args.law else None
    except (OSError, ValueError) as err:
        print(f"error: --law: {err}", file=sys.stderr)
        return 2
    state_name = saved.state if saved else args.state
    held = {name for name in runs if saved or any(fnmatch(name, pattern) for pattern in args.holdout)}
    state = {name: vectors(records, state_name) for name, records in runs.items()}
    corruptions = {name: corruption_of(records) for name, records in runs.items()}
    starts = {name: start_round(corruptions[name], args.start_round, args.skip_rounds) for name in runs}
    tails = {name: state[name][starts[name]:] for name in runs}
    for name, records in runs.items():
        accs = " ".join("-" if e is None else f"{1 - e:.3f}" for e in judged(state[name]))
        print(f"{name}{' (held out)' if name in held else ''}: {STATE_TEXT[state_name]} {accs} | "
              f"frontier {' '.join(str(r.frontier) for r in records)}")
    try:
        law = saved or fit_law([tail for name, tail in tails.items() if name not in held], state_name,
                               bounds=args.bounds)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print_law(law, "saved in " + args.law if saved else "fitted")
    outcomes = [judge(name, runs[name], corruptions[name], starts[name], tails[name], law, args.collapse_accuracy,
                      name in held) for name in runs]
    if held:
        hits = sum(o["hit"] for o in outcomes if o.get("held_out"))
        print(f"held out: {hits} of {len(held)} predicted right")
    if args.save:
        law.save(args.save)
    if args.plot:
        Path(args.plot).write_bytes(plot_law(law, [t for n, t in tails.items() if n not in held],
                                             [t for n, t in tails.items() if n in held]))
    if args.phases:
        Path(args.phases).write_bytes(plot_phases([o for o in outcomes if "mode" in o]))
    return 0


def print_law(law, origin):
    names = ["e"] if law.dims == 1 else [f"e{i + 1}" for i in range(law.dims)]
    for name, row, spread in zip(names, law.coefficients, law.stderr):
        terms = " + ".join(f"{c:.3f} (+-{s:.3f}) logit {n}" for c, s, n in zip(row[1:], spread[1:], names))
        print(f"law ({law.state}, {origin}): logit {name}' = {row[0]:.3f} (+-{spread[0]:.3f}) + {terms}")
    growth = f"; growth a round (eigenvalues): {', '.join(f'{g:.3f}' for g in law.growth())}" if law.dims > 1 else ""
    print(f"rmse {law.rmse:.4f} on {law.transitions} transitions{growth}")
    points = ", ".join(f"error {e:.3f} ({'stable' if stable else 'critical'})" for e, stable in law.fixed_points())
    critical = law.critical_accuracy()
    low, high = law.critical_range or (None, None)
    spread = f" (bootstrap 5-95%: {low:.3f}-{high:.3f})" if law.critical_range else ""
    print(f"fixed point: {points or 'none inside (0, 1)'}; critical accuracy: "
          f"{'none' if critical is None else f'{critical:.3f}{spread}'}")


def judge(name, records, corruption, start, tail, law, collapse_accuracy, held_out) -> dict:
    """What the law predicts for a run from its start round, against what happened; printed."""
    first = tail[0] if tail else None
    if first is None:
        print(f"{name}: no state at its start round; nothing predicted")
        return {"hit": False, "held_out": held_out}
    predicted = law.predict(first, len(tail) - 1, collapse_accuracy)
    measured = collapsed_after(judged(tail), collapse_accuracy)
    hit = is_hit(predicted, measured)
    print(f"{name}: from round {start}, predicted {outcome_text(predicted)}, "
          f"measured {outcome_text(measured)} over {len(tail) - 1} rounds: {'hit' if hit else 'miss'}"
          f"{' (held out)' if held_out else ''}; frontier {records[start].frontier} -> {records[-1].frontier}")
    outcome = {"hit": hit, "held_out": held_out, "measured": measured, "predicted": predicted}
    if corruption:
        return {**outcome, "mode": corruption[1], "fraction": corruption[2]}
    return {**outcome, "mode": "none", "fraction": 0.0}


if __name__ == "__main__":
    sys.exit(main())
