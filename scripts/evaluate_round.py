"""Evaluate a round's checkpoint per level with the shipped `evaluate` metric.

    python scripts/evaluate_round.py --model runs/copy-tiny/round-3/model --levels 1-20 --eval_size 1000

`--model` is a local directory or a Hub repo id (with `--revision round-3`). The task and the seed of
the held-out sets are read from the checkpoint's config unless given.
"""

import argparse
import json
import sys

from transformers import AutoModelForCausalLM, AutoTokenizer

import si_hf  # noqa: F401  (registers the Auto classes)
from si_hf.data import eval_problems
from si_hf.evaluation import evaluate_levels, frontier
from si_hf.tasks import get_task


def parse_levels(text: str) -> list[int]:
    lo, _, hi = text.partition("-")
    lo, hi = int(lo), int(hi or lo)
    if not 1 <= lo <= hi:
        raise argparse.ArgumentTypeError(f"levels must look like 1-20, got {text!r}")
    return list(range(lo, hi + 1))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="checkpoint directory or Hub repo id")
    p.add_argument("--revision", default=None, help="Hub branch, tag or commit (e.g. round-3)")
    p.add_argument("--levels", type=parse_levels, default=parse_levels("1-20"), help="e.g. 1-20")
    p.add_argument("--eval_size", type=int, default=1000, help="held-out problems per level")
    p.add_argument("--task", default=None, help="default: the checkpoint's config.task")
    p.add_argument("--seed", type=int, default=None, help="seed of the held-out sets (default: config.eval_seed)")
    p.add_argument("--threshold", type=float, default=0.99, help="accuracy a level needs for the frontier")
    p.add_argument("--batch_size", type=int, default=1024)
    p.add_argument("--labeler", default="fast", choices=["fast", "generate"])
    p.add_argument("--output", default=None, help="write the table as JSON here")
    args = p.parse_args(argv)

    try:
        model = AutoModelForCausalLM.from_pretrained(args.model, revision=args.revision)
        tokenizer = AutoTokenizer.from_pretrained(args.model, revision=args.revision)
    except OSError as err:
        print(f"error: cannot load a checkpoint from {args.model} (revision {args.revision}): {err}", file=sys.stderr)
        return 2
    task_name = args.task or getattr(model.config, "task", None)
    if task_name is None:
        print("error: the checkpoint does not record its task; pass --task", file=sys.stderr)
        return 2
    task = get_task(task_name)
    seed = args.seed if args.seed is not None else getattr(model.config, "eval_seed", 0)
    eval_sets = {level: eval_problems(task, level, args.eval_size, seed) for level in args.levels}
    result = evaluate_levels(model, tokenizer, task, eval_sets, args.batch_size, args.labeler)
    front = frontier(result["by_level"], args.threshold)
    print(f"{args.model}{'@' + args.revision if args.revision else ''}: task {task_name}, frontier {front}")
    print("| level | problems | exact match |\n|---|---|---|")
    for level, acc in result["by_level"].items():
        print(f"| {level} | {result['count_by_level'][level]} | {acc:.3f} |")
    if args.output:
        with open(args.output, "w") as fh:
            json.dump({"model": args.model, "revision": args.revision, "task": task_name, "frontier": front,
                       "accuracy_by_level": result["by_level"], "count_by_level": result["count_by_level"]}, fh,
                      indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
