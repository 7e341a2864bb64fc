"""Tasks: the exact formats of SPEC.md, parse/prompt inverses, bounds, plausibility, sampling; forward
addition, multiplication (chain of thought, pair levels), mazes (one token per node label), the
per-task tokenizer, and the recipes of these tasks."""

import random
from collections import deque
from pathlib import Path

import pytest
from datasets import Dataset

from si_hf.config import parse_recipe
from si_hf.data import eval_problems, tokenize
from si_hf.labeling import greedy_label
from si_hf.tasks import TASKS, Problem, Task, get_task, register_task
from si_hf.tasks.base import frontier, level_passes
from si_hf.tasks.maze import MAZE_TOKENS, parse_prompt, random_tree, shortest_path, valid_path, valid_path_rate
from si_hf.tasks.multiplication import cot_length, cot_template, pair_stages, square_frontier
from si_hf.tokenization import DEFAULT_ALPHABET, build_tokenizer, split_pattern, task_tokenizer

REPO_ROOT = Path(__file__).resolve().parents[1]
TASK_NAMES = ["copy", "reverse", "reverse_addition"]
NEW_TASKS = ["forward_addition", "multiplication", "maze_hops", "maze_nodes"]


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


def test_registry_lists_the_new_tasks():
    assert set(NEW_TASKS) <= set(TASKS)
    for name in NEW_TASKS:
        assert get_task(name).name == name


# -- forward addition ----------------------------------------------------------------------------

def test_forward_addition_spec_example():
    task = get_task("forward_addition")
    problem = Problem(5, (12345, 987))
    assert task.prompt(problem) == "12345+987="
    assert task.answer(problem) == "13332"
    assert task.parse("12345+987=") == problem
    assert task.max_answer_len("12345+987=") == 6


@pytest.mark.parametrize("a,b,level,prompt,answer", [
    (1, 2, 1, "1+2=", "3"),           # no padding
    (5, 5, 1, "5+5=", "10"),          # the carry adds a digit
    (99, 1, 2, "99+1=", "100"),       # operands of different lengths: n is the longer one
    (999, 999, 3, "999+999=", "1998"),
    (10, 90, 2, "10+90=", "100"),
])
def test_forward_addition_small_cases(a, b, level, prompt, answer):
    task = get_task("forward_addition")
    problem = Problem(level, (a, b))
    assert task.prompt(problem) == prompt
    assert task.answer(problem) == answer
    assert task.parse(prompt) == problem
    assert task.plausible(prompt, answer)


def test_forward_addition_plausible():
    task = get_task("forward_addition")
    prompt = "12345+987="
    assert task.plausible(prompt, "13332")
    assert task.plausible(prompt, "99999")     # form only: a wrong value of the right form passes
    assert task.plausible(prompt, "113332")    # n + 1 digits is a possible length
    assert not task.plausible(prompt, "1333")     # shorter than the longer operand
    assert not task.plausible(prompt, "1133320")  # longer than n + 1
    assert not task.plausible(prompt, "03332")    # a leading zero is never a sum's form
    assert not task.plausible(prompt, "1333a")
    assert not task.plausible(prompt, "13+32")
    assert not task.plausible(prompt, "")


def test_forward_addition_properties():
    task = get_task("forward_addition")
    rng = random.Random(11)
    for _ in range(300):
        level = rng.randint(1, 30)
        problem = task.sample(level, rng)
        a, b = problem.operands
        prompt, answer = task.prompt(problem), task.answer(problem)
        assert problem.level == level and len(str(a)) == len(str(b)) == level
        assert task.parse(prompt) == problem
        assert int(answer) == a + b
        assert level <= len(answer) <= task.max_answer_len(prompt) == level + 1
        assert task.plausible(prompt, answer)
    pairs = set()
    for _ in range(500):
        problem = task.sample_base(1, 5, rng)
        la, lb = (len(str(x)) for x in problem.operands)
        assert problem.level == max(la, lb) and task.parse(task.prompt(problem)) == problem
        assert task.plausible(task.prompt(problem), task.answer(problem))
        pairs.add((la, lb))
    assert len(pairs) == 25  # operand lengths drawn independently
    assert task.num_problems(1) == 81 and task.num_problems(2) == 8100


# -- multiplication ------------------------------------------------------------------------------

def test_multiplication_spec_example():
    task = get_task("multiplication")
    problem = Problem((4, 3), (1234, 567))
    prompt = "4321*765="
    answer = "83680+040470(876280)+0007160=8769960"
    assert task.prompt(problem) == prompt
    assert task.answer(problem) == answer
    assert task.parse(prompt) == problem
    assert task.max_answer_len(prompt) == len(answer) == 36
    assert task.plausible(prompt, answer)
    assert task.level_name(problem.level) == "4x3"


@pytest.mark.parametrize("a,b,answer", [
    (1234, 7, "83680=83680"),          # one digit of b: one partial product, no running sum
    (12, 34, "840+0630=8040"),         # two digits: no running sum either
    (9, 9, "18=18"),
    (5, 10, "00+050=050"),             # a zero digit gives an all-zero partial product
    (99, 999, "198+0198(1089)+00198=10989"),
    (1, 1000, "00+000(000)+0000(0000)+00010=00010"),
])
def test_multiplication_small_cases(a, b, answer):
    task = get_task("multiplication")
    problem = Problem((len(str(a)), len(str(b))), (a, b))
    assert task.answer(problem) == answer
    assert task.parse(task.prompt(problem)) == problem
    assert task.plausible(task.prompt(problem), answer)


def _check_cot_semantics(a, b, answer):
    """Read an answer back: every piece is the number the format says, reversed and padded."""
    la, lb = len(str(a)), len(str(b))
    cot, product = answer.split("=")
    assert int(product[::-1]) == a * b and len(product) == la + lb
    pieces = cot.split("+")
    assert len(pieces) == lb
    running = 0
    for i, piece in enumerate(pieces):
        digit = int(str(b)[::-1][i])
        partial, _, total = piece.partition("(")
        running += a * digit * 10**i
        assert len(partial) == i + la + 1 and int(partial[::-1]) == a * digit * 10**i
        if 1 <= i < lb - 1:
            assert total.endswith(")") and len(total) == i + la + 2
            assert int(total[:-1][::-1]) == running
        else:
            assert total == ""


def test_multiplication_properties():
    task = get_task("multiplication")
    rng = random.Random(5)
    for la in range(1, 9):
        for lb in range(1, 9):
            assert cot_length(la, lb) == len(cot_template(la, lb))
            for _ in range(5):
                problem = task.sample((la, lb), rng)
                a, b = problem.operands
                prompt, answer = task.prompt(problem), task.answer(problem)
                assert problem.level == (la, lb) and (len(str(a)), len(str(b))) == (la, lb)
                assert task.parse(prompt) == problem
                assert len(answer) == task.max_answer_len(prompt)  # from the prompt alone
                assert task.plausible(prompt, answer)
                _check_cot_semantics(a, b, answer)
    assert task.sample(3, rng).level == (3, 3)  # an int level is the square level


def test_multiplication_plausible_is_structure_only():
    task = get_task("multiplication")
    prompt, answer = "4321*765=", "83680+040470(876280)+0007160=8769960"
    assert task.plausible(prompt, "99999+999999(999999)+9999999=9999999")  # wrong values, right form
    assert not task.plausible(prompt, answer[:-1])                 # one digit short
    assert not task.plausible(prompt, answer + "0")                # one digit long
    assert not task.plausible(prompt, answer.replace("(", "+"))    # wrong separator
    assert not task.plausible(prompt, answer.replace("+", "", 1))
    assert not task.plausible(prompt, "8368+0040470(876280)+0007160=8769960")  # a piece too short
    assert not task.plausible(prompt, answer.replace("3", "a"))
    assert not task.plausible(prompt, "")


def test_multiplication_base_sampling_and_counts():
    task = get_task("multiplication")
    rng = random.Random(0)
    levels = {task.sample_base(1, 5, rng).level for _ in range(2000)}
    assert levels == {(i, j) for i in range(1, 6) for j in range(1, 6)}
    assert task.num_problems((1, 1)) == 81 and task.num_problems((2, 3)) == 90 * 900
    seen = {task.prompt(task.sample((1, 1), rng)) for _ in range(3000)}
    assert len(seen) == task.num_problems((1, 1))


def test_multiplication_schedule_levels_and_frontier():
    task = get_task("multiplication")
    assert task.round_levels(5, 1) == [(1, 6), (6, 1)]
    assert task.round_levels(5, 5) == [(5, 6), (6, 5)]
    assert task.round_levels(5, 6) == [(6, 6)]
    assert task.round_levels(5, 7) == [(1, 7), (7, 1)]
    stages = pair_stages(5)
    rounds_to_10 = next(k for k in range(1, 100) if next(stages) == [(10, 10)])
    assert rounds_to_10 == 40 and task.round_levels(5, 40) == [(10, 10)]
    with pytest.raises(ValueError):
        task.round_levels(5, 0)
    assert task.eval_levels(1, 2) == [(1, 1), (1, 2), (2, 1), (2, 2)]
    acc = {level: 1.0 for level in task.eval_levels(1, 4)}
    assert task.frontier(acc, 0.99) == 4
    assert square_frontier({**acc, (4, 1): 0.5}, 0.99) == 3
    assert square_frontier({**acc, (1, 1): 0.5}, 0.99) == 0
    assert square_frontier({(1, 1): 1.0, (2, 2): 1.0, (3, 1): 0.2}, 0.99) == 2  # (3, x) fails
    assert square_frontier({}, 0.99) == 0


def test_multiplication_eval_sets_with_pair_levels():
    task = get_task("multiplication")
    problems = eval_problems(task, (2, 3), 50, seed=0)
    assert len({task.prompt(p) for p in problems}) == 50
    assert all(p.level == (2, 3) for p in problems)
    assert problems == eval_problems(task, (2, 3), 50, seed=0)
    assert len(eval_problems(task, (1, 1), 1000, seed=0)) == 40  # at most half of the 81


# -- maze ----------------------------------------------------------------------------------------

EXAMPLE_PROMPT = "5>3#12:5,3,7-3:12-7:12-5:12="


def test_maze_example():
    hops, nodes = get_task("maze_hops"), get_task("maze_nodes")
    problem = hops.parse(EXAMPLE_PROMPT)
    assert problem == Problem(2, (5, 3, ((12, (5, 3, 7)), (3, (12,)), (7, (12,)), (5, (12,)))))
    assert hops.prompt(problem) == EXAMPLE_PROMPT
    assert hops.answer(problem) == "5>12>3"
    assert nodes.parse(EXAMPLE_PROMPT).level == 4  # maze_nodes: the level is the number of nodes
    assert hops.max_answer_len(EXAMPLE_PROMPT) == 7  # 4 nodes: at most 4 labels and 3 `>`
    assert hops.plausible(EXAMPLE_PROMPT, "5>12>3") and valid_path(EXAMPLE_PROMPT, "5>12>3")


def _is_tree(entries):
    adjacency = dict(entries)
    edges = {frozenset((u, v)) for u, nbs in entries for v in nbs}
    symmetric = all(u in adjacency[v] for u, nbs in entries for v in nbs)
    seen, stack = set(), [entries[0][0]]
    while stack:
        u = stack.pop()
        if u not in seen:
            seen.add(u)
            stack.extend(adjacency[u])
    return symmetric and len(edges) == len(entries) - 1 and seen == set(adjacency)


def _all_simple_paths(adjacency, start, end):
    out, queue = [], deque([[start]])
    while queue:
        path = queue.popleft()
        if path[-1] == end:
            out.append(path)
            continue
        queue.extend(path + [v] for v in adjacency[path[-1]] if v not in path)
    return out


@pytest.mark.parametrize("name,levels,shape", [
    ("maze_hops", [1, 2, 5, 9, 15, 29], lambda level: (30, level)),
    ("maze_hops_15", [1, 2, 5, 9, 14], lambda level: (15, level)),
    ("maze_chain_15", [1, 2, 5, 9, 14], lambda level: (15, level)),
    ("maze_nodes", [10, 11, 20, 30, 60, 99], lambda level: (level, 9)),
])
def test_maze_properties(name, levels, shape):
    task = get_task(name)
    rng = random.Random(3)
    for level in levels:
        for _ in range(20):
            problem = task.sample(level, rng)
            prompt, answer = task.prompt(problem), task.answer(problem)
            start, end, entries = problem.operands
            num_nodes, hops = shape(level)
            labels = [node for node, _ in entries]
            assert problem.level == level and task.parse(prompt) == problem
            assert parse_prompt(prompt) == problem.operands
            assert len(labels) == len(set(labels)) == num_nodes
            assert all(1 <= x <= 99 for x in labels) and start in labels and end in labels
            assert _is_tree(entries)
            assert [answer] == [">".join(map(str, p)) for p in _all_simple_paths(dict(entries), start, end)]
            assert answer.count(">") == hops
            assert valid_path(prompt, answer) and task.plausible(prompt, answer)
            assert task.num_tokens(answer) == 2 * hops + 1 <= task.max_answer_len(prompt) == 2 * num_nodes - 1
    assert task.num_problems(levels[0]) > 10**12  # far more than any eval set


def test_maze_chain_is_a_chain():
    """Every node of a `maze_chain_15` prompt has one or two neighbors, S and E fall anywhere on it."""
    task, rng = get_task("maze_chain_15"), random.Random(0)
    starts = set()
    for _ in range(200):
        start, end, entries = task.sample(2, rng).operands
        degrees = sorted(len(nbs) for _, nbs in entries)
        assert degrees == [1, 1] + [2] * 13
        starts.add(len(dict(entries)[start]))
    assert starts == {1, 2}  # S is sometimes an end of the chain, sometimes inside it


def test_maze_levels_out_of_range():
    rng = random.Random(0)
    with pytest.raises(ValueError):
        get_task("maze_hops").sample(30, rng)  # 30 nodes: at most 29 hops
    with pytest.raises(ValueError):
        get_task("maze_hops_15").sample(15, rng)  # 15 nodes: at most 14 hops
    with pytest.raises(ValueError):
        get_task("maze_nodes").sample(9, rng)  # 9 hops need 10 nodes
    with pytest.raises(ValueError):
        get_task("maze_nodes").sample(100, rng)  # labels are 1-99
    with pytest.raises(ValueError):
        random_tree(5, 0, rng)


def test_maze_sampling_is_seeded_and_varied():
    task = get_task("maze_hops")

    def draw(seed):
        rng = random.Random(seed)
        return [task.prompt(task.sample_base(1, 9, rng)) for _ in range(30)]

    assert draw(1) == draw(1) and draw(1) != draw(2)
    assert len(set(draw(1))) == 30
    rng = random.Random(0)
    assert {task.sample_base(1, 9, rng).level for _ in range(300)} == set(range(1, 10))
    problems = eval_problems(task, 4, 30, seed=0)
    assert len({task.prompt(p) for p in problems}) == 30 and all(p.level == 4 for p in problems)


def test_valid_path_and_plausible():
    task = get_task("maze_hops")
    p = EXAMPLE_PROMPT  # edges 5-12, 12-3, 12-7
    assert valid_path(p, "5>12>3")
    assert not valid_path(p, "5>3")            # not an edge
    assert not valid_path(p, "5>12>7>12>3")    # follows edges but revisits a node
    assert not valid_path(p, "12>3")           # does not start at S
    assert not valid_path(p, "5>12")           # does not end at E
    assert not valid_path(p, "5>7>3")          # nodes exist, edges do not
    for bad in ["", "5>>3", "5>12>3>", ">5>12>3", "05>12>3", "5>120>3", "5,12,3", "5>12>3="]:
        assert not valid_path(p, bad) and not task.plausible(p, bad)
    # plausible checks the form, never the edges: a path from S to E over known nodes passes
    assert task.plausible(p, "5>3") and task.plausible(p, "5>7>3")
    assert not task.plausible(p, "5>12>7>12>3")  # a node twice
    assert not task.plausible(p, "5>9>3")        # 9 is not a node of the prompt
    assert not task.plausible(p, "12>3") and not task.plausible(p, "5>12")
    assert valid_path_rate([p, p, p, p], ["5>12>3", "5>3", "5>12>3", ""]) == 0.5
    assert valid_path_rate([], []) == 0.0
    with pytest.raises(ValueError):
        valid_path_rate([p], [])
    assert shortest_path({1: [2], 2: [1]}, 1, 3) is None


# -- tokenizers ----------------------------------------------------------------------------------

def test_character_tokenizer_is_unchanged():
    for name in ["copy", "reverse", "reverse_addition", "forward_addition", "multiplication"]:
        tok = task_tokenizer(get_task(name))
        assert tok.get_vocab() == build_tokenizer().get_vocab()
        assert len(tok) == 4 + len(DEFAULT_ALPHABET)
    tok = build_tokenizer()
    text = "4321*765=83680+040470(876280)+0007160=8769960"
    assert tok.convert_ids_to_tokens(tok(text)["input_ids"]) == ["<bos>", *text]
    assert split_pattern(DEFAULT_ALPHABET) == "."


def test_maze_tokenizer_one_token_per_label():
    task = get_task("maze_hops")
    tok = task_tokenizer(task)
    assert len(tok) == 4 + 99 + 6 == 4 + len(MAZE_TOKENS)
    ids = tok("5>3#12:5,3,7-99:10=")["input_ids"]
    assert tok.convert_ids_to_tokens(ids) == ["<bos>", "5", ">", "3", "#", "12", ":", "5", ",", "3", ",", "7",
                                              "-", "99", ":", "10", "="]
    rng = random.Random(0)
    for _ in range(20):
        problem = task.sample(rng.randint(1, 29), rng)
        text = task.prompt(problem) + task.answer(problem)
        ids = tok(text)["input_ids"]
        assert tok.unk_token_id not in ids
        assert len(ids) == task.num_tokens(text) + 1  # + <bos>
        assert tok.decode(ids, skip_special_tokens=True) == text
    assert tok.convert_ids_to_tokens(tok("100")["input_ids"]) == ["<bos>", "10", "<unk>"]
    with pytest.raises(ValueError):
        build_tokenizer(["1", "12", "1"])


def test_maze_tokenizer_saves_and_loads_without_custom_code(tmp_path):
    from transformers import AutoTokenizer

    tok = task_tokenizer(get_task("maze_hops"))
    tok.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    text = EXAMPLE_PROMPT + "5>12>3"
    assert loaded(text)["input_ids"] == tok(text)["input_ids"]
    assert loaded.get_vocab() == tok.get_vocab() and loaded.eos_token == "<eos>"


def test_maze_rows_tokenize_with_prompt_prefix():
    task = get_task("maze_hops")
    tok = task_tokenizer(task)
    rng = random.Random(1)
    problems = [task.sample(rng.randint(1, 9), rng) for _ in range(8)]
    ds = tokenize(Dataset.from_dict({"prompt": [task.prompt(p) for p in problems],
                                     "completion": [task.answer(p) for p in problems]}), tok)
    for row, p in zip(ds, problems):
        assert row["prompt_len"] == task.num_tokens(task.prompt(p)) + 1
        answer_ids = row["input_ids"][row["prompt_len"]:]
        assert answer_ids[-1] == tok.eos_token_id
        assert tok.decode(answer_ids[:-1]) == task.answer(p)


def test_labeling_decodes_multi_character_tokens(make_model):
    """The labeler joins token strings: a maze label made of 2-digit tokens comes back as text."""
    from conftest import ScriptedHead

    task = get_task("maze_hops")
    tok = task_tokenizer(task)
    model = make_model(vocab_size=len(tok), pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
                       eos_token_id=tok.eos_token_id)
    head = ScriptedHead(len(tok), tok.convert_tokens_to_ids(["5", ">", "12", ">", "3", "<eos>"]))
    model.lm_head = head

    def restart_on_prefill(module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        if ids is not None and ids.shape[1] > 1:
            head.restart()

    model.model.register_forward_pre_hook(restart_on_prefill, with_kwargs=True)
    bound = task.max_answer_len(EXAMPLE_PROMPT)
    for backend in ["fast", "generate"]:
        [lab] = greedy_label(model, tok, [EXAMPLE_PROMPT], [bound], backend=backend, disable_tqdm=True)
        assert lab.completion == "5>12>3" and lab.finished
        # the bound counts tokens: 3 tokens (+ EOS) cannot hold "5>12>3" (5 tokens)
        [lab] = greedy_label(model, tok, [EXAMPLE_PROMPT], [3], backend=backend, disable_tqdm=True)
        assert lab.completion == "5>12>" and not lab.finished


# -- recipes -------------------------------------------------------------------------------------

@pytest.mark.parametrize("path,task", [
    ("recipes/forward_addition/tiny.yaml", "forward_addition"),
    ("recipes/forward_addition/paper.yaml", "forward_addition"),
    ("recipes/multiplication/tiny.yaml", "multiplication"),
    ("recipes/multiplication/paper.yaml", "multiplication"),
    ("recipes/maze/tiny.yaml", "maze_hops_15"),
    ("recipes/maze/paper.yaml", "maze_hops"),
])
def test_new_recipes_parse(path, task):
    recipe = parse_recipe(["--config", str(REPO_ROOT / path)])
    assert recipe.task == task
    assert recipe.output_dir.startswith("runs/")


# -- the frontier: a level too small to resolve the threshold cannot break it --------------------


def test_a_tiny_level_passes_with_one_wrong_answer():
    assert level_passes(0.8, 0.99, 5)  # 4 of 5: one error is all 5 problems can show at 0.99
    assert not level_passes(0.6, 0.99, 5)  # two errors
    assert level_passes(0.98, 0.99, 50)  # 49 of 50
    assert not level_passes(0.98, 0.99, 100)  # 100 problems resolve 0.99: 98 of 100 fails
    assert level_passes(0.99, 0.99, 100)
    assert not level_passes(0.8, 0.99)  # without a count the threshold is plain
    assert not level_passes(0.8, 1.0, 5)  # a threshold of 1 is resolved by any size


def test_frontier_with_counts():
    by_level = {1: 0.8, 2: 1.0, 3: 0.996, 4: 0.97, 5: 1.0}
    counts = {1: 5, 2: 50, 3: 500, 4: 1000, 5: 1000}
    assert frontier(by_level, 0.99) == 0  # one of five length-1 problems wrong used to mean frontier 0
    assert frontier(by_level, 0.99, counts) == 3
    assert get_task("copy").frontier(by_level, 0.99, counts) == 3
    assert frontier({1: 0.6, 2: 1.0}, 0.99, {1: 5, 2: 50}) == 0  # two of five wrong is a real failure


def test_square_frontier_with_counts():
    task = get_task("multiplication")
    by_level = {(1, 1): 0.8, (1, 2): 1.0, (2, 1): 1.0, (2, 2): 0.9}
    counts = {(1, 1): 5, (1, 2): 100, (2, 1): 100, (2, 2): 100}
    assert task.frontier(by_level, 0.99) == 0
    assert task.frontier(by_level, 0.99, counts) == 1


def _longest_nine_run(a: str, b: str) -> int:
    """The longest run of digit pairs summing to 9, over the places both operands have a digit."""
    best = run = 0
    for x, y in zip(reversed(a), reversed(b)):
        run = run + 1 if int(x) + int(y) == 9 else 0
        best = max(best, run)
    return best


@pytest.mark.parametrize("name", ["forward_addition", "reverse_addition"])
def test_a_planted_carry_run_keeps_the_problem_well_formed(name):
    task = get_task(name)
    assert task.plants_carry_runs
    rng = random.Random(0)
    longest = []
    for _ in range(300):
        problem = task.sample_base(1, 8, rng)
        planted = task.with_carry_run(problem, rng)
        a, b = (str(x) for x in planted.operands)
        assert (len(a), len(b)) == tuple(len(str(x)) for x in problem.operands)  # leading digits stay non-zero
        assert planted.level == problem.level
        assert task.parse(task.prompt(planted)) == planted
        if min(len(a), len(b)) < 2:
            assert planted == problem  # no pair below a run to decide its carry
        else:
            assert _longest_nine_run(a[:-1], b[:-1]) >= 1  # the run sits above the lowest pair
            longest.append(_longest_nine_run(a, b))
    assert max(longest) >= 5  # runs of every length are planted, not only the short ones chance gives


def test_only_addition_plants_carry_runs():
    assert {name for name in TASKS if get_task(name).plants_carry_runs} == {"forward_addition", "reverse_addition"}
    with pytest.raises(NotImplementedError, match="copy"):
        get_task("copy").with_carry_run(Problem(3, "123"), random.Random(0))
