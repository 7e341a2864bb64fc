"""Download a round, evaluate it per level with the shipped metric, print and save the table.

    python scripts/evaluate_round.py --model my-name/copy-tiny --revision round-3
    python scripts/evaluate_round.py --model runs/copy-tiny/round-3/model --levels 1-20 --eval_size 1000

`--model` is a local round (its `model/` directory) or a Hub repo id with `--revision round-<k>`
(a branch, tag or commit). The task, the seed of the held-out sets and, unless given, the levels are
read from the checkpoint and the round's eval.json. `--levels lo-hi` evaluates the task's levels for
that range (for multiplication, every pair of the square lo..hi x lo..hi); a comma-separated list of
level names (`3,7`, or `4x5,5x4` for multiplication) evaluates exactly those. `--metric` loads the
metric by path or from a Hub Space (`evaluate.load`); the default is the metric shipped in si_hf. The
table is written as JSON and Markdown under `--output_dir`.
"""

import argparse
import json
import re
import sys
from pathlib import Path

from transformers import AutoModelForCausalLM, AutoTokenizer

import si_hf  # noqa: F401  (registers the Auto classes)
from si_hf.data import eval_problems
from si_hf.evaluation import evaluate_levels, load_metric
from si_hf.records import RECORD_FILE, RoundRecord
from si_hf.tasks import get_task


def parse_level(task, name: str):
    """A level from its name as `task.level_name` writes it: `12`, or `4x5` -> (4, 5) for a pair task."""
    try:
        level = tuple(int(x) for x in name.split("x")) if task.pair_levels else int(name)
    except ValueError:
        level = None
    if level is None or (task.pair_levels and len(level) != 2) or task.level_name(level) != name:
        example = "4x5" if task.pair_levels else "12"
        raise ValueError(f"{task.name}: {name!r} is not a level name (like {example})")
    return level


def parse_levels(task, text: str) -> list:
    """`lo-hi` (or one number): the task's evaluation levels for that range (`task.eval_levels`);
    otherwise a comma-separated list of level names (`3,7`; `4x5,5x4` for a pair task)."""
    if re.fullmatch(r"\d+(-\d+)?", text.strip()):
        lo, _, hi = text.strip().partition("-")
        lo, hi = int(lo), int(hi or lo)
        if not 1 <= lo <= hi:
            raise ValueError(f"levels must look like 1-20, got {text!r}")
        return task.eval_levels(lo, hi)
    return [parse_level(task, name.strip()) for name in text.split(",")]


def recorded_levels(task, recorded: RoundRecord | None) -> list:
    """The levels of a round's eval.json: the task's `eval_levels` over the range they span (else 1-20)."""
    levels = [parse_level(task, name) for name in (recorded.accuracy_by_level if recorded else {})]
    if not levels:
        return task.eval_levels(1, 20)
    bounds = [x for level in levels for x in (level if isinstance(level, tuple) else (level,))]
    return task.eval_levels(min(bounds), max(bounds))


def fetch(model: str, revision: str | None) -> tuple[Path, str | None]:
    """A local directory holding the checkpoint, and the commit it was downloaded at (None if local)."""
    if Path(model).is_dir():
        return Path(model), None
    from huggingface_hub import snapshot_download

    path = Path(snapshot_download(model, revision=revision))
    return path, path.name  # the snapshot folder is named after the commit


def recorded_eval(path: Path) -> RoundRecord | None:
    """The eval.json recorded when the round was trained: in a Hub snapshot, or beside a local model/."""
    for candidate in (path / RECORD_FILE, path.parent / RECORD_FILE):
        if candidate.is_file():
            return RoundRecord.from_json(json.loads(candidate.read_text()))
    return None


def table(task, result: dict, recorded: RoundRecord | None) -> str:
    head = "| level | problems | exact match |" + (" recorded in training |" if recorded else "")
    lines = [head, "|---|---|---|" + ("---|" if recorded else "")]
    for level, acc in result["by_level"].items():
        row = f"| {task.level_name(level)} | {result['count_by_level'][level]} | {acc:.3f} |"
        if recorded:
            old = recorded.accuracy_by_level.get(task.level_name(level))
            row += f" {'' if old is None else f'{old:.3f}'} |"
        lines.append(row)
    return "\n".join(lines) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="round model directory or Hub repo id")
    p.add_argument("--revision", default=None, help="Hub branch, tag or commit (e.g. round-3)")
    p.add_argument("--levels", default=None,
                   help="e.g. 1-20, or level names such as 3,7 or 4x5,5x4 (default: the levels recorded for the "
                        "round, else 1-20)")
    p.add_argument("--eval_size", type=int, default=1000, help="held-out problems per level")
    p.add_argument("--task", default=None, help="default: the checkpoint's config.task")
    p.add_argument("--seed", type=int, default=None, help="seed of the held-out sets (default: config.eval_seed)")
    p.add_argument("--threshold", type=float, default=0.99, help="accuracy a level needs for the frontier")
    p.add_argument("--batch_size", type=int, default=1024)
    p.add_argument("--labeler", default="fast", choices=["fast", "generate"])
    p.add_argument("--metric", default=None,
                   help="metric directory or Hub Space id for evaluate.load (default: the shipped one)")
    p.add_argument("--output_dir", default="evaluations", help="where the table is saved (JSON and Markdown)")
    args = p.parse_args(argv)

    try:
        path, commit = fetch(args.model, args.revision)
        model = AutoModelForCausalLM.from_pretrained(path)
        tokenizer = AutoTokenizer.from_pretrained(path)
    except OSError as err:  # the Hub's errors (missing repo, revision or file) are OSErrors too
        print(f"error: cannot load a checkpoint from {args.model} (revision {args.revision}): {err}", file=sys.stderr)
        return 2
    name = args.model + (f"@{args.revision}" if args.revision else "")
    if commit:
        print(f"Downloaded {name} (commit {commit[:12]}) to {path}")
    task_name = args.task or getattr(model.config, "task", None)
    if task_name is None:
        print("error: the checkpoint does not record its task; pass --task", file=sys.stderr)
        return 2
    task = get_task(task_name)
    if args.levels is not None:
        try:
            levels = parse_levels(task, args.levels)
        except ValueError as err:
            p.error(f"argument --levels: {err}")
    try:
        recorded = recorded_eval(path)
        levels = recorded_levels(task, recorded) if args.levels is None else levels
    except ValueError as err:
        print(f"error: the recorded eval.json: {err}", file=sys.stderr)
        return 2
    seed = args.seed if args.seed is not None else getattr(model.config, "eval_seed", 0)
    eval_sets = {level: eval_problems(task, level, args.eval_size, seed) for level in levels}
    result = evaluate_levels(model, tokenizer, task, eval_sets, args.batch_size, args.labeler,
                             metric=load_metric(args.metric))
    front = task.frontier(result["by_level"], args.threshold)
    text = table(task, result, recorded)
    print(f"{name}: task {task_name}, frontier {front}")
    print(text, end="")

    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = re.sub(r"[^\w.@-]+", "--", name.strip("/"))
    summary = {"model": args.model, "revision": args.revision, "commit": commit, "task": task_name,
               "eval_seed": seed, "eval_size": args.eval_size, "frontier": front,
               "exact_match": result["exact_match"],
               "accuracy_by_level": {task.level_name(lvl): acc for lvl, acc in result["by_level"].items()},
               "count_by_level": {task.level_name(lvl): n for lvl, n in result["count_by_level"].items()}}
    (out / f"{stem}.json").write_text(json.dumps(summary, indent=2) + "\n")
    (out / f"{stem}.md").write_text(f"# {name}\n\ntask {task_name}, frontier {front}\n\n{text}")
    print(f"Saved {out / stem}.json and .md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
