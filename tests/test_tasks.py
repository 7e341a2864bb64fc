"""Tasks: the exact formats of SPEC.md, parse/prompt inverses, bounds, plausibility, sampling."""

import random

import pytest

from si_hf.tasks import TASKS, Problem, Task, get_task, register_task

TASK_NAMES = ["copy", "reverse", "reverse_addition"]


def test_registry_lists_the_tasks():
    assert set(TASK_NAMES) <= set(TASKS)
    for name in TASK_NAMES:
        task = get_task(name)
        assert isinstance(task, Task) and task.name == name


# -- the SPEC examples ---------------------------------------------------------------------------

def test_reverse_addition_spec_example():
    task = get_task("reverse_addition")
    problem = Problem(5, (12345, 987))
    assert task.prompt(problem) == "54321+789="
    assert task.answer(problem) == "233310"
    assert task.parse("54321+789=") == problem
    assert task.max_answer_len("54321+789=") == 6


@pytest.mark.parametrize("a,b,level,prompt,answer", [
    (1, 2, 1, "1+2=", "30"),            # padded to n+1 digits
    (5, 5, 1, "5+5=", "01"),            # carry fills the extra digit
    (99, 1, 2, "99+1=", "001"),         # operands of different lengths: n is the longer one
    (999, 999, 3, "999+999=", "8991"),
    (10, 90, 2, "01+09=", "001"),       # reversed operands keep their trailing zeros
])
def test_reverse_addition_small_cases(a, b, level, prompt, answer):
    task = get_task("reverse_addition")
    problem = Problem(level, (a, b))
    assert task.prompt(problem) == prompt
    assert task.answer(problem) == answer
    assert task.parse(prompt) == problem
    assert int(answer[::-1]) == a + b


def test_copy_spec_example():
    task = get_task("copy")
    problem = Problem(5, ("12345",))
    assert task.prompt(problem) == "12345="
    assert task.answer(problem) == "12345"
    assert task.parse("12345=") == problem


def test_reverse_spec_example():
    task = get_task("reverse")
    problem = Problem(5, ("12345",))
    assert task.prompt(problem) == "12345="
    assert task.answer(problem) == "54321"
    assert task.parse("12345=") == problem


# -- properties over many seeded samples ---------------------------------------------------------

@pytest.mark.parametrize("name", TASK_NAMES)
def test_parse_inverts_prompt_and_bounds_hold(name):
    task = get_task(name)
    rng = random.Random(1234)
    for _ in range(300):
        level = rng.randint(1, 25)
        problem = task.sample(level, rng)
        prompt, answer = task.prompt(problem), task.answer(problem)
        assert problem.level == level
        assert task.parse(prompt) == problem
        assert prompt.endswith("=")
        assert task.max_answer_len(prompt) >= len(answer)
        assert task.max_answer_len(prompt) == len(answer)  # fixed-length answers for these tasks
        assert answer.isdigit()
        assert task.plausible(prompt, answer)


@pytest.mark.parametrize("name", TASK_NAMES)
def test_base_sampling_parse_round_trip(name):
    task = get_task(name)
    rng = random.Random(7)
    for _ in range(300):
        problem = task.sample_base(1, 6, rng)
        prompt = task.prompt(problem)
        assert 1 <= problem.level <= 6
        assert task.parse(prompt) == problem
        assert len(task.answer(problem)) == task.max_answer_len(prompt)


@pytest.mark.parametrize("name", TASK_NAMES)
def test_sample_at_level_has_that_level(name):
    task = get_task(name)
    rng = random.Random(0)
    for level in [1, 2, 3, 10, 17, 40]:
        for _ in range(20):
            problem = task.sample(level, rng)
            assert problem.level == level
            if name == "reverse_addition":
                a, b = problem.operands
                assert len(str(a)) == len(str(b)) == level  # equal lengths, non-zero leading digit
            else:
                assert len(problem.operands[0]) == level


def test_reverse_addition_base_draws_lengths_independently():
    task = get_task("reverse_addition")
    rng = random.Random(0)
    pairs = set()
    for _ in range(500):
        problem = task.sample_base(1, 5, rng)
        la, lb = (len(str(x)) for x in problem.operands)
        assert problem.level == max(la, lb)
        assert 1 <= la <= 5 and 1 <= lb <= 5
        pairs.add((la, lb))
    assert any(la < lb for la, lb in pairs) and any(la > lb for la, lb in pairs)
    assert any(la == lb for la, lb in pairs)
    assert len(pairs) == 25  # every combination of lengths shows up


@pytest.mark.parametrize("name", TASK_NAMES)
def test_base_sampling_covers_the_level_range(name):
    task = get_task(name)
    rng = random.Random(3)
    levels = {task.sample_base(2, 6, rng).level for _ in range(400)}
    assert levels == {2, 3, 4, 5, 6}


@pytest.mark.parametrize("name", TASK_NAMES)
def test_seeded_sampling_is_deterministic(name):
    task = get_task(name)

    def draw(seed):
        rng = random.Random(seed)
        return [task.prompt(task.sample_base(1, 8, rng)) for _ in range(50)] + [
            task.prompt(task.sample(9, rng)) for _ in range(50)]

    assert draw(5) == draw(5)
    assert draw(5) != draw(6)


# -- plausibility (form only) --------------------------------------------------------------------

def test_reverse_addition_plausible():
    task = get_task("reverse_addition")
    prompt = "54321+789="
    assert task.plausible(prompt, "233310")
    assert task.plausible(prompt, "999999")      # form only: a wrong value of the right form passes
    assert not task.plausible(prompt, "23331")    # too short
    assert not task.plausible(prompt, "2333100")  # too long
    assert not task.plausible(prompt, "23331a")   # not a digit
    assert not task.plausible(prompt, "2333+0")
    assert not task.plausible(prompt, "")


@pytest.mark.parametrize("name", ["copy", "reverse"])
def test_string_tasks_plausible(name):
    task = get_task(name)
    prompt = "12345="
    assert task.plausible(prompt, task.answer(task.parse(prompt)))
    assert task.plausible(prompt, "00000")
    assert not task.plausible(prompt, "1234")
    assert not task.plausible(prompt, "123456")
    assert not task.plausible(prompt, "12=45")
    assert not task.plausible(prompt, "")
    assert task.max_answer_len(prompt) == 5


@pytest.mark.parametrize("name,level,count", [
    ("copy", 1, 10), ("copy", 3, 1000), ("reverse", 2, 100), ("reverse_addition", 1, 81),
    ("reverse_addition", 2, 8100),
])
def test_num_problems(name, level, count):
    assert get_task(name).num_problems(level) == count


def test_num_problems_matches_enumeration_for_tiny_levels():
    rng = random.Random(0)
    for name, level in [("copy", 1), ("reverse", 2), ("reverse_addition", 1)]:
        task = get_task(name)
        seen = {task.prompt(task.sample(level, rng)) for _ in range(5000)}
        assert len(seen) == task.num_problems(level)


# -- registry ------------------------------------------------------------------------------------

def test_unknown_task_suggests_a_name():
    with pytest.raises(ValueError, match=r"Did you mean 'reverse'\?"):
        get_task("revers")
    with pytest.raises(ValueError, match=r"Did you mean 'reverse_addition'\?"):
        get_task("reverse_additon")
    with pytest.raises(ValueError, match="Unknown task") as info:
        get_task("zzzzzz")
    assert "Did you mean" not in str(info.value)
    assert "copy" in str(info.value)  # lists the known tasks


def test_register_task(monkeypatch):
    monkeypatch.setattr("si_hf.tasks.base.TASKS", dict(TASKS))

    @register_task
    class Double(Task):
        name = "double_for_test"

    assert isinstance(get_task("double_for_test"), Double)
