"""Where a round's addition errors sit: for each level, how many held-out sums are wrong, how many of
those are wrong first by a single carry (the digit off by one), and how many have a run of digit pairs
summing to 9 just below that digit, the place where the carry depends on pairs further down.

    python scripts/addition_errors.py --model runs/fa-base12000/seed-0/round-0/model --levels 6,8

Analysis only: it compares the model's answers with the truth on the checkpoint's held-out sets.
Random digits put such a pair below any given place one time in ten.
"""

import argparse

import si_hf  # noqa: F401  (registers the Auto classes)
from si_hf.evaluation import held_out_answers, load_for_analysis


def nine_run_below(a: int, b: int, place: int) -> int:
    """The number of digit pairs summing to 9 right below `place` (counted from the last digit, 0-based)."""
    run = place - 1
    while run >= 0 and (a // 10**run) % 10 + (b // 10**run) % 10 == 9:
        run -= 1
    return place - 1 - run


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


def digit_counts(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of digit counts") from None


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="a round's model/ directory")
    parser.add_argument("--levels", required=True, type=digit_counts, help="comma-separated digit counts, e.g. 6,8")
    parser.add_argument("--eval_size", type=int, default=1000)
    parser.add_argument("--num_threads", type=int, default=2)
    args = parser.parse_args(argv)
    model, tokenizer, task = load_for_analysis(args.model, args.num_threads)
    if not task.plants_carry_runs:
        raise SystemExit(f"{task.name} is not an addition task")
    print("| level | problems | wrong | off by one carry | with a 9-run below |\n|---|---|---|---|---|")
    for level in args.levels:
        problems, answers = held_out_answers(model, tokenizer, task, level, args.eval_size)
        row = error_row(task, problems, answers)
        print(f"| {level} | " + " | ".join(str(v) for v in row.values()) + " |")


if __name__ == "__main__":
    main()
