"""Unsupervised label filters: pure functions that never see the true answer.

A filter takes the task and a list of `Label`s and returns a keep-mask (list of bools).
"""

from dataclasses import dataclass

from .tasks import Task


@dataclass(frozen=True)
class Label:
    prompt: str
    completion: str
    finished: bool  # the model emitted EOS within the prompt's length bound


def length_filter(task: Task, labels: list[Label]) -> list[bool]:
    """Keep labels that ended with EOS and whose form is plausible for the prompt."""
    return [lab.finished and task.plausible(lab.prompt, lab.completion) for lab in labels]


FILTERS = {"length": length_filter}


def apply_filters(task: Task, labels: list[Label], names: list[str]) -> tuple[list[bool], list[dict]]:
    """Run the named filters in order; return the final keep-mask and per-filter counts."""
    keep = [True] * len(labels)
    stats = []
    for name in names:
        mask = FILTERS[name](task, labels)
        before = sum(keep)
        keep = [k and m for k, m in zip(keep, mask)]
        stats.append({"filter": name, "in": before, "out": sum(keep)})
    return keep, stats
