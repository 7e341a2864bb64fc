"""Copy and reverse a digit string: `s=` -> `s` / `rev(s)`, difficulty = length of s."""

from .base import Problem, Task, cut_points, random_digits, register_task


class _StringTask(Task):
    def sample(self, level, rng):
        return Problem(level, (random_digits(level, rng),))

    def prompt(self, problem):
        return f"{problem.operands[0]}="

    def parse(self, prompt):
        s = prompt[:-1]
        return Problem(len(s), (s,))

    def max_answer_len(self, prompt):
        return len(prompt) - 1

    def plausible(self, prompt, completion):
        return len(completion) == len(prompt) - 1 and completion.isdigit()

    def num_problems(self, level):
        return 10**level

    def pieces(self, prompt, max_piece):
        """s = s1 s2 ... cut into the fewest near-equal pieces of at most max_piece characters."""
        s = prompt[:-1]
        cuts = cut_points(len(s), max_piece)
        if cuts is None:
            return None
        return [f"{s[i:j]}=" for i, j in zip([0, *cuts], [*cuts, len(s)])]

    def compose(self, prompt, pieces, answers):
        if any(not self.plausible(q, a) for q, a in zip(pieces, answers)):
            return None
        return self._join(answers)


@register_task
class Copy(_StringTask):
    name = "copy"

    def answer(self, problem):
        return problem.operands[0]

    @staticmethod
    def _join(answers):  # copy(s1 s2) = copy(s1) copy(s2)
        return "".join(answers)


@register_task
class Reverse(_StringTask):
    name = "reverse"

    def answer(self, problem):
        return problem.operands[0][::-1]

    @staticmethod
    def _join(answers):  # rev(s1 s2) = rev(s2) rev(s1)
        return "".join(reversed(answers))
