"""The frontier: a level too small to measure the threshold cannot break it (si_hf.tasks.base)."""

import pytest

from si_hf.tasks import get_task
from si_hf.tasks.base import frontier, level_passes


def test_a_tiny_level_passes_with_one_wrong_answer():
    assert level_passes(0.8, 0.99, 5)  # 4 of 5: one error is all 5 problems can show at 0.99
    assert not level_passes(0.6, 0.99, 5)  # two errors
    assert level_passes(0.98, 0.99, 50)  # 49 of 50
    assert not level_passes(0.98, 0.99, 100)  # 100 problems resolve 0.99: 98 of 100 fails
    assert level_passes(0.99, 0.99, 100)
    assert not level_passes(0.8, 0.99)  # without a count the threshold is plain
    assert not level_passes(0.8, 1.0, 5)  # a threshold of 1 is resolved by any size


def test_frontier_with_counts():
    by_level = {1: 0.8, 2: 1.0, 3: 0.996, 4: 0.97, 5: 1.0}
    counts = {1: 5, 2: 50, 3: 500, 4: 1000, 5: 1000}
    assert frontier(by_level, 0.99) == 0  # one of five length-1 problems wrong used to mean frontier 0
    assert frontier(by_level, 0.99, counts) == 3
    assert get_task("copy").frontier(by_level, 0.99, counts) == 3
    assert frontier({1: 0.6, 2: 1.0}, 0.99, {1: 5, 2: 50}) == 0  # two of five wrong is a real failure


def test_square_frontier_with_counts():
    task = get_task("multiplication")
    by_level = {(1, 1): 0.8, (1, 2): 1.0, (2, 1): 1.0, (2, 2): 0.9}
    counts = {(1, 1): 5, (1, 2): 100, (2, 1): 100, (2, 2): 100}
    assert task.frontier(by_level, 0.99) == 0
    assert task.frontier(by_level, 0.99, counts) == 1
