"""Copy and reverse a digit string: `s=` -> `s` / `rev(s)`, difficulty = length of s."""

from .base import Problem, Task, random_digits, register_task


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


@register_task
class Copy(_StringTask):
    name = "copy"

    def answer(self, problem):
        return problem.operands[0]


@register_task
class Reverse(_StringTask):
    name = "reverse"

    def answer(self, problem):
        return problem.operands[0][::-1]
