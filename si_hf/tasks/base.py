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
    # Whether `compose` takes None for a piece the model did not finish and composes without it (the
    # maze's cuts answer the same path many times over); otherwise such a prompt gets no composition.
    composes_around_unfinished: bool = False

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

    def frontier(self, by_level: dict, threshold: float, counts: dict | None = None) -> int:
        """The frontier of per-level accuracies: by default `frontier` below."""
        return frontier(by_level, threshold, counts)

    # -- consistency under the task's structure (si_hf.consistency) ------------------------------
    def pieces(self, prompt: str, max_piece: int) -> list[str] | None:
        """Shorter prompts, each at a level <= max_piece, whose answers determine this prompt's answer
        through `compose`; None when the prompt has no cut the task allows. Tasks without such a
        structure raise NotImplementedError (the `pieces` filter is then refused for them)."""
        raise NotImplementedError(f"task {self.name!r} has no pieces")

    def compose(self, prompt: str, pieces: list[str], answers: list[str]) -> str | None:
        """The answer to `prompt` that the answers to its `pieces` (one each, in order) imply, or None
        when they cannot make one (an answer of the wrong form). Reads only the prompts and answers."""
        raise NotImplementedError(f"task {self.name!r} has no pieces")

    def largest_piece(self, base_max_level: int, stages_trained: int) -> int:
        """The default `max_piece` once `stages_trained` stages of rounds are trained: the base range,
        whose problems the model learned from their true answers."""
        return base_max_level

    def answered_pieces(self, prompt: str, max_piece: int) -> list[str]:
        """Those of `pieces` read as the model answers them even where they have pieces of their own
        (by default the prompt itself, where it is among its pieces); the others answer with their own
        composition."""
        return [prompt]

    @property
    def has_pieces(self) -> bool:
        return type(self).pieces is not Task.pieces

    # -- carry runs in the base data (the recipe's `base_carry_runs`) ------------------------------
    def with_carry_run(self, problem: Problem, rng: random.Random) -> Problem:
        """The problem with a long carry chain planted in it (addition only)."""
        raise NotImplementedError(f"task {self.name!r} has no carries to plant")

    @property
    def plants_carry_runs(self) -> bool:
        return type(self).with_carry_run is not Task.with_carry_run

    @property
    def draws_lengths_apart(self) -> bool:
        """Whether the base draws differ from the held-out sets' (each operand's length drawn on its own)."""
        return type(self).sample_base is not Task.sample_base

    # -- commutativity (the `commute` filter) ---------------------------------------------------
    def swapped(self, prompt: str) -> str | None:
        """The same problem with its operands in the other order, whose result is this one's; None for a
        task whose operation does not commute (the `commute` filter is then refused for it)."""
        return None

    def result(self, completion: str) -> str:
        """The part of an answer that must not depend on the operands' order (by default all of it)."""
        return completion

    @property
    def commutes(self) -> bool:
        return type(self).swapped is not Task.swapped


def frontier(by_level: dict, threshold: float, counts: dict | None = None) -> int:
    """The highest level L such that every evaluated level <= L passes (`level_passes`; 0 if none).
    `counts` (problems per level) lets a level too small to measure the threshold pass."""
    best = 0
    for level in sorted(by_level):
        if not level_passes(by_level[level], threshold, (counts or {}).get(level)):
            break
        best = level
    return best


def level_passes(accuracy: float, threshold: float, count: int | None = None) -> bool:
    """Whether a level scores at the threshold. A level with fewer problems than the threshold can
    resolve (one wrong answer alone falls below it: under 1 / (1 - threshold) problems, e.g. 5 at
    0.99) passes with at most one wrong answer, so a tiny level cannot break the frontier."""
    if count and threshold < 1.0 and count * (1.0 - threshold) < 1.0:
        return accuracy * count >= count - 1 - 1e-9
    return accuracy >= threshold


def cut_points(n: int, max_piece: int, allowed=lambda j: True) -> list[int] | None:
    """Positions 0 < j1 < ... < n cutting a length-n string into the fewest pieces of at most
    `max_piece`, as equal as `allowed(j)` (may a cut fall before position j?) lets them be; None
    when no such cut exists with one piece more than the fewest either."""
    fewest = -(-n // max_piece)
    for pieces in (fewest, fewest + 1):
        cuts, prev = [], 0
        for i in range(pieces - 1, 0, -1):  # i pieces remain after this cut
            target = prev + round((n - prev) / (i + 1))
            options = [j for j in range(prev + 1, min(prev + max_piece, n - 1) + 1)
                       if n - j <= i * max_piece and allowed(j)]
            if not options:
                break
            prev = min(options, key=lambda j: (abs(j - target), j))
            cuts.append(prev)
        else:
            if n - prev <= max_piece:
                return cuts
    return None


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
