"""Label filters: the length filter and apply_filters, the batch-relative length rule, filter specs
with options, and the majority vote over K models."""

import pytest

from si_hf.config import RecipeError, parse_recipe
from si_hf.filters import (
    FILTERS,
    Label,
    apply_filters,
    length_filter,
    length_relative_filter,
    majority_vote,
    min_votes,
    parse_filter_spec,
    vote_labels,
)
from si_hf.tasks import get_task

# -- the length filter and apply_filters -----------------------------------------------------------

LABELS = [
    Label("12345=", "12345", True),    # finished, plausible
    Label("12345=", "99999", True),    # finished, plausible (wrong value: the filter cannot know)
    Label("12345=", "1234", True),     # too short
    Label("12345=", "123456", True),   # too long
    Label("12345=", "12345", False),   # no EOS within the bound
    Label("12345=", "12a45", True),    # not digits
    Label("7=", "7", True),            # finished, plausible
    Label("7=", "", True),             # empty
]
EXPECTED_KEEP = [True, True, False, False, False, False, True, False]


def test_length_filter():
    assert length_filter(get_task("copy"), LABELS) == EXPECTED_KEEP


def test_length_filter_reverse_addition():
    task = get_task("reverse_addition")
    labels = [Label("54321+789=", "233310", True), Label("54321+789=", "23331", True),
              Label("54321+789=", "2333100", False), Label("1+2=", "30", True), Label("1+2=", "3", True)]
    assert length_filter(task, labels) == [True, False, False, True, False]


def test_apply_filters_stats():
    task = get_task("copy")
    keep, stats = apply_filters(task, LABELS, ["length"])
    assert keep == EXPECTED_KEEP
    assert stats == [{"filter": "length", "in": len(LABELS), "out": sum(EXPECTED_KEEP)}]
    keep2, stats2 = apply_filters(task, LABELS, ["length", "length"])
    assert keep2 == EXPECTED_KEEP
    assert stats2[1] == {"filter": "length", "in": 3, "out": 3}
    keep3, stats3 = apply_filters(task, LABELS, [])
    assert keep3 == [True] * len(LABELS) and stats3 == []


def test_apply_filters_chains_masks(monkeypatch):
    task = get_task("copy")
    monkeypatch.setitem(FILTERS, "first_half", lambda task, labels: [i < len(labels) // 2 for i in range(len(labels))])
    keep, stats = apply_filters(task, LABELS, ["first_half", "length"])
    assert keep == [k and i < 4 for i, k in enumerate(EXPECTED_KEEP)]
    assert stats == [{"filter": "first_half", "in": 8, "out": 4}, {"filter": "length", "in": 4, "out": 2}]


# -- the batch-relative length rule ----------------------------------------------------------------

P5 = "12345+98765="  # forward addition, 5 digits: the sum has 5 or 6
P5B = "55555+44444="  # same prompt length: the same batch
P2 = "12+34="        # another prompt length: another batch

FORWARD = [
    Label(P5, "111110", True),   # 6 tokens: the longest finished one of its batch
    Label(P5, "99999", True),    # 5: kept (1 shorter)
    Label(P5B, "9999", True),    # 4: dropped (2 shorter)
    Label(P5, "999", True),      # 3: dropped
    Label(P5, "12345678", False),  # unfinished: dropped, and not the batch's longest
    Label(P2, "46", True),       # its own batch: longest is 2
    Label(P2, "4", True),        # 1 shorter than 2: kept
    Label(P2, "", True),         # 2 shorter: dropped
]


def test_length_relative_default_threshold_is_two():
    task = get_task("forward_addition")
    assert length_relative_filter(task, FORWARD) == [True, True, False, False, False, True, True, False]
    assert FILTERS["length_relative"] is length_relative_filter


@pytest.mark.parametrize("threshold,expected", [
    (1, [True, False, False, False, False, True, False, False]),   # only the longest survive
    (3, [True, True, True, False, False, True, True, True]),
    (10, [True, True, True, True, False, True, True, True]),       # unfinished labels never pass
])
def test_length_relative_threshold(threshold, expected):
    assert length_relative_filter(get_task("forward_addition"), FORWARD, threshold=threshold) == expected


def test_length_relative_counts_tokens_not_characters():
    task = get_task("maze_hops")
    prompt = "5>3#12:5,3,7-3:12-7:12-5:12="
    labels = [Label(prompt, "5>12>3", True), Label(prompt, "5>3", True), Label(prompt, "5>12>7>3", True)]
    # 5, 3 and 7 tokens ("12" is one token): 3 is 4 shorter than 7, 5 is 2 shorter
    assert length_relative_filter(task, labels, threshold=3) == [True, False, True]
    assert length_relative_filter(task, labels, threshold=5) == [True, True, True]


def test_length_relative_bad_threshold():
    task = get_task("forward_addition")
    for bad in [0, -1, 1.5, True, "2"]:
        with pytest.raises(ValueError, match="threshold"):
            length_relative_filter(task, FORWARD, threshold=bad)


def test_length_relative_edge_cases():
    task = get_task("forward_addition")
    assert length_relative_filter(task, []) == []
    assert length_relative_filter(task, [Label(P5, "1", False), Label(P5, "12", False)]) == [False, False]


# -- specs and apply_filters ---------------------------------------------------------------------

@pytest.mark.parametrize("spec,expected", [
    ("length", ("length", {})),
    ("length_relative", ("length_relative", {})),
    ("length_relative:threshold=3", ("length_relative", {"threshold": 3})),
    (" length_relative : threshold = 3 ", ("length_relative", {"threshold": 3})),
    ("length_relative:threshold=3,", ("length_relative", {"threshold": 3})),
    (("length_relative", {"threshold": 4}), ("length_relative", {"threshold": 4})),
    ("majority_vote", ("majority_vote", {})),
    ("majority_vote:tau=0.6", ("majority_vote", {"tau": 0.6})),
])
def test_parse_filter_spec(spec, expected):
    assert parse_filter_spec(spec) == expected


@pytest.mark.parametrize("spec,match", [
    ("lenght", "did you mean 'length'"),
    ("majority_vot", "did you mean 'majority_vote'"),
    ("majority_vote:tau=0", "tau must be"),
    ("majority_vote:tau=yes", "tau must be"),
    ("majority_vote:k=3", "unknown option"),
    ("length_relative:threshold", "key=value"),
    ("length_relative:=3", "key=value"),
    ("length_relative:threshold=[1", "cannot read"),
    (3, "a filter is a name"),
])
def test_parse_filter_spec_errors(spec, match):
    with pytest.raises(ValueError, match=match):
        parse_filter_spec(spec)


def test_apply_filters_with_options_and_stats():
    task = get_task("forward_addition")
    keep, stats = apply_filters(task, FORWARD, ["length_relative:threshold=3"])
    assert keep == [True, True, True, False, False, True, True, True]
    assert stats == [{"filter": "length_relative:threshold=3", "in": 8, "out": 6}]
    keep, stats = apply_filters(task, FORWARD, ["length", "length_relative"])
    # length keeps 111110, 99999 and the two-digit sum 46; the relative rule keeps all three
    assert keep == [True, True, False, False, False, True, False, False]
    assert stats == [{"filter": "length", "in": 8, "out": 3}, {"filter": "length_relative", "in": 3, "out": 3}]
    keep, stats = apply_filters(task, FORWARD, [("length_relative", {"threshold": 1})])
    assert stats == [{"filter": "length_relative", "in": 8, "out": 2}]


def test_apply_filters_later_filters_see_only_survivors():
    """After `length`, the relative rule compares with the longest plausible label, not an overlong one."""
    task = get_task("forward_addition")
    labels = [Label(P5, "1234567", True), Label(P5, "12345", True), Label(P5, "123456", True)]
    assert apply_filters(task, labels, ["length_relative"])[0] == [True, False, True]
    assert apply_filters(task, labels, ["length", "length_relative"])[0] == [False, True, True]


def test_apply_filters_initial_mask_and_errors():
    task = get_task("copy")
    labels = [Label("12=", "12", True), Label("12=", "1", True), Label("3=", "3", True)]
    keep, stats = apply_filters(task, labels, ["length"], keep=[False, True, True])
    assert keep == [False, False, True] and stats == [{"filter": "length", "in": 2, "out": 1}]
    assert apply_filters(task, labels, [], keep=[True, False, True]) == ([True, False, True], [])
    with pytest.raises(ValueError, match="keep has"):
        apply_filters(task, labels, ["length"], keep=[True])
    with pytest.raises(ValueError, match="unknown filter"):
        apply_filters(task, labels, ["length", "nope"])


def test_length_filter_on_the_new_tasks():
    mult, maze = get_task("multiplication"), get_task("maze_hops")
    prompt = "4321*765="
    answer = "83680+040470(876280)+0007160=8769960"
    assert length_filter(mult, [Label(prompt, answer, True), Label(prompt, answer, False),
                                Label(prompt, answer[:-1], True)]) == [True, False, False]
    mp = "5>3#12:5,3,7-3:12-7:12-5:12="
    assert length_filter(maze, [Label(mp, "5>12>3", True), Label(mp, "5>12>", True),
                                Label(mp, "5>12>3", False)]) == [True, False, False]


def test_path_filter_keeps_only_walks_along_the_prompts_edges():
    """Tree 5-12-3 with 7 on 12: only 5>12>3 walks the prompt's edges from 5 to 3; 5>7>3 is well formed
    (the length filter keeps it) but 7-3 is no edge."""
    from si_hf.filters import path_filter

    maze, mp = get_task("maze_hops"), "5>3#12:5,3,7-3:12-7:12-5:12="
    labels = [Label(mp, "5>12>3", True), Label(mp, "5>7>3", True), Label(mp, "5>12>3", False),
              Label(mp, "5>12>7>12>3", True), Label(mp, "3>12>5", True)]
    assert length_filter(maze, labels) == [True, True, False, False, False]
    assert path_filter(maze, labels) == [True, False, False, False, False]
    assert apply_filters(maze, labels, ["length", "path"])[0] == [True, False, False, False, False]
    with pytest.raises(ValueError, match="no edges to follow"):
        path_filter(get_task("copy"), [Label("12=", "12", True)])
    assert parse_recipe(["--task", "maze_nodes", "--filters", "length", "path"]).filters == ["length", "path"]
    with pytest.raises(RecipeError, match="no edges to follow"):
        parse_recipe(["--task", "copy", "--filters", "path"])


def test_recipe_filters_validate():
    assert parse_recipe(["--filters", "length", "length_relative"]).filters == ["length", "length_relative"]
    with pytest.raises(RecipeError, match="did you mean 'length_relative'"):
        parse_recipe(["--filters", "length_relativ"])


# -- majority vote -------------------------------------------------------------------------------

def _sets(outputs, prompts=("1*1=", "2*2=", "3*3=")):
    """outputs[m][i] -> label sets; a trailing `!` marks an unfinished output."""
    return [[Label(p, o.rstrip("!"), not o.endswith("!")) for p, o in zip(prompts, row)] for row in outputs]


@pytest.mark.parametrize("k,tau,need", [(5, 0.7, 4), (5, 1.0, 5), (5, 0.6, 3), (5, 0.5, 3), (3, 0.7, 3),
                                        (1, 0.7, 1), (4, 0.7, 3), (10, 0.7, 7), (5, 0.01, 1)])
def test_min_votes(k, tau, need):
    assert min_votes(k, tau) == need


@pytest.mark.parametrize("tau", [0.0, -0.1, 1.1])
def test_min_votes_rejects_bad_tau(tau):
    with pytest.raises(ValueError, match="tau"):
        min_votes(5, tau)


def test_majority_vote_four_of_five():
    sets = _sets([
        ["1=1", "4=4", "9=9"],
        ["1=1", "4=4", "8=8"],
        ["1=1", "4=4", "7=7"],
        ["1=1", "4=4", "9=9"],
        ["1=2", "5=4", "9=9"],
    ])
    keep, chosen = majority_vote(sets, tau=0.7)  # 4 of 5 needed
    assert keep == [True, True, False]
    assert chosen == ["1=1", "4=4", "9=9"]  # the most voted output, kept or not
    keep, _ = majority_vote(sets, tau=0.6)  # 3 of 5
    assert keep == [True, True, True]
    keep, _ = majority_vote(sets, tau=1.0)
    assert keep == [False, False, False]


def test_majority_vote_whole_output_counts():
    """Outputs that agree on the final answer but not on the chain of thought do not agree."""
    answer = "83680+040470(876280)+0007160=8769960"
    other_cot = "83680+040470(876281)+0007160=8769960"
    sets = _sets([[answer]] * 3 + [[other_cot]] * 2, prompts=("4321*765=",))
    assert majority_vote(sets, tau=0.7) == ([False], [answer])
    assert majority_vote(sets, tau=0.6) == ([True], [answer])


def test_majority_vote_unfinished_outputs_do_not_vote():
    sets = _sets([["7!"], ["7!"], ["7!"], ["7!"], ["7"]], prompts=("7=",))
    assert majority_vote(sets, tau=0.7) == ([False], ["7"])
    assert majority_vote(sets, tau=0.2) == ([True], ["7"])
    none = _sets([["7!"], ["8!"]], prompts=("7=",))
    assert majority_vote(none, tau=0.5) == ([False], [None])


def test_majority_vote_ties_and_single_model():
    sets = _sets([["a"], ["b"], ["b"], ["a"]], prompts=("x=",))
    assert majority_vote(sets, tau=0.5) == ([True], ["a"])  # tie: the output the earliest model wrote
    single = _sets([["1", "2"]], prompts=("1=", "2="))
    assert majority_vote(single, tau=0.7) == ([True, True], ["1", "2"])
    assert majority_vote([[]], tau=0.7) == ([], [])


def test_majority_vote_rejects_mismatched_sets():
    with pytest.raises(ValueError, match="at least one model"):
        majority_vote([], tau=0.7)
    with pytest.raises(ValueError, match="same prompts"):
        majority_vote(_sets([["1", "2", "3"]]) + [_sets([["1", "2", "3"]])[0][:2]], tau=0.7)
    a = _sets([["1"]], prompts=("1=",))[0]
    b = _sets([["1"]], prompts=("2=",))[0]
    with pytest.raises(ValueError, match="differs between models"):
        majority_vote([a, b], tau=0.7)


def test_majority_vote_is_pure():
    sets = _sets([["1", "2", "3"], ["1", "2", "4"], ["1", "5", "3"]])
    copy = [list(s) for s in sets]
    first = majority_vote(sets, tau=0.6)
    assert majority_vote(sets, tau=0.6) == first and sets == copy


def test_vote_labels_then_filters():
    task = get_task("multiplication")
    p1, p2, p3 = "4321*765=", "21*43=", "9*9="
    a1, a2, a3 = "83680+040470(876280)+0007160=8769960", "840+0630=8040", "18=18"
    sets = [
        [Label(p1, a1, True), Label(p2, a2, True), Label(p3, a3, False)],
        [Label(p1, a1, True), Label(p2, "840+063=8040", True), Label(p3, "18=1", True)],
        [Label(p1, a1, True), Label(p2, "840+063=8040", True), Label(p3, "18=2", True)],
    ]
    labels, keep, stats = vote_labels(sets, tau=0.6)  # 2 of 3
    assert [lab.completion for lab in labels] == [a1, "840+063=8040", "18=1"]
    assert [lab.finished for lab in labels] == [True, True, True]
    assert keep == [True, True, False]
    assert stats == {"filter": "majority_vote", "in": 3, "out": 2, "models": 3, "min_votes": 2}
    # the agreed output of p2 is one digit short: the length filter drops it afterwards
    final, fstats = apply_filters(task, labels, ["length"], keep=keep)
    assert final == [True, False, False]
    assert fstats == [{"filter": "length", "in": 2, "out": 1}]
    unfinished = [[Label(p3, "18", False)], [Label(p3, "19", False)]]
    labels, keep, _ = vote_labels(unfinished, tau=0.5)
    assert labels == [Label(p3, "18", False)] and keep == [False]
