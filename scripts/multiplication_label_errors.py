"""Where a multiplication round's kept labels go wrong, and what the compose step as it is now keeps of
them: per pair, the labels the round trained on, the wrong ones, those whose chain of thought is right
and only the product wrong, and (with --recompose) how many of the same prompts the compose step keeps
when the model that labeled the round labels them again, and how many of those are right.

    python scripts/multiplication_label_errors.py --round_dir runs/mul-tiny/seed-1/round-5 --recompose

Analysis only: it compares with the truth (the round's `correct` column and the true answers), to
study a filter's design; no filter reads it.
"""

import argparse
from pathlib import Path

import yaml
from datasets import load_from_disk

import si_hf  # noqa: F401  (registers the Auto classes)
from si_hf.consistency import compose_labels
from si_hf.evaluation import load_for_analysis
from si_hf.labeling import Label
from si_hf.records import round_dir, round_number
from si_hf.tasks import get_task

COLUMNS = ("kept", "wrong", "only the product wrong", "recomposed", "recomposed right")


def only_the_product_wrong(task, prompt: str, completion: str) -> bool:
    """Whether the completion has the true chain of thought up to `=` and another product after it."""
    truth = task.answer(task.parse(prompt))
    chain, _, product = completion.rpartition("=")
    return chain == truth.rpartition("=")[0] and product != task.result(truth)


def error_row(task, rows: list[dict], recomposed: list[str] | None = None) -> dict:
    """The counts of one pair's kept rows (`prompt`, `completion`, `correct`); `recomposed`: the compose
    step's label for each prompt ("" where it keeps none), or None when not asked."""
    row = dict.fromkeys(COLUMNS, 0)
    for i, r in enumerate(rows):
        row["kept"] += 1
        row["wrong"] += not r["correct"]
        row["only the product wrong"] += only_the_product_wrong(task, r["prompt"], r["completion"])
        if recomposed is not None and recomposed[i]:
            row["recomposed"] += 1
            row["recomposed right"] += recomposed[i] == task.answer(task.parse(r["prompt"]))
    if recomposed is None:
        row["recomposed"] = row["recomposed right"] = "-"
    return row


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--round_dir", required=True, type=Path, help="a finished round k >= 1 of a run")
    parser.add_argument("--recompose", action="store_true", help="relabel with round k-1's model and compose")
    parser.add_argument("--max_piece", type=int, help="the compose step's square (default: the run's base_max_level)")
    parser.add_argument("--num_threads", type=int, default=2)
    args = parser.parse_args(argv)
    k, run = round_number(args.round_dir.name), args.round_dir.parent
    if k is None or not (run / "recipe.yaml").is_file() or not (args.round_dir / "data").is_dir():
        raise SystemExit(f"{args.round_dir} is not a finished round-<k> directory of a run (its data/ and the "
                         "run's recipe.yaml)")
    recipe = yaml.safe_load((run / "recipe.yaml").read_text())
    task = get_task(recipe["task"])
    if task.name != "multiplication" or k < 1:
        raise SystemExit(f"{args.round_dir} is not a self-labeled round (k >= 1) of a multiplication run")
    rows = [r for r in load_from_disk(str(args.round_dir / "data")) if r["round"] == k]
    by_pair: dict[tuple, list[dict]] = {}
    for r in rows:
        by_pair.setdefault(tuple(r["level"]), []).append(r)
    recomposed = {}
    if args.recompose:
        model, tokenizer, _ = load_for_analysis(str(round_dir(run, k - 1) / "model"), args.num_threads)
        labels = compose_labels(model, tokenizer, task, [Label(r["prompt"], r["completion"], True) for r in rows],
                                args.max_piece or recipe["base_max_level"])
        recomposed = {lab.prompt: lab.composed for lab in labels}
    print("| pair | " + " | ".join(COLUMNS) + " |\n|" + "---|" * (len(COLUMNS) + 1))
    for pair, pair_rows in sorted(by_pair.items()):
        again = [recomposed[r["prompt"]] for r in pair_rows] if args.recompose else None
        print(f"| {task.level_name(pair)} | " + " | ".join(str(v) for v in error_row(task, pair_rows, again).values())
              + " |")


if __name__ == "__main__":
    main()
