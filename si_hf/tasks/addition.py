"""Addition, difficulty = operand digits n (the longer operand):

- reverse addition: `rev(a)+rev(b)=` -> `rev(a+b)` zero-padded to n+1 digits;
- forward addition: `a+b=` -> `a+b` plain.
"""

from .base import Problem, Task, cut_points, random_number, register_task


def longest_nine_run(a: int, b: int) -> int:
    """The longest run of places where a's and b's digits sum to 9: the places a carry passes through,
    where a forward sum must look further down to know its digit."""
    longest = run = 0
    while a or b:
        run = run + 1 if a % 10 + b % 10 == 9 else 0
        longest = max(longest, run)
        a, b = a // 10, b // 10
    return longest


class _Addition(Task):
    def sample(self, level, rng):
        return Problem(level, (random_number(level, rng), random_number(level, rng)))

    def sample_base(self, min_level, max_level, rng):
        # Base data draws the two operand lengths independently.
        la, lb = rng.randint(min_level, max_level), rng.randint(min_level, max_level)
        return Problem(max(la, lb), (random_number(la, rng), random_number(lb, rng)))

    def with_carry_run(self, problem, rng):
        """The problem with a run of 1 to m-1 digit pairs summing to 9 planted above its lowest pair
        (m = the shorter operand's digits). Whether such a run carries depends on the pair below it, the
        look-ahead a forward sum needs; random digits hold a run of k such pairs with chance ~10^-k."""
        a, b = (list(str(x)) for x in problem.operands)
        shared = min(len(a), len(b))
        if shared < 2:
            return problem
        k = rng.randint(1, shared - 1)
        start = rng.randint(1, shared - k)
        for place in range(start, start + k):  # the digit worth 10^place
            i, j = len(a) - 1 - place, len(b) - 1 - place
            x = rng.randint(0, 9)
            if (i == 0 and x == 0) or (j == 0 and x == 9):  # keep both leading digits non-zero
                x = rng.randint(1, 8)
            a[i], b[j] = str(x), str(9 - x)
        return Problem(problem.level, (int("".join(a)), int("".join(b))))

    @staticmethod
    def _operands(prompt):
        a, b = prompt[:-1].split("+")
        return a, b

    def max_answer_len(self, prompt):
        a, b = self._operands(prompt)
        return max(len(a), len(b)) + 1

    def num_problems(self, level):
        return (9 * 10 ** (level - 1)) ** 2

    def swapped(self, prompt):
        a, b = self._operands(prompt)
        return f"{b}+{a}="


@register_task
class ReverseAddition(_Addition):
    name = "reverse_addition"

    def prompt(self, problem):
        a, b = problem.operands
        return f"{str(a)[::-1]}+{str(b)[::-1]}="

    def answer(self, problem):
        a, b = problem.operands
        return str(a + b)[::-1].ljust(problem.level + 1, "0")

    def parse(self, prompt):
        a, b = self._operands(prompt)
        return Problem(max(len(a), len(b)), (int(a[::-1]), int(b[::-1])))

    def plausible(self, prompt, completion):
        return len(completion) == self.max_answer_len(prompt) and completion.isdigit()

    def pieces(self, prompt, max_piece):
        """The operands cut at the same places into low-to-high parts of at most max_piece digits.
        A cut falls only where both parts below it end in a non-zero digit, so every piece is a sum
        of numbers without leading zeros, like the data the model learned from."""
        a, b = self._operands(prompt)
        if len(a) != len(b):
            return None
        cuts = cut_points(len(a), max_piece, allowed=lambda j: a[j - 1] != "0" and b[j - 1] != "0")
        if cuts is None:
            return None
        return [f"{a[i:j]}+{b[i:j]}=" for i, j in zip([0, *cuts], [*cuts, len(a)])]

    def compose(self, prompt, pieces, answers):
        """Each part's sum, low part first, plus the carry the part below it reported (the last digit
        of that part's own answer), carried on by hand: a +1 on the model's answer, never a sum."""
        digits, carry = [], 0
        for piece, answer in zip(pieces, answers):
            if not self.plausible(piece, answer):
                return None
            part = [int(d) for d in answer]
            i = 0
            while carry and i < len(part):  # add the carry into the reversed number
                part[i] += 1
                carry = part[i] // 10
                part[i] %= 10
                i += 1
            if carry or part[-1] > 1:  # a part's sum is below 2 * 10^len: its top digit is 0 or 1
                return None
            digits += part[:-1]
            carry = part[-1]
        return "".join(map(str, digits)) + str(carry)


@register_task
class ForwardAddition(_Addition):
    name = "forward_addition"

    def prompt(self, problem):
        a, b = problem.operands
        return f"{a}+{b}="

    def answer(self, problem):
        a, b = problem.operands
        return str(a + b)

    def parse(self, prompt):
        a, b = self._operands(prompt)
        return Problem(max(len(a), len(b)), (int(a), int(b)))

    def plausible(self, prompt, completion):
        """Digits without a leading zero, n or n+1 of them (n = the longer operand's length)."""
        n = self.max_answer_len(prompt) - 1
        return (n <= len(completion) <= n + 1 and completion.isascii() and completion.isdigit()
                and completion[0] != "0")

    def pieces(self, prompt, max_piece):
        """The operands cut at the same places into high-to-low parts of at most max_piece digits. A cut
        falls only where both parts after it begin with a non-zero digit, so every piece is a sum of
        numbers without leading zeros, like the data the model learned from."""
        a, b = self._operands(prompt)
        if len(a) != len(b):
            return None
        cuts = cut_points(len(a), max_piece, allowed=lambda j: a[j] != "0" and b[j] != "0")
        if cuts is None:
            return None
        return [f"{a[i:j]}+{b[i:j]}=" for i, j in zip([0, *cuts], [*cuts, len(a)])]

    def compose(self, prompt, pieces, answers):
        """Low part first: a part's answer plus the carry from the part below it (that part's answer
        one digit longer than its operands: its leading 1), added by hand as a +1 on the model's answer,
        never a sum; every part but the top one keeps its last n digits."""
        composed, carry = "", 0
        for k in range(len(pieces) - 1, -1, -1):
            if not self.plausible(pieces[k], answers[k]):
                return None
            n = len(self._operands(pieces[k])[0])
            answer = str(int(answers[k]) + carry)
            if len(answer) == n + 2 or (len(answer) == n + 1 and answer[0] != "1"):
                return None  # two n-digit numbers and a carry sum below 2 * 10^n
            if k == 0:
                return answer + composed
            carry = len(answer) - n
            composed = answer[carry:] + composed
        return None
