"""Consistency under the task's structure: a long prompt's label against the same model's answers to
shorter pieces of it (`Task.pieces`, `Task.compose`), for the `pieces` filter, and against its answer
to the same problem with the operands swapped (`Task.swapped`), for the `commute` filter.

The pieces lie at levels the model is reliable on (at most `max_piece`), so a label that disagrees
with what they put together is most likely wrong. Only the prompts and the model's own outputs are
read; never a true answer.
"""

import dataclasses

from .labeling import Label, greedy_label
from .tasks import Task


def compose_labels(model, tokenizer, task: Task, labels: list[Label], max_piece: int, batch_size: int = 1024,
                   backend: str = "fast", disable_tqdm: bool = True) -> list[Label]:
    """The labels with `composed` filled in, in the same order: the model labels every distinct piece
    once (greedy, like the labels themselves), then the task composes each label's pieces."""
    cut = [task.pieces(lab.prompt, max_piece) if lab.finished else None for lab in labels]
    distinct = list(dict.fromkeys(q for pieces in cut if pieces for q in pieces))
    answered = greedy_label(model, tokenizer, distinct, [task.max_answer_len(q) for q in distinct],
                            batch_size=batch_size, backend=backend, desc="labeling pieces", disable_tqdm=disable_tqdm)
    answers = {lab.prompt: lab for lab in answered}
    composed = []
    for lab, pieces in zip(labels, cut):
        parts = [answers[q] for q in pieces or ()]
        if not pieces or not all(part.finished for part in parts):
            composed.append("")
            continue
        composed.append(task.compose(lab.prompt, pieces, [part.completion for part in parts]) or "")
    return [dataclasses.replace(lab, composed=c) for lab, c in zip(labels, composed)]


def swap_labels(model, tokenizer, task: Task, labels: list[Label], batch_size: int = 1024, backend: str = "fast",
                disable_tqdm: bool = True) -> list[Label]:
    """The labels with `swapped` filled in, in the same order: the model's greedy answer to each distinct
    swapped prompt, labeled once ("" when it did not finish)."""
    swaps = [task.swapped(lab.prompt) for lab in labels]
    distinct = list(dict.fromkeys(swaps))
    answered = greedy_label(model, tokenizer, distinct, [task.max_answer_len(q) for q in distinct],
                            batch_size=batch_size, backend=backend, desc="labeling swapped", disable_tqdm=disable_tqdm)
    answers = {lab.prompt: lab.completion if lab.finished else "" for lab in answered}
    return [dataclasses.replace(lab, swapped=answers[q]) for lab, q in zip(labels, swaps)]
