"""Per-level exact match on the held-out sets, computed by the shipped `evaluate` metric."""

import argparse
import os

import evaluate
import torch
from accelerate import PartialState
from transformers import AutoTokenizer

from .data import eval_problems
from .distributed import map_split
from .labeling import greedy_label
from .pretrained import load_round_model
from .tasks import Task, get_task
from .tasks.base import frontier  # noqa: F401  (the default frontier, for scripts)

METRIC_PATH = os.path.join(os.path.dirname(__file__), "metrics", "level_exact_match")


def load_metric(path_or_id: str | None = None):
    """The shipped metric, loaded by path (works offline), or the same metric from a Hub Space id."""
    return evaluate.load(path_or_id or METRIC_PATH)


def evaluate_levels(model, tokenizer, task: Task, eval_sets: dict, batch_size=1024,
                    backend="fast", disable_tqdm=False, metric=None) -> dict:
    """Exact match per level, keyed by the levels of `eval_sets` in their order (ints, or pairs)."""
    levels = list(eval_sets)
    problems, positions = [], []
    for position, level in enumerate(levels):
        problems += eval_sets[level]
        positions += [position] * len(eval_sets[level])
    prompts = [task.prompt(p) for p in problems]
    bounds = [task.max_answer_len(q) for q in prompts]
    # With several processes each decodes its share of every level; all of them get every prediction, in
    # order, and compute the same table (si_hf.distributed.map_split).
    quiet = disable_tqdm or not PartialState().is_local_main_process
    labels = map_split(lambda share: greedy_label(model, tokenizer, [prompts[i] for i in share],
                                                  [bounds[i] for i in share], batch_size=batch_size,
                                                  backend=backend, desc="evaluating", disable_tqdm=quiet),
                       range(len(prompts)), positions)
    # The metric groups by an integer: each level's position, mapped back to the level afterwards.
    result = (metric or load_metric()).compute(
        predictions=[lab.completion for lab in labels],
        references=[task.answer(p) for p in problems],
        levels=positions,
    )
    result["by_level"] = {levels[i]: acc for i, acc in result["by_level"].items()}
    result["count_by_level"] = {levels[i]: n for i, n in result["count_by_level"].items()}
    return result


def analysis_arguments(doc: str, eval_size: int) -> argparse.ArgumentParser:
    """The arguments every analysis script of a round's model takes: the model, problems per level and
    threads; `doc`'s first paragraph describes the script."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="a round's model/ directory")
    parser.add_argument("--eval_size", type=int, default=eval_size,
                        help="problems per level (held-out ones unless a script draws fresh ones)")
    parser.add_argument("--num_threads", type=int, default=2)
    return parser


def int_list(text: str) -> list[int]:
    """An argparse type: a comma-separated list of whole numbers, e.g. `6,8`."""
    try:
        return [int(x) for x in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of whole numbers") from None


def load_for_analysis(path, num_threads: int):
    """A round's model, its tokenizer and its task (from the checkpoint's config), on `num_threads` threads."""
    torch.set_num_threads(num_threads)
    model = load_round_model(path)
    return model, AutoTokenizer.from_pretrained(path), get_task(model.config.task)


def held_out_answers(model, tokenizer, task: Task, level, size: int) -> tuple[list, list[str]]:
    """A checkpoint's held-out problems at `level` (its recorded eval seed) and its greedy answers to them,
    for the analysis scripts."""
    problems = eval_problems(task, level, size, model.config.eval_seed)
    prompts = [task.prompt(p) for p in problems]
    labels = greedy_label(model, tokenizer, prompts, [task.max_answer_len(q) for q in prompts], disable_tqdm=True)
    return problems, [label.completion for label in labels]
