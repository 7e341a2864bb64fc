"""What shape a multiplication model's answers have past its range: for each (a, b) digit pair, how many
held-out answers are right, how many have the pair's own chain-of-thought shape, and how many have the
shape of the pair with a, b or both one digit shorter (the model answering a problem it has seen instead).

    python scripts/multiplication_shapes.py --model runs/mul-tiny/seed-0/round-0/model --pairs 4x1,1x4

Analysis only: it reads the checkpoint's held-out sets and compares with the truth. The shape is the
answer template of a pair (`cot_template`): digits where digits go, `+ ( ) =` where they go.
"""

import argparse

import si_hf  # noqa: F401  (registers the Auto classes)
from si_hf.evaluation import analysis_arguments, held_out_answers, load_for_analysis
from si_hf.tasks.multiplication import cot_template

COLUMNS = ("problems", "right", "own shape", "a one digit shorter", "b one digit shorter", "both one digit shorter",
           "other")


def shape_of(completion: str, la: int, lb: int) -> str:
    """Which of the pair's own template and its one-digit-shorter neighbours the completion fits."""
    shapes = {"own shape": (la, lb), "a one digit shorter": (la - 1, lb), "b one digit shorter": (la, lb - 1),
              "both one digit shorter": (la - 1, lb - 1)}
    template = "".join("d" if c.isdigit() else c for c in completion)
    for name, (x, y) in shapes.items():
        if x >= 1 and y >= 1 and template == cot_template(x, y):
            return name
    return "other"


def shape_row(task, problems, completions) -> dict:
    row = dict.fromkeys(COLUMNS, 0)
    for problem, completion in zip(problems, completions):
        row["problems"] += 1
        row["right"] += completion == task.answer(problem)
        row[shape_of(completion, *problem.level)] += 1
    return row


def digit_pairs(text: str) -> list[tuple[int, int]]:
    try:
        pairs = [tuple(int(x) for x in name.split("x")) for name in text.split(",")]
    except ValueError:
        pairs = []
    if not pairs or any(len(p) != 2 or min(p) < 1 for p in pairs):
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of pairs such as 4x1,1x4")
    return pairs


def main(argv=None):
    parser = analysis_arguments(__doc__, eval_size=200)
    parser.add_argument("--pairs", required=True, type=digit_pairs, help="comma-separated pairs, e.g. 4x1,1x4")
    args = parser.parse_args(argv)
    model, tokenizer, task = load_for_analysis(args.model, args.num_threads)
    if task.name != "multiplication":
        raise SystemExit(f"{task.name} is not multiplication")
    print("| pair | " + " | ".join(COLUMNS) + " |\n|" + "---|" * (len(COLUMNS) + 1))
    for la, lb in args.pairs:
        problems, answers = held_out_answers(model, tokenizer, task, (la, lb), args.eval_size)
        row = shape_row(task, problems, answers)
        print(f"| {la}x{lb} | " + " | ".join(str(v) for v in row.values()) + " |")


if __name__ == "__main__":
    main()
