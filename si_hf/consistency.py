"""Consistency under the task's structure: a long prompt's label against the same model's answers to
shorter pieces of it (`Task.pieces`, `Task.compose`), for the `pieces` filter and the `compose` step
(which takes that answer as the label), and against its answer to the same problem with the operands
swapped (`Task.swapped`), for the `commute` filter.

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
    decoding = dict(batch_size=batch_size, backend=backend, disable_tqdm=disable_tqdm)
    composed = _compositions(model, tokenizer, task, [lab.prompt for lab in labels], max_piece, decoding, {})
    return [dataclasses.replace(lab, composed=composed[lab.prompt]) for lab in labels]


def _compositions(model, tokenizer, task: Task, prompts: list[str], max_piece: int, decoding: dict,
                  answers: dict, depth: int = 3) -> dict[str, str]:
    """prompt -> the answer its pieces' answers imply ("" when it has no cut or they imply none).

    A piece with a cut of its own (a product one digit past the square, as the swapped problem of
    multiplication's b side is) answers with its composition, `depth` levels down, unless the task reads
    it as answered (`Task.answered_pieces`); it is left without an answer when its composition fails, so
    the prompt is too, unless the task composes around pieces without an answer
    (`Task.composes_around_unfinished`). Other pieces answer with the model; `answers` keeps its answers
    (None: unfinished) for the levels below, so no piece is labeled twice."""
    cut = {q: task.pieces(q, max_piece) for q in dict.fromkeys(prompts)}
    as_answered = {q: set(task.answered_pieces(q, max_piece)) for q, pieces in cut.items() if pieces}
    distinct = list(dict.fromkeys(p for pieces in cut.values() if pieces for p in pieces))
    new = [q for q in distinct if q not in answers]
    answered = greedy_label(model, tokenizer, new, [task.max_answer_len(q) for q in new],
                            desc="labeling pieces", **decoding)
    answers.update({lab.prompt: lab.completion if lab.finished else None for lab in answered})
    nested = list(dict.fromkeys(q for prompt, raw in as_answered.items() for q in cut[prompt] if q not in raw
                                and depth > 1 and task.pieces(q, max_piece) not in (None, [q])))
    inner = _compositions(model, tokenizer, task, nested, max_piece, decoding, answers, depth - 1) if nested else {}
    composed = {}
    for prompt, pieces in cut.items():
        parts = [inner[q] or None if q in inner and q not in as_answered[prompt] else answers[q] for q in pieces or ()]
        usable = pieces and (task.composes_around_unfinished or None not in parts)
        composed[prompt] = (task.compose(prompt, pieces, parts) or "") if usable else ""
    return composed


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
