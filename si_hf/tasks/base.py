"""The task interface: everything the loop needs to know about one algorithmic task."""

import difflib
import random
from dataclasses import dataclass

TASKS: dict[str, type["Task"]] = {}


@dataclass(frozen=True)
class Problem:
    """One instance: its difficulty level and the task-specific operands.

    `level` is an int for most tasks; a task whose difficulty has two axes uses a tuple of ints
    (multiplication: `(digits of a, digits of b)`).
    """

    level: int | tuple[int, ...]
    operands: tuple


class Task:
    """A task family. Subclasses set `name` and implement `sample`, `prompt`, `answer` and the bounds.

    `answer` is the ground truth: it may feed base data, evaluation and analysis columns, never the
    labeling or filtering of self-generated data. `max_answer_len` and `plausible` see the prompt only.
    """

    name: str = ""
    # The tokens the task writes, for `si_hf.tokenization.task_tokenizer`: None for the shared
    # character alphabet (one character = one token), or a tuple of tokens (e.g. maze node labels
    # "1".."99", each one token).
    alphabet: str | tuple[str, ...] | None = None
    # whether levels are (a, b) pairs rather than integers (stored as [a, b] in round datasets)
    pair_levels: bool = False

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

    def num_tokens(self, text: str) -> int:
        """The length of a text in tokens (one character = one token unless the task says otherwise)."""
        return len(text)

    # -- levels: how a run walks and reports difficulty ----------------------------------------
    def round_levels(self, base_max_level: int, k: int) -> list:
        """The levels round k >= 1 labels: by default the one level `base_max_level + k`."""
        if k < 1:
            raise ValueError(f"round_levels is for self-labeling rounds k >= 1, got k={k}")
        return [base_max_level + k]

    def eval_levels(self, min_level: int, max_level: int) -> list:
        """The levels evaluated for a recipe's `eval_min_level`..`eval_max_level`, in report order."""
        return list(range(min_level, max_level + 1))

    def level_name(self, level) -> str:
        """A level as text, for logs, tables and JSON keys (`12`, or `4x5` for a pair)."""
        return "x".join(str(x) for x in level) if isinstance(level, tuple) else str(level)

    def frontier(self, by_level: dict, threshold: float) -> int:
        """The frontier of per-level accuracies: by default `si_hf.evaluation.frontier`, the highest
        level L such that every evaluated level <= L scores >= threshold (0 if none)."""
        from ..evaluation import frontier

        return frontier(by_level, threshold)


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
