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
        return self._mul_prompt(*problem.operands)

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

    # -- compositional labels (`Task.pieces`, `Task.compose`) -----------------------------------
    @staticmethod
    def _mul_prompt(a: int, b: int) -> str:
        return f"{str(a)[::-1]}*{str(b)[::-1]}="

    def pieces(self, prompt, max_piece):
        """Smaller products whose answers spell or check this one's, for a pair one digit past a square
        of max_piece (None elsewhere: inside it the model answers itself; further out there is no cut).

        - b one digit longer (la <= max_piece < lb = max_piece + 1): a times each non-zero digit of b
          (the partial products), a times b's low digits (the running sums), all inside the square,
          and the swapped problem b*a for the product.
        - a one digit longer, b one digit (la = max_piece + 1, lb = 1): a cut into high and low parts,
          each times b, at every cut; `compose` takes a cut whose low part does not carry into the high.
        - a one digit longer, b longer (la = max_piece + 1, 2 <= lb <= la): the partial products and
          running sums as for the b side (themselves one digit past the square, composed), and, as the
          model answers them (`answered_pieces`), the problem itself, the swapped one and the bounds
          (`_bounds`): no cut spells the product, so the model's own answer is kept when its chain
          matches the pieces', its product is the swapped problem's and it lies between the bounds.
        """
        a, b = self.parse(prompt).operands
        la, lb = self._lengths(prompt)
        if la == max_piece + 1 and lb == 1 and la > 1:
            products = [(part, b) for m in range(1, la) for part in (a // 10**m, a % 10**m) if part]
        elif (la <= max_piece and lb == max_piece + 1) or (la == max_piece + 1 and 2 <= lb <= la):
            lows = [b % 10 ** (i + 1) for i in range(1, lb - 1)]
            digits = sorted({int(d) for d in str(b)} - {0})
            whole = [(b, a)] if lb > la else self._answered_pairs(a, b)
            products = [*((a, d) for d in digits), *((a, x) for x in lows if x), *whole]
        else:
            return None
        return list(dict.fromkeys(self._mul_prompt(x, y) for x, y in products))

    def compose(self, prompt, pieces, answers):
        """The chain of thought spelled from the pieces' products, by copying digits and zero-padding
        (never a sum). The product comes from the swapped problem, and must end in the digits of the
        running sum below the last partial product; the a side (the problem among its own pieces)
        keeps the model's own answer only when that spelled chain is the answer. a one digit longer
        times one digit: the low part's product must fit in the low part's digits (no carry across
        the cut). None when the answers spell nothing."""
        answered = {self.parse(q).operands: answer for q, answer in zip(pieces, answers) if self.plausible(q, answer)}
        products = {operands: self.result(answer) for operands, answer in answered.items()}
        a, b = self.parse(prompt).operands
        if len(str(b)) == 1:
            return self._across_a_cut(a, b, products)
        chain = self._chain(a, b, products, products.get((b, a), ""))
        if prompt not in pieces:
            return chain
        return chain if chain == answered.get((a, b)) and self._within_bounds(a, b, products) else None

    def largest_piece(self, base_max_level, stages_trained):
        """The largest square trained in full: square n + 1 takes n + 1 stages of `pair_stages`."""
        n = base_max_level
        while stages_trained >= n + 1:
            stages_trained -= n + 1
            n += 1
        return n

    def answered_pieces(self, prompt, max_piece):
        la, lb = self._lengths(prompt)
        if la >= lb > 1:  # the a side checks its own answer against the swapped problem's and the bounds
            return [self._mul_prompt(x, y) for x, y in self._answered_pairs(*self.parse(prompt).operands)]
        return [prompt]

    @classmethod
    def _answered_pairs(cls, a: int, b: int) -> list[tuple[int, int]]:
        """The a side's pieces read as the model answers them: the problem, the swapped one, the bounds."""
        return [(a, b), (b, a), *(pair for side in cls._bounds(a, b) for pair in side)]

    @staticmethod
    def _bounds(a: int, b: int) -> list[tuple[tuple[int, int], tuple[int, int]]]:
        """(low, high) operand pairs whose products bound a*b: 10 * (a//10) * b <= a*b < 10 * (a//10 + 1) * b,
        and the same with b's last digit dropped when b keeps two digits (one digit bounds it loosely). A
        side whose `+ 1` would add a digit (a//10 = 99...9) is left out: its product lies outside the pieces."""
        sides = []
        if len(str(a // 10 + 1)) == len(str(a)) - 1:
            sides.append(((a // 10, b), (a // 10 + 1, b)))
        if len(str(b)) >= 3 and len(str(b // 10 + 1)) == len(str(b)) - 1:
            sides.append(((a, b // 10), (a, b // 10 + 1)))
        return sides

    @classmethod
    def _within_bounds(cls, a: int, b: int, products: dict) -> bool:
        """Whether the product the model wrote for a*b lies between the products its bounds' answers give
        (the model's own numbers, shifted one place and compared; the filter computes no product)."""
        bounds = cls._bounds(a, b)
        pairs = [(a, b), *(pair for side in bounds for pair in side)]
        if any(pair not in products for pair in pairs):
            return False
        value = {pair: int(products[pair][::-1]) for pair in pairs}
        return all(10 * value[low] <= value[(a, b)] < 10 * value[high] for low, high in bounds)

    @staticmethod
    def _chain(a: int, b: int, products: dict, product: str) -> str | None:
        """a*b's chain of thought from the products a*d (each digit d of b), a*(b's low digits) and
        `product`; None when one is missing or the product does not end like the last running sum."""
        la, lb = len(str(a)), len(str(b))

        def times_a(x: int, width: int) -> str | None:  # a * x, reversed, padded to width; None unknown
            known = "0" if x == 0 else products.get((a, x))
            return None if known is None else known.ljust(width, "0")

        partials = [times_a(int(d), la + 1) for d in str(b)[::-1]]
        sums = [times_a(b % 10 ** (i + 1), i + la + 1) for i in range(lb - 1)]
        if len(product) != la + lb or None in partials or None in sums or product[: lb - 1] != sums[-1][: lb - 1]:
            return None
        parts = ["0" * i + p + (f"({sums[i]})" if 1 <= i < lb - 1 else "") for i, p in enumerate(partials)]
        return "+".join(parts) + "=" + product

    @staticmethod
    def _across_a_cut(a: int, b: int, products: dict) -> str | None:
        """a*b for a one-digit b from a cut of a whose low part's product has no carry into the high part."""
        la = len(str(a))
        for m in range(la - 1, 0, -1):  # the cut with the longest low part first
            high, low = products.get((a // 10**m, b)), products.get((a % 10**m, b), "0" * (m + 1))
            if high is not None and (a % 10**m == 0 or (a % 10**m, b) in products) and set(low[m:]) <= {"0"}:
                product = low[:m].ljust(m, "0") + high
                return product + "=" + product
        return None

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
