"""The task interface: everything the loop needs to know about one algorithmic task."""

import difflib
import random
from dataclasses import dataclass

TASKS: dict[str, type["Task"]] = {}


@dataclass(frozen=True)
class Problem:
    """One instance: its difficulty level and the task-specific operands."""

    level: int
    operands: tuple


class Task:
    """A task family. Subclasses set `name` and implement `sample`, `prompt`, `answer` and the bounds.

    `answer` is the ground truth: it may feed base data, evaluation and analysis columns, never the
    labeling or filtering of self-generated data. `max_answer_len` and `plausible` see the prompt only.
    """

    name: str = ""

    def sample(self, level: int, rng: random.Random) -> Problem:
        """A problem at exactly `level` (used for evaluation and self-labeling)."""
        raise NotImplementedError

    def sample_base(self, min_level: int, max_level: int, rng: random.Random) -> Problem:
        """A base-training problem from the range: a level drawn uniformly, then the instance."""
        return self.sample(rng.randint(min_level, max_level), rng)

    def prompt(self, problem: Problem) -> str:
        raise NotImplementedError

    def answer(self, problem: Problem) -> str:
        raise NotImplementedError

    def parse(self, prompt: str) -> Problem:
        """The problem a prompt states (inverse of `prompt`)."""
        raise NotImplementedError

    def max_answer_len(self, prompt: str) -> int:
        """An upper bound on the answer's length in tokens, from the prompt alone."""
        raise NotImplementedError

    def plausible(self, prompt: str, completion: str) -> bool:
        """Whether a completion's form fits its prompt (length, alphabet); never checks its value."""
        raise NotImplementedError

    def num_problems(self, level: int) -> int:
        """How many distinct problems exist at `level` (bounds the held-out eval set)."""
        raise NotImplementedError


def register_task(cls):
    TASKS[cls.name] = cls
    return cls


def get_task(name: str) -> Task:
    if name not in TASKS:
        close = difflib.get_close_matches(name, TASKS, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"Unknown task {name!r}.{hint} Known tasks: {', '.join(sorted(TASKS))}.")
    return TASKS[name]()


def random_digits(n: int, rng: random.Random) -> str:
    return "".join(rng.choice("0123456789") for _ in range(n))


def random_number(n: int, rng: random.Random) -> int:
    """A number of exactly n digits (non-zero leading digit)."""
    return rng.randint(10 ** (n - 1), 10**n - 1)
