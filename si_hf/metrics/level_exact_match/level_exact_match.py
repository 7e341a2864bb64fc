"""Exact match of whole answers, overall and per difficulty level."""

from collections import defaultdict

import datasets
import evaluate

_DESCRIPTION = """
Exact match between each predicted answer and its reference (the whole string, chain of thought
included), reported overall and for each difficulty level.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (list of str): generated answers.
    references (list of str): true answers.
    levels (list of int): the difficulty level of each problem.
Returns:
    exact_match (float): fraction of exact matches over all problems.
    by_level (dict of int -> float): fraction of exact matches at each level.
    count_by_level (dict of int -> int): problems at each level.
Examples:
    >>> metric = evaluate.load("si_hf/metrics/level_exact_match")
    >>> metric.compute(predictions=["12", "3"], references=["12", "4"], levels=[2, 1])
    {'exact_match': 0.5, 'by_level': {1: 0.0, 2: 1.0}, 'count_by_level': {1: 1, 2: 1}}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class LevelExactMatch(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.Value("string"),
                    "references": datasets.Value("string"),
                    "levels": datasets.Value("int64"),
                }
            ),
        )

    def _compute(self, predictions, references, levels):
        hits, counts = defaultdict(int), defaultdict(int)
        for pred, ref, level in zip(predictions, references, levels):
            counts[level] += 1
            hits[level] += int(pred == ref)
        total = sum(counts.values())
        return {
            "exact_match": sum(hits.values()) / total if total else 0.0,
            "by_level": {lvl: hits[lvl] / counts[lvl] for lvl in sorted(counts)},
            "count_by_level": {lvl: counts[lvl] for lvl in sorted(counts)},
        }
