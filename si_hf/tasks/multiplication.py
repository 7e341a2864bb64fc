"""Multiplication with a chain of thought, difficulty = the pair (digits of a, digits of b).

Prompt `rev(a)*rev(b)=`. Answer: for each digit b_i of b (least significant first, i = 0..lb-1) the
partial product a*b_i*10^i, reversed and zero-padded to i+la+1 digits, joined by `+`; right after
partial product i, for 1 <= i < lb-1, the running sum a*(b mod 10^(i+1)) in parentheses, reversed and
padded to i+la+1 digits; then `=` and the product, reversed and padded to la+lb digits:

    a=1234, b=567: `4321*765=` -> `83680+040470(876280)+0007160=8769960`

A level is a tuple `(la, lb)`; `sample(n)` with an int n means the square level `(n, n)`.
"""

import functools
import re

from .base import Problem, Task, level_passes, random_number, register_task


def _rev_pad(x: int, width: int) -> str:
    return str(x)[::-1].ljust(width, "0")


def cot_template(la: int, lb: int) -> str:
    """The shape of every answer at level (la, lb): `d` for a digit, other characters verbatim."""
    parts = []
    for i in range(lb):
        part = "d" * (i + la + 1)
        if 1 <= i < lb - 1:
            part += "(" + "d" * (i + la + 1) + ")"
        parts.append(part)
    return "+".join(parts) + "=" + "d" * (la + lb)


def cot_length(la: int, lb: int) -> int:
    """The length of every answer at level (la, lb) (= len(cot_template(la, lb)))."""
    partials = sum(i + la + 1 for i in range(lb))
    running_sums = sum(i + la + 1 + 2 for i in range(1, lb - 1))  # digits and parentheses
    return partials + (lb - 1) + running_sums + 1 + la + lb  # + the `+`s, `=` and the product


@functools.lru_cache(maxsize=4096)
def _template_regex(la: int, lb: int) -> re.Pattern:
    return re.compile("".join("[0-9]" if c == "d" else re.escape(c) for c in cot_template(la, lb)))


def pair_stages(base_max_level: int):
    """The pairs added after a base square 1..B x 1..B, one stage per round:
    (1,B+1)&(B+1,1), (2,B+1)&(B+1,2), ..., (B+1,B+1), then (1,B+2)&(B+2,1), ..."""
    n = base_max_level + 1
    while True:
        for i in range(1, n):
            yield [(i, n), (n, i)]
        yield [(n, n)]
        n += 1


def square_frontier(by_level: dict, threshold: float, counts: dict | None = None) -> int:
    """The largest n such that every evaluated pair (i, j) with max(i, j) <= n passes (`level_passes`;
    0 if none). Pairs not evaluated do not count against it."""
    best = 0
    for n in sorted({max(level) for level in by_level}):
        if any(not level_passes(acc, threshold, (counts or {}).get(level))
               for level, acc in by_level.items() if max(level) == n):
            break
        best = n
    return best


@register_task
class Multiplication(Task):
    name = "multiplication"
    pair_levels = True  # difficulty is the (digits of a, digits of b) pair

    @staticmethod
    def _pair(level) -> tuple[int, int]:
        if isinstance(level, int):
            level = (level, level)
        la, lb = level
        if la < 1 or lb < 1:
            raise ValueError(f"multiplication levels are pairs of positive digit counts, got {level!r}")
        return int(la), int(lb)

    def sample(self, level, rng):
        la, lb = self._pair(level)
        return Problem((la, lb), (random_number(la, rng), random_number(lb, rng)))

    def sample_base(self, min_level, max_level, rng):
        # Base data draws the two operand lengths independently: the square min..max x min..max.
        la, lb = rng.randint(min_level, max_level), rng.randint(min_level, max_level)
        return Problem((la, lb), (random_number(la, rng), random_number(lb, rng)))

    def prompt(self, problem):
        a, b = problem.operands
        return f"{str(a)[::-1]}*{str(b)[::-1]}="

    def answer(self, problem):
        a, b = problem.operands
        la, lb = len(str(a)), len(str(b))
        digits = [int(d) for d in str(b)[::-1]]
        parts = []
        running = 0
        for i, d in enumerate(digits):
            partial = a * d * 10**i
            running += partial
            part = _rev_pad(partial, i + la + 1)
            if 1 <= i < lb - 1:
                part += f"({_rev_pad(running, i + la + 1)})"
            parts.append(part)
        return "+".join(parts) + "=" + _rev_pad(a * b, la + lb)

    @staticmethod
    def _lengths(prompt) -> tuple[int, int]:
        a, b = prompt[:-1].split("*")
        return len(a), len(b)

    def parse(self, prompt):
        a, b = prompt[:-1].split("*")
        return Problem((len(a), len(b)), (int(a[::-1]), int(b[::-1])))

    def max_answer_len(self, prompt):
        # Every answer at a level has the same length, fixed by the operand lengths.
        return cot_length(*self._lengths(prompt))

    def plausible(self, prompt, completion):
        """Full length and the right structure: digits where digits go, `+ ( ) =` where they go."""
        return _template_regex(*self._lengths(prompt)).fullmatch(completion) is not None

    def num_problems(self, level):
        la, lb = self._pair(level)
        return 81 * 10 ** (la - 1) * 10 ** (lb - 1)

    def swapped(self, prompt):
        a, b = prompt[:-1].split("*")
        return f"{b}*{a}="

    def result(self, completion):
        """The product after `=`: the chain of thought of b*a is another one than a*b's."""
        return completion.rpartition("=")[2]

    # -- pair levels ---------------------------------------------------------------------------
    def round_levels(self, base_max_level, k):
        """Round k >= 1 labels the k-th stage of `pair_stages`: (1,B+1)&(B+1,1), then (2,B+1)&(B+1,2), ..."""
        if k < 1:
            raise ValueError(f"round_levels is for self-labeling rounds k >= 1, got k={k}")
        stages = pair_stages(base_max_level)
        for _ in range(k - 1):
            next(stages)
        return next(stages)

    def eval_levels(self, min_level, max_level):
        """Every pair of the square min..max x min..max, row by row."""
        return [(i, j) for i in range(min_level, max_level + 1) for j in range(min_level, max_level + 1)]

    def frontier(self, by_level, threshold, counts=None):
        return square_frontier(by_level, threshold, counts)
