"""Per-level exact match on the held-out sets, computed by the shipped `evaluate` metric."""

import os

import evaluate

from .labeling import greedy_label
from .tasks import Problem, Task

METRIC_PATH = os.path.join(os.path.dirname(__file__), "metrics", "level_exact_match")


def load_metric(path_or_id: str | None = None):
    """The shipped metric, loaded by path (works offline), or the same metric from a Hub Space id."""
    return evaluate.load(path_or_id or METRIC_PATH)


def frontier(by_level: dict[int, float], threshold: float) -> int:
    """The highest level L such that every evaluated level <= L scores >= threshold (0 if none)."""
    best = 0
    for level in sorted(by_level):
        if by_level[level] < threshold:
            break
        best = level
    return best


def evaluate_levels(model, tokenizer, task: Task, eval_sets: dict[int, list[Problem]], batch_size=1024,
                    backend="fast", disable_tqdm=False, metric=None) -> dict:
    problems = [p for level in sorted(eval_sets) for p in eval_sets[level]]
    prompts = [task.prompt(p) for p in problems]
    labels = greedy_label(model, tokenizer, prompts, [task.max_answer_len(q) for q in prompts],
                          batch_size=batch_size, backend=backend, desc="evaluating", disable_tqdm=disable_tqdm)
    result = (metric or load_metric()).compute(
        predictions=[lab.completion for lab in labels],
        references=[task.answer(p) for p in problems],
        levels=[p.level for p in problems],
    )
    return result
