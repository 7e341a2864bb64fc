"""The pieces filter: a label checked against the same model's answers to shorter pieces of its
prompt (si_hf.consistency, Task.pieces / Task.compose), on hand-made labels and in a micro run."""

import json
import random

import pytest

from conftest import SMALL
from si_hf.config import RecipeError, parse_recipe
from si_hf.consistency import compose_labels, swap_labels
from si_hf.filters import (
    apply_filters,
    commute_filter,
    composed_labels,
    parse_filter_spec,
    pieces_filter,
    select_labels,
)
from si_hf.labeling import Label
from si_hf.tasks import TASKS, Task, get_task, register_task
from si_hf.tasks.base import cut_points
from si_hf.tasks.strings import Copy


@pytest.mark.parametrize("n", range(1, 40))
@pytest.mark.parametrize("max_piece", [1, 3, 8, 10])
def test_cut_points_make_the_fewest_near_equal_pieces(n, max_piece):
    cuts = cut_points(n, max_piece)
    sizes = [j - i for i, j in zip([0, *cuts], [*cuts, n])]
    assert sum(sizes) == n and max(sizes) <= max_piece and min(sizes) >= 1
    assert len(sizes) == -(-n // max_piece)  # the fewest pieces
    assert max(sizes) - min(sizes) <= 1  # no restriction on where a cut falls: as equal as can be


def test_cut_points_respect_allowed_positions():
    assert cut_points(10, 5, allowed=lambda j: j != 5) == [3, 7]  # no cut at 5: one piece more
    assert cut_points(10, 5, allowed=lambda j: False) is None  # two pieces need a cut; three need two
    assert cut_points(4, 8, allowed=lambda j: False) == []  # short enough to be one piece


@pytest.mark.parametrize("name", ["copy", "reverse", "reverse_addition", "forward_addition"])
def test_true_answers_of_the_pieces_compose_the_true_answer(name):
    """The structure itself is right: composing the pieces' true answers gives the true answer (the truth is
    read here only to check the task's pieces and compose, never by the filter)."""
    task, rng = get_task(name), random.Random(0)
    for level in range(2, 30):
        for _ in range(30):
            problem = task.sample(level, rng)
            prompt = task.prompt(problem)
            pieces = task.pieces(prompt, 6)
            if pieces is None:
                continue
            assert all(task.parse(q).level <= 6 for q in pieces)
            answers = [task.answer(task.parse(q)) for q in pieces]
            assert task.compose(prompt, pieces, answers) == task.answer(problem)


def test_string_pieces_by_hand():
    copy, reverse = get_task("copy"), get_task("reverse")
    assert copy.pieces("123456789=", 4) == ["123=", "456=", "789="]
    assert copy.compose("123456789=", ["123=", "456=", "789="], ["123", "456", "789"]) == "123456789"
    assert reverse.compose("123456789=", ["123=", "456=", "789="], ["321", "654", "987"]) == "987654321"
    assert copy.compose("123456789=", ["123=", "456=", "789="], ["123", "45", "789"]) is None  # a short piece


def test_reverse_addition_carry_comes_from_the_low_part_answer():
    task = get_task("reverse_addition")
    # 99 + 91 = 190: written reversed, "99+19=" -> "091"; cut after the units digit
    assert task.pieces("99+19=", 1) == ["9+1=", "9+9="]
    assert task.compose("99+19=", ["9+1=", "9+9="], ["01", "81"]) == "091"  # 10, then 18 + the carry 1
    # the carry is the model's own: a low answer reporting no carry changes the composed sum
    assert task.compose("99+19=", ["9+1=", "9+9="], ["00", "81"]) == "081"
    assert task.compose("99+19=", ["9+1=", "9+9="], ["02", "81"]) is None  # a two-digit sum's carry is 0 or 1
    # a cut never leaves a part whose top digit is 0 (a number with a leading zero): 405 + 101, cut after 2 digits
    # is refused, so the only cut allowed is after the first
    assert task.pieces("504+101=", 2) == ["5+1=", "04+01="]
    assert task.pieces("12+34=", 1) == ["1+3=", "2+4="]
    assert task.pieces("5005+1001=", 2) is None  # parts of <= 2 digits would end in 0: no cut allowed
    assert task.pieces("123+45=", 2) is None  # unequal operands: no pieces


def test_forward_addition_carry_comes_from_the_low_part_answer():
    task = get_task("forward_addition")
    # 99 + 91 = 190, cut after the tens digit
    assert task.pieces("99+91=", 1) == ["9+9=", "9+1="]
    assert task.compose("99+91=", ["9+9=", "9+1="], ["18", "10"]) == "190"  # 18 + the carry 1, then 0
    # the carry is the model's own: a low answer one digit long reports none
    assert task.compose("99+91=", ["9+9=", "9+1="], ["18", "9"]) == "189"
    assert task.compose("99+91=", ["9+9=", "9+1="], ["18", "20"]) is None  # a one-digit sum's carry is 0 or 1
    assert task.compose("99+91=", ["9+9=", "9+1="], ["19", "10"]) is None  # 19 + 1 = 20: no two digits sum so
    assert task.compose("99+91=", ["9+9=", "9+1="], ["18", "010"]) is None  # a malformed piece answer
    # a cut never leaves a part beginning with 0: 504 + 101 cannot be cut after the first digit
    assert task.pieces("504+101=", 2) == ["50+10=", "4+1="]
    assert task.pieces("5005+1001=", 2) is None  # every part after a cut of <= 2 digits would begin with 0
    assert task.pieces("123+45=", 2) is None  # unequal operands: no pieces


def test_pieces_filter_keeps_only_agreeing_labels():
    task = get_task("copy")
    labels = [Label("1234=", "1234", True, composed="1234"),
              Label("1234=", "1243", True, composed="1234"),  # disagrees with its pieces
              Label("1234=", "1234", False, composed="1234"),  # unfinished
              Label("1234=", "1234", True, composed="")]  # no composition: never kept
    assert pieces_filter(task, labels) == [True, False, False, False]
    keep, stats = apply_filters(task, labels, ["length", "pieces"])
    assert keep == [True, False, False, False]
    assert stats[-1] == {"filter": "pieces", "in": 3, "out": 1}
    with pytest.raises(ValueError, match="compose_labels"):
        pieces_filter(task, [Label("1234=", "1234", True)])
    assert parse_filter_spec("pieces:max_piece=8") == ("pieces", {"max_piece": 8})
    with pytest.raises(ValueError, match="max_piece"):
        parse_filter_spec("pieces:max_piece=0")


def test_compose_labels_asks_the_model_about_the_pieces(scripted_model, tokenizer):
    """A model that writes "12" to every prompt: "1212" is what its pieces of "1212=" compose, "1213" is not."""
    model = scripted_model(["1", "2", "<eos>"])
    task = get_task("copy")
    labels = [Label("1212=", "1212", True), Label("1213=", "1213", True), Label("1234=", "12", False)]
    scored = compose_labels(model, tokenizer, task, labels, max_piece=2)
    # Composed whether or not the model finished its own label (the `compose` step labels from it alone);
    # the pieces filter still drops an unfinished label.
    assert [lab.composed for lab in scored] == ["1212", "1212", "1212"]
    assert pieces_filter(task, scored) == [True, False, False]


def test_pieces_refused_for_a_task_without_pieces(monkeypatch):
    recipe = parse_recipe(["--task", "reverse_addition", "--filters", "length", "pieces"])
    assert recipe.filters == ["length", "pieces"]
    monkeypatch.setattr("si_hf.tasks.base.TASKS", dict(TASKS))

    @register_task
    class Plain(Copy):  # copy without its pieces
        name = "plain_for_test"
        pieces = Task.pieces

    assert not get_task("plain_for_test").has_pieces
    for filters in (["pieces"], ["compose", "length"]):
        with pytest.raises(RecipeError, match="no pieces"):
            parse_recipe(["--task", "plain_for_test", "--filters", *filters])
    assert parse_recipe(["--task", "forward_addition", "--filters", "length", "pieces"]).filters[-1] == "pieces"
    assert parse_recipe(["--task", "maze_hops", "--filters", "compose", "path"]).filters == ["compose", "path"]


# -- compose: a maze path through another node, from the two mazes on each side of it ------------

@pytest.mark.parametrize("name", ["maze_hops_15", "maze_chain_15", "maze_nodes"])
def test_true_answers_of_the_maze_pieces_compose_the_true_path(name):
    """Every other node is a cut, and the true answers of its two mazes put together give the true path
    (the truth is read here only to check pieces and compose)."""
    task, rng = get_task(name), random.Random(0)
    levels = range(10, 16) if name == "maze_nodes" else range(2, 12)
    for level in levels:
        for _ in range(10):
            problem = task.sample(level, rng)
            prompt = task.prompt(problem)
            pieces = task.pieces(prompt, 3)
            assert len(pieces) == 2 * (prompt.count("-") + 1 - 2)
            assert task.answered_pieces(prompt, 3) == pieces  # the model answers every piece itself
            assert task.compose(prompt, pieces, _true_answers(task, pieces)) == task.answer(problem)


def test_maze_compose_by_hand():
    """The chain 1-2-3-4-5 plus 6 on 3, from 1 to 5: cuts 2, 3, 4 lie on the path, 6 does not."""
    task = get_task("maze_hops_15")
    prompt = "1>5#1:2-2:1,3-3:2,4,6-4:3,5-5:4-6:3="
    pieces = task.pieces(prompt, 3)
    assert pieces == [f"{a}>{b}#{prompt.split('#')[1]}" for a, b in
                      [(1, 2), (2, 5), (1, 3), (3, 5), (1, 4), (4, 5), (1, 6), (6, 5)]]
    right = ["1>2", "2>3>4>5", "1>2>3", "3>4>5", "1>2>3>4", "4>5", "1>2>3>6", "6>3>4>5"]
    assert task.compose(prompt, pieces, right) == "1>2>3>4>5"  # the cut at 6 repeats 3: no path
    # A model that cannot answer one-hop mazes (here it writes a detour) still labels through the middle
    no_hop = ["1>6>2", "2>3>4>5", "1>2>3", "3>4>5", "1>2>3>4", "4>6>5", "1>2>3>6", "6>3>4>5"]
    assert task.compose(prompt, pieces, no_hop) == "1>2>3>4>5"
    # Two cuts making two paths that the other answers back equally: a tie, no label
    split = ["1>2", "2>4>5", "1>6>3", "3>5", "1>6>2", "4>6>5", "x", "6>5"]
    assert task.compose(prompt, pieces, split) is None
    # Where two paths tie on full cuts, the one more single pieces agree with wins
    assert task.compose(prompt, pieces, ["1>2", "2>6>5", "1>2>3", "3>4>5", "1>3>4", "4>5", "1>6", "6>5"]) == (
        "1>2>3>4>5")  # cut 2's path 1>2>6>5 has cut 2 and the piece 6>5; the true one cut 3 and 1>2, 4>5
    assert task.compose(prompt, pieces, ["x"] * 8) is None  # no well-formed answer
    # Pieces the model did not finish (None) are left out; the other cuts still vote
    assert task.compose(prompt, pieces, right[:6] + [None, None]) == "1>2>3>4>5"
    assert task.compose(prompt, pieces, [None] * 8) is None
    assert task.pieces("1>2#1:2-2:1=", 3) is None  # no node but S and E: nothing to cut


def test_compose_labels_labels_a_maze_from_shorter_mazes(monkeypatch, tokenizer):
    """A labeler right on every maze but one-hop ones (it writes `1>2` there) and wrong on the long
    prompts themselves: the composed labels are the true paths all the same."""
    task, rng = get_task("maze_hops_15"), random.Random(1)
    long = [task.prompt(task.sample(level, rng)) for level in (4, 5, 6)]

    def labeler(model, tokenizer, prompts, bounds, **kwargs):
        answers = _true_answers(task, prompts)
        return [Label(q, a if q not in long and a.count(">") > 1 else "1>2", True) for q, a in zip(prompts, answers)]

    monkeypatch.setattr("si_hf.consistency.greedy_label", labeler)
    scored = compose_labels(None, tokenizer, task, [Label(q, "1>2", True) for q in long], max_piece=3)
    assert [lab.composed for lab in scored] == _true_answers(task, long)


@pytest.mark.parametrize("name, composes", [("maze_hops_15", True), ("forward_addition", False)])
def test_an_unfinished_piece_drops_the_label_unless_the_task_composes_around_it(monkeypatch, tokenizer, name,
                                                                               composes):
    """A labeler right on every piece but one, which it never finishes: a maze still composes its path
    from the other cuts; an addition, whose every piece holds digits of the sum, gets no label."""
    task, rng = get_task(name), random.Random(2)
    long = task.prompt(task.sample(6, rng))
    unfinished = task.pieces(long, 3)[-1]

    def labeler(model, tokenizer, prompts, bounds, **kwargs):
        return [Label(q, a, q != unfinished) for q, a in zip(prompts, _true_answers(task, prompts))]

    monkeypatch.setattr("si_hf.consistency.greedy_label", labeler)
    scored = compose_labels(None, tokenizer, task, [Label(long, "", False)], max_piece=3)
    assert scored[0].composed == (_true_answers(task, [long])[0] if composes else "")


# -- compose: multiplication one digit past the square, labeled from products inside it -----------

def _true_answers(task, prompts):
    return [task.answer(task.parse(q)) for q in prompts]


@pytest.mark.parametrize("square", [2, 3, 4])
def test_true_products_inside_the_square_compose_the_true_chain_of_thought(square):
    """The structure is right: the pieces lie inside the square (or are the swapped problem), and their
    true answers compose the true answer, always for the b side, and for a 5x1 problem whenever a cut
    of a does not carry (the truth is read here only to check pieces and compose)."""
    task, rng = get_task("multiplication"), random.Random(square)
    edge = square + 1
    for level in [*((i, edge) for i in range(1, edge)), (edge, 1)]:
        composed = 0
        for _ in range(60):
            problem = task.sample(level, rng)
            prompt = task.prompt(problem)
            pieces = task.pieces(prompt, square)
            for q in pieces:
                assert q == task.swapped(prompt) or max(task.parse(q).level) <= square
            answer = task.compose(prompt, pieces, _true_answers(task, pieces))
            assert answer in (None, task.answer(problem))
            composed += answer is not None
        assert composed == 60 if level[1] == edge else 0 < composed < 60


@pytest.mark.parametrize("square", [2, 3, 4])
def test_true_answers_pass_the_a_side_checks(square):
    """a one digit longer, b longer: with every piece (the problem itself among them) answered truly, the
    chain, the swapped product and the bounds all agree, so the true answer is kept."""
    task, rng = get_task("multiplication"), random.Random(square)
    edge = square + 1
    for level in [(edge, j) for j in range(2, edge + 1)]:
        for _ in range(40):
            problem = task.sample(level, rng)
            pieces = task.pieces(task.prompt(problem), square)
            assert task.compose(task.prompt(problem), pieces, _true_answers(task, pieces)) == task.answer(problem)


def test_multiplication_has_no_pieces_inside_the_square_or_two_digits_past_it():
    task = get_task("multiplication")
    for a, b in [(12, 34), (1234, 5), (12, 123456), (123456, 1), (123456, 12), (12345, 123456)]:
        assert task.pieces(task._mul_prompt(a, b), 4) is None


def test_the_a_side_keeps_its_own_answer_when_its_chain_matches_the_pieces():
    """5x2 ... 5x5: no cut spells the product, so the problem itself, the swapped one and the bounds are
    among its pieces, read as the model answers them: its own answer stands only if the partial products
    and running sums spelled from the pieces are its own, its product is the swapped problem's, and it
    lies between the bounds' products (times 10)."""
    task = get_task("multiplication")
    prompt = task._mul_prompt(12345, 678)  # 8,369,910
    pieces = task.pieces(prompt, 4)
    bounds = [task._mul_prompt(x, y) for x, y in [(1234, 678), (1235, 678), (12345, 67), (12345, 68)]]
    whole = [prompt, task.swapped(prompt), *bounds]
    assert pieces == [task._mul_prompt(12345, x) for x in (6, 7, 8, 78)] + whole
    assert task.answered_pieces(prompt, 4) == whole
    assert task.answered_pieces(task.swapped(prompt), 4) == [task.swapped(prompt)]  # the b side composes it
    answers = _true_answers(task, pieces)
    at = pieces.index(prompt)
    own, swapped, bound_answers = answers[at], answers[at + 1], answers[at + 2 :]

    def answer(own_answer, swapped_answer=swapped, bound_answers=bound_answers):
        return task.compose(prompt, pieces, answers[:at] + [own_answer, swapped_answer, *bound_answers])

    assert answer(own) == own
    wrong_partial = own[:2] + str((int(own[2]) + 1) % 10) + own[3:]
    assert answer(wrong_partial) is None

    def digit(text, place, new):  # the product with the digit at 10**place replaced (the text is reversed)
        at = len(text) - len(task.result(text)) + place
        return text[:at] + new + text[at + 1 :]

    assert answer(digit(own, 6, "9")) is None  # the swapped product differs
    assert answer(digit(own, 6, "9"), digit(swapped, 6, "9")) is None  # both wrong alike: out of the bounds
    assert answer(digit(own, 4, "5"), digit(swapped, 4, "5")) is None  # 8,359,910 < 10 * 1234 * 678
    assert answer(digit(own, 3, "8"), digit(swapped, 3, "8")) == digit(own, 3, "8")  # 8,368,910: inside them
    assert answer(own, swapped, bound_answers[:3] + ["0=0"]) is None  # a bound without an answer checks nothing
    assert answer("0=0") is None  # its own answer malformed


def test_bounds_leave_out_a_side_that_gains_a_digit():
    task = get_task("multiplication")
    assert task._bounds(12345, 678) == [((1234, 678), (1235, 678)), ((12345, 67), (12345, 68))]
    assert task._bounds(99991, 995) == []  # 9999 + 1 and 99 + 1 both gain a digit
    assert task._bounds(12345, 67) == [((1234, 67), (1235, 67))]  # b of two digits would bound it loosely
    assert task._bounds(9, 5) == []  # a of one digit: nothing to drop
    for a, b in [(12345, 678), (10000, 100), (99989, 989), (54321, 12345)]:  # true products lie between them
        products = {(x, y): str(x * y)[::-1] for x, y in task._answered_pairs(a, b) if (x, y) != (b, a)}
        assert task._within_bounds(a, b, products)
        products[(a, b)] = str(a * b + 10 * b)[::-1]
        assert not task._within_bounds(a, b, products)


def test_pieces_grow_with_the_square_trained_in_full():
    """Square n + 1 is trained after its n + 1 stages (1x(n+1)&(n+1)x1 ... (n+1)x(n+1)); other tasks keep
    their pieces inside the base range."""
    task = get_task("multiplication")
    assert [task.largest_piece(4, s) for s in range(13)] == [4] * 5 + [5] * 6 + [6] * 2
    assert get_task("reverse_addition").largest_piece(16, 30) == 16


def test_multiplication_compose_by_hand():
    task = get_task("multiplication")
    prompt = task._mul_prompt(12, 10203)  # b has two zero digits: their partial products are zeros
    pieces = task.pieces(prompt, 4)
    assert pieces == [task._mul_prompt(12, x) for x in (1, 2, 3, 203)] + [task.swapped(prompt)]  # each once
    answers = _true_answers(task, pieces)
    assert task.compose(prompt, pieces, answers) == task.answer(task.parse(prompt))
    wrong_end = answers[:-1] + [answers[-1][:-3] + "9" + answers[-1][-2:]]  # the product's top digits: unchecked
    assert task.compose(prompt, pieces, wrong_end) is not None
    wrong_low = answers[:-1] + [answers[-1].replace("=63", "=64", 1)]  # its last digit is the running sum's
    assert task.compose(prompt, pieces, wrong_low) is None
    assert task.compose(prompt, pieces, answers[:2] + ["36"] + answers[3:]) is None  # an answer of the wrong form
    carries = task._mul_prompt(99999, 9)  # every cut carries: no label
    assert task.compose(carries, task.pieces(carries, 4), _true_answers(task, task.pieces(carries, 4))) is None


def test_compose_labels_composes_the_swapped_piece_too(monkeypatch, tokenizer):
    """A 1x5 problem takes its product from the swapped 5x1 problem's own composition, not from the
    model's answer to it: here a labeler that answers every 5x1 problem wrong and the rest right."""
    task = get_task("multiplication")

    def labeler(model, tokenizer, prompts, bounds, **kwargs):
        answers = _true_answers(task, prompts)
        return [Label(q, a if task.parse(q).level != (5, 1) else a.replace("0", "1"), True)
                for q, a in zip(prompts, answers)]

    monkeypatch.setattr("si_hf.consistency.greedy_label", labeler)
    no_carry, carry = task._mul_prompt(2, 40312), task._mul_prompt(9, 99999)
    scored = compose_labels(None, tokenizer, task, [Label(no_carry, "", False), Label(carry, "", False),
                                                    Label("21*3=", "36=63", True)], max_piece=4)
    assert [lab.composed for lab in scored] == [task.answer(task.parse(no_carry)), "", ""]
    # Two levels down: 21x5 takes its product from 5x2, whose own answer is checked against 5x1 products,
    # which are composed from cuts (the labeler's wrong 5x1 answers are never read).
    deep = task._mul_prompt(12, 40312)
    assert compose_labels(None, tokenizer, task, [Label(deep, "", False)], max_piece=4)[0].composed == (
        task.answer(task.parse(deep)))


def test_compose_labels_drops_a_product_wrong_alike_in_both_orders(monkeypatch, tokenizer):
    """A labeler that writes every 5x4 and 4x5 product with the same wrong top digit (its chains right)
    passes the swapped-product check, but the bounds, answered by the model inside the square and at
    5x3, drop it; the b side, which takes its product from the swapped problem, goes with it."""
    task = get_task("multiplication")
    wrong_alike = {(5, 4), (4, 5)}

    def labeler(model, tokenizer, prompts, bounds, **kwargs):
        answers = _true_answers(task, prompts)
        return [Label(q, a[:-1] + str((int(a[-1]) + 1) % 10) if task.parse(q).level in wrong_alike else a, True)
                for q, a in zip(prompts, answers)]

    monkeypatch.setattr("si_hf.consistency.greedy_label", labeler)
    a_side, b_side = task._mul_prompt(10203, 2131), task._mul_prompt(2131, 10203)  # every 5x1 piece has a cut
    labels = [Label(a_side, "", False), Label(b_side, "", False)]
    assert [lab.composed for lab in compose_labels(None, tokenizer, task, labels, max_piece=4)] == ["", ""]
    wrong_alike.clear()
    assert [lab.composed for lab in compose_labels(None, tokenizer, task, labels, max_piece=4)] == [
        task.answer(task.parse(a_side)), task.answer(task.parse(b_side))]


def test_compose_step_relabels_what_it_cuts_and_keeps_the_rest():
    task = get_task("multiplication")
    b_side, far, inside = task._mul_prompt(3, 12345), task._mul_prompt(123456, 12), task._mul_prompt(12, 34)
    labels = [Label(b_side, "wrong", False, composed="composed"), Label(b_side, "wrong", True, composed=""),
              Label(far, "own", True, composed=""), Label(inside, "own", True, composed="")]
    out, keep, stats = composed_labels(task, labels, [True, True, True, False], max_piece=4)
    assert [(lab.completion, lab.finished) for lab in out] == [("composed", True), ("", False), ("own", True),
                                                               ("own", True)]
    assert keep == [True, False, True, False]  # a failed composition is dropped; an earlier drop stays
    assert stats == {"filter": "compose", "in": 3, "out": 2, "composed": 1}
    with pytest.raises(ValueError, match="compose_labels"):
        composed_labels(task, [Label(b_side, "x", True)], [True], max_piece=4)


def test_compose_step_in_select_labels():
    task = get_task("multiplication")
    b_side = task._mul_prompt(3, 12345)
    labels = [Label(b_side, "x", True, composed=task.answer(task.parse(b_side))),
              Label(task._mul_prompt(123456, 12), "0=0", True, composed="")]  # 6x2: no cut at 4
    out, keep, stats, masks = select_labels(task, [labels], ["compose", "length"], max_piece=4)
    assert out[0].completion == labels[0].composed and keep == [True, False]  # "0=0" fails the length filter
    assert [step["filter"] for step in stats] == ["compose", "length"] and masks == [[True, True], [True, False]]
    assert select_labels(task, [labels], ["compose:max_piece=4"])[1] == [True, True]
    with pytest.raises(ValueError, match="max_piece"):
        select_labels(task, [labels], ["compose"])
    with pytest.raises(ValueError, match="select_labels"):
        apply_filters(task, labels, ["compose"])
    assert parse_filter_spec("compose:max_piece=3") == ("compose", {"max_piece": 3})
    for bad in ("compose:max_piece=0", "compose:tau=0.5"):
        with pytest.raises(ValueError, match="compose"):
            parse_filter_spec(bad)


@pytest.mark.slow
@pytest.mark.parametrize("task, filters, levels", [
    ("multiplication", ["compose", "length"], {"base_max_level": 2, "eval_max_level": 3}),
    ("maze_hops_15", ["compose", "length", "path"],
     {"base_min_level": 2, "base_max_level": 3, "eval_min_level": 2, "eval_max_level": 4, "labels_per_round": 16}),
])
def test_micro_run_records_the_compose_step(tmp_path, write_recipe, run_rounds_main, task, filters, levels):
    argv = write_recipe(tmp_path, task=task, filters=filters, num_rounds=1, **{**SMALL, **levels})
    assert run_rounds_main(argv) == 0
    record = json.loads((tmp_path / "run" / "round-1" / "eval.json").read_text())
    compose, length, *_ = steps = record["labels"]["filters"]
    assert compose["filter"] == "compose" and compose["in"] == record["labels"]["labeled"]
    assert compose["composed"] <= compose["out"] and length["in"] == compose["out"]
    assert 0.0 <= compose["own_label_accuracy"] <= 1.0 and "own_label_accuracy" not in length
    assert [step["filter"] for step in steps] == filters and steps[-1]["out"] == record["labels"]["kept"]


# -- commute: the same result with the operands swapped -------------------------------------------

def test_swapped_prompts_and_results():
    assert get_task("forward_addition").swapped("123+45=") == "45+123="
    assert get_task("reverse_addition").swapped("321+54=") == "54+321="
    mult = get_task("multiplication")
    assert mult.swapped("4321*765=") == "765*4321="
    assert mult.result("83680+040470(876280)+0007160=8769960") == "8769960"
    assert not get_task("copy").commutes and get_task("multiplication").commutes


@pytest.mark.parametrize("name", ["forward_addition", "reverse_addition", "multiplication"])
def test_true_answers_agree_with_the_swapped_problem(name):
    """What the filter relies on: the true result of the swapped problem is the true result."""
    task, rng = get_task(name), random.Random(0)
    for level in ([(2, 3), (4, 1)] if name == "multiplication" else [1, 5, 9]):
        for _ in range(20):
            problem = task.sample(level, rng)
            swapped = task.parse(task.swapped(task.prompt(problem)))
            assert task.result(task.answer(swapped)) == task.result(task.answer(problem))


def test_commute_filter_keeps_only_agreeing_labels():
    task = get_task("multiplication")
    labels = [Label("21*3=", "36=63", True, swapped="63+(x)=63"),  # another chain of thought, same product
              Label("21*3=", "36=63", True, swapped="63=64"),  # another product
              Label("21*3=", "36=63", False, swapped="36=63"),  # unfinished
              Label("21*3=", "36=63", True, swapped="")]  # the swapped answer did not finish
    assert commute_filter(task, labels) == [True, False, False, False]
    with pytest.raises(ValueError, match="swap_labels"):
        commute_filter(task, [Label("21*3=", "36=63", True)])


def test_swap_labels_asks_the_model_the_swapped_problem(scripted_model, tokenizer):
    """A model that writes "57" to every prompt: "57" agrees with its own answer to the swapped sum."""
    task = get_task("forward_addition")
    labels = [Label("12+45=", "57", True), Label("45+12=", "58", True), Label("1+2=", "5", False)]
    scored = swap_labels(scripted_model(["5", "7", "<eos>"]), tokenizer, task, labels)
    assert [lab.swapped for lab in scored] == ["57", "57", "57"]
    assert commute_filter(task, scored) == [True, False, False]


def test_commute_refused_for_a_task_without_operands():
    assert parse_recipe(["--task", "multiplication", "--filters", "commute", "length"]).filters[0] == "commute"
    with pytest.raises(RecipeError, match="no operands to swap"):
        parse_recipe(["--task", "copy", "--filters", "commute"])


@pytest.mark.slow
def test_micro_run_records_the_pieces_filter(tmp_path, write_recipe, run_rounds_main):
    argv = write_recipe(tmp_path, filters=["length", "pieces:max_piece=3"], num_rounds=1)
    assert run_rounds_main(argv) == 0
    record = json.loads((tmp_path / "run" / "round-1" / "eval.json").read_text())
    step = record["labels"]["filters"][-1]
    assert step["filter"] == "pieces:max_piece=3"
    assert step["out"] <= step["in"] == record["labels"]["filters"][0]["out"]
    assert step["out"] == record["labels"]["kept"]
    assert step["label_accuracy"] is None or 0.0 <= step["label_accuracy"] <= 1.0


@pytest.mark.slow
def test_micro_run_records_the_commute_filter(tmp_path, write_recipe, run_rounds_main):
    argv = write_recipe(tmp_path, task="reverse_addition", filters=["length", "commute"], num_rounds=1, **SMALL)
    assert run_rounds_main(argv) == 0
    record = json.loads((tmp_path / "run" / "round-1" / "eval.json").read_text())
    step = record["labels"]["filters"][-1]
    assert step["filter"] == "commute"
    assert step["out"] <= step["in"] == record["labels"]["filters"][0]["out"]
    assert step["out"] == record["labels"]["kept"]
