"""Reverse addition: `rev(a)+rev(b)=` -> `rev(a+b)` zero-padded to n+1 digits, n = longer operand."""

from .base import Problem, Task, random_number, register_task


@register_task
class ReverseAddition(Task):
    name = "reverse_addition"

    def sample(self, level, rng):
        return Problem(level, (random_number(level, rng), random_number(level, rng)))

    def sample_base(self, min_level, max_level, rng):
        # Base data draws the two operand lengths independently.
        la, lb = rng.randint(min_level, max_level), rng.randint(min_level, max_level)
        return Problem(max(la, lb), (random_number(la, rng), random_number(lb, rng)))

    def prompt(self, problem):
        a, b = problem.operands
        return f"{str(a)[::-1]}+{str(b)[::-1]}="

    def answer(self, problem):
        a, b = problem.operands
        return str(a + b)[::-1].ljust(problem.level + 1, "0")

    def parse(self, prompt):
        a, b = prompt[:-1].split("+")
        return Problem(max(len(a), len(b)), (int(a[::-1]), int(b[::-1])))

    def max_answer_len(self, prompt):
        a, b = prompt[:-1].split("+")
        return max(len(a), len(b)) + 1

    def plausible(self, prompt, completion):
        return len(completion) == self.max_answer_len(prompt) and completion.isdigit()

    def num_problems(self, level):
        return (9 * 10 ** (level - 1)) ** 2
