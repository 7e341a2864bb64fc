"""Where a round's addition errors sit: for each level, how many held-out sums are wrong, how many of
those are wrong first by a single carry (the digit off by one), and how many have a run of digit pairs
summing to 9 just below that digit, the place where the carry depends on pairs further down.

    python scripts/addition_errors.py --model runs/fa-base12000/seed-0/round-0/model --levels 6,8

With `--by_nine_run` it prints instead, per level, how often sums are wrong by the longest run of
digit pairs summing to 9 they hold anywhere: whether a model fails only past some run length, which
longer sums hold more often.

    python scripts/addition_errors.py --model runs/fa-base12000/seed-0/round-0/model --levels 8,12 --by_nine_run

Analysis only: it compares the model's answers with the truth on the checkpoint's held-out sets.
Random digits put such a pair below any given place one time in ten.
"""

import si_hf  # noqa: F401  (registers the Auto classes)
from si_hf.evaluation import analysis_arguments, held_out_answers, int_list, load_for_analysis
from si_hf.tasks.addition import longest_nine_run


def nine_run_below(a: int, b: int, place: int) -> int:
    """The number of digit pairs summing to 9 right below `place` (counted from the last digit, 0-based)."""
    run = place - 1
    while run >= 0 and (a // 10**run) % 10 + (b // 10**run) % 10 == 9:
        run -= 1
    return place - 1 - run


def nine_run_rows(problems, completions, truths, cap: int = 5) -> list[dict]:
    """Problems and wrong answers by the sum's longest 9-run (runs of `cap` or more counted together)."""
    rows = {}
    for problem, completion, truth in zip(problems, completions, truths):
        run = min(longest_nine_run(*problem.operands), cap)
        row = rows.setdefault(run, {"longest 9-run": f"{run}+" if run == cap else str(run), "problems": 0, "wrong": 0})
        row["problems"] += 1
        row["wrong"] += completion != truth
    return [rows[run] for run in sorted(rows)]


def error_row(task, problems, completions) -> dict:
    row = {"problems": len(problems), "wrong": 0, "off by one carry": 0, "with a 9-run below": 0}
    for problem, completion in zip(problems, completions):
        truth = task.answer(problem)
        if completion == truth:
            continue
        row["wrong"] += 1
        if len(completion) != len(truth) or not completion.isdigit():
            continue
        first = next(i for i, (x, y) in enumerate(zip(completion, truth)) if x != y)
        if (int(completion[first]) - int(truth[first])) % 10 not in (1, 9):
            continue
        row["off by one carry"] += 1
        place = first if task.name == "reverse_addition" else len(truth) - 1 - first
        row["with a 9-run below"] += nine_run_below(*problem.operands, place) > 0
    return row


def main(argv=None):
    parser = analysis_arguments(__doc__, eval_size=1000)
    parser.add_argument("--levels", required=True, type=int_list, help="comma-separated digit counts, e.g. 6,8")
    parser.add_argument("--by_nine_run", action="store_true",
                        help="count problems and wrong answers by the longest 9-run of each sum")
    args = parser.parse_args(argv)
    model, tokenizer, task = load_for_analysis(args.model, args.num_threads)
    if not task.plants_carry_runs:
        raise SystemExit(f"{task.name} is not an addition task")
    if args.by_nine_run:
        print("| level | longest 9-run | problems | wrong |\n|---|---|---|---|")
    else:
        print("| level | problems | wrong | off by one carry | with a 9-run below |\n|---|---|---|---|---|")
    for level in args.levels:
        problems, answers = held_out_answers(model, tokenizer, task, level, args.eval_size)
        if args.by_nine_run:
            rows = nine_run_rows(problems, answers, [task.answer(p) for p in problems])
        else:
            rows = [error_row(task, problems, answers)]
        for row in rows:
            print(f"| {level} | " + " | ".join(str(v) for v in row.values()) + " |")


if __name__ == "__main__":
    main()
