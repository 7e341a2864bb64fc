"""Property-based tests (hypothesis): the recipe parser, every task's format, and the label filters."""

import math
import random
import tempfile
from collections import Counter
from fractions import Fraction
from functools import lru_cache
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from si_hf.config import FIELDS, Recipe, RecipeError, parse_recipe
from si_hf.filters import apply_filters, length_filter, majority_vote
from si_hf.labeling import Label
from si_hf.tasks import TASKS, get_task
from si_hf.tokenization import DEFAULT_ALPHABET, task_tokenizer

SETTINGS = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _parse_yaml(data) -> Recipe:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "recipe.yaml"
        path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
        return parse_recipe(["--config", str(path)])


# -- the recipe parser ------------------------------------------------------------------------------

YAML_VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(-10, 5000), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12), st.lists(st.integers(-3, 3) | st.text(max_size=4), max_size=3),
    st.dictionaries(st.text(max_size=4), st.integers(), max_size=2),
)


@SETTINGS
@given(st.dictionaries(st.sampled_from(sorted(FIELDS)), YAML_VALUES, max_size=4))
def test_any_yaml_recipe_parses_or_is_a_recipe_error(fields):
    """Whatever a YAML recipe holds, parsing gives a valid recipe or a RecipeError (never another
    exception); a valid one round-trips through YAML."""
    try:
        recipe = _parse_yaml(fields)
    except RecipeError as err:
        assert str(err)
        return
    assert recipe == recipe.validate()
    assert _parse_yaml(recipe.to_dict()) == recipe


@SETTINGS
@given(st.from_regex(r"[a-z][a-z_]{0,20}", fullmatch=True))
def test_unknown_fields_are_named(name):
    assume(name not in FIELDS)
    with pytest.raises(RecipeError, match="unknown field") as info:
        _parse_yaml({name: 1})
    assert repr(name) in str(info.value)


UNIT_FIELDS = ["frontier_threshold", "newest_fraction", "min_lr_ratio", "corrupt_fraction", "collapse_floor"]
STEP_FIELDS = ["base_steps", "base_warmup_steps", "base_decay_steps", "round_steps", "round_warmup_steps",
               "round_decay_steps", "labels_per_round", "batch_size", "eval_size", "num_rounds"]


@SETTINGS
@given(st.sampled_from(UNIT_FIELDS), st.floats(allow_nan=True, allow_infinity=True))
def test_thresholds_outside_0_1_are_refused(name, value):
    fields = {name: value}
    if 0.0 <= value <= 1.0:
        assert getattr(_parse_yaml(fields), name) == value
    else:
        with pytest.raises(RecipeError, match=name):
            _parse_yaml(fields)


@SETTINGS
@given(st.sampled_from(STEP_FIELDS), st.integers(max_value=-1))
def test_negative_steps_and_sizes_are_refused(name, value):
    with pytest.raises(RecipeError, match=name):
        _parse_yaml({name: value})


@SETTINGS
@given(st.sampled_from(["base", "eval"]), st.integers(1, 50), st.integers(1, 50))
def test_empty_level_ranges_are_refused(which, low, high):
    fields = {f"{which}_min_level": low, f"{which}_max_level": high}
    if low <= high:
        _parse_yaml(fields)
    else:
        with pytest.raises(RecipeError, match=f"{which}_min_level"):
            _parse_yaml(fields)


# -- task formats -----------------------------------------------------------------------------------

# Valid levels per task (a task not listed here takes integer levels from 1).
LEVELS = {
    "maze_hops": st.integers(1, 29),
    "maze_hops_15": st.integers(1, 14),
    "maze_chain_15": st.integers(1, 14),
    "maze_nodes": st.integers(10, 99),
    "multiplication": st.tuples(st.integers(1, 6), st.integers(1, 6)),
}
TASK_NAMES = sorted(TASKS)


def _levels(name):
    return LEVELS.get(name, st.integers(1, 30))


@lru_cache(maxsize=None)
def _tokenizer(name):
    return task_tokenizer(get_task(name))


@pytest.mark.parametrize("name", TASK_NAMES)
def test_task_format_round_trips(name):
    task = get_task(name)
    tokenizer = _tokenizer(name)

    @SETTINGS
    @given(_levels(name), st.integers(0, 2**32))
    def check(level, seed):
        problem = task.sample(level, random.Random(seed))
        prompt, answer = task.prompt(problem), task.answer(problem)
        assert problem.level == level
        assert task.parse(prompt) == problem  # the prompt states the problem
        assert task.answer(task.parse(prompt)) == answer
        assert task.prompt(problem) == prompt and task.answer(problem) == answer  # deterministic
        assert task.num_tokens(answer) <= task.max_answer_len(prompt)
        assert task.plausible(prompt, answer)
        for text in (prompt, answer, prompt + answer):  # every token is in the task's vocabulary
            ids = tokenizer(text, add_special_tokens=False)["input_ids"]
            assert tokenizer.unk_token_id not in ids
            assert len(ids) == task.num_tokens(text)
            assert tokenizer.decode(ids) == text

    check()


# -- filters ----------------------------------------------------------------------------------------

def _alphabet(task):
    return list(task.alphabet) if task.alphabet is not None else list(DEFAULT_ALPHABET)


@st.composite
def labels_of(draw, name):
    """Labels of one task: prompts drawn at valid levels; completions the answer, a cut or longer answer,
    or random tokens; finished or not; a confidence."""
    task = get_task(name)
    tokens = _alphabet(task)
    out = []
    for _ in range(draw(st.integers(0, 8))):
        problem = task.sample(draw(_levels(name)), random.Random(draw(st.integers(0, 2**32))))
        prompt, answer = task.prompt(problem), task.answer(problem)
        kind = draw(st.sampled_from(["answer", "cut", "longer", "random"]))
        if kind == "answer":
            completion = answer
        elif kind == "cut":
            completion = answer[: draw(st.integers(0, max(0, len(answer) - 1)))]
        elif kind == "longer":
            completion = answer + "".join(draw(st.lists(st.sampled_from(tokens), min_size=1, max_size=3)))
        else:
            completion = "".join(draw(st.lists(st.sampled_from(tokens), max_size=12)))
        out.append(Label(prompt, completion, draw(st.booleans()), draw(st.floats(0, 1))))
    return out


FILTER_SPECS = st.lists(st.one_of(
    st.just("length"),
    st.integers(1, 4).map(lambda t: f"length_relative:threshold={t}"),
    st.floats(0, 1).map(lambda t: f"confidence:threshold={t}"),
), max_size=3)


@pytest.mark.parametrize("name", TASK_NAMES)
def test_filters_keep_mask_and_length_bound(name):
    task = get_task(name)

    @SETTINGS
    @given(labels_of(name), FILTER_SPECS)
    def check(labels, specs):
        keep, stats = apply_filters(task, labels, specs)
        assert len(keep) == len(labels) and all(isinstance(k, bool) for k in keep)
        assert [s["in"] for s in stats] == ([len(labels)] + [s["out"] for s in stats])[:len(stats)]
        assert all(s["out"] <= s["in"] for s in stats) and (not stats or stats[-1]["out"] == sum(keep))
        if specs:
            assert all(lab.finished for lab, k in zip(labels, keep) if k)  # every filter needs EOS
        length = length_filter(task, labels)
        assert len(length) == len(labels)
        for lab, kept in zip(labels, length):
            if kept:  # never a label longer than the prompt's bound
                assert task.num_tokens(lab.completion) <= task.max_answer_len(lab.prompt)

    check()


@SETTINGS
@given(st.integers(1, 5), st.integers(1, 6), st.integers(1, 20), st.data())
def test_majority_vote_keeps_exactly_the_agreed_labels(k, n, denominator, data):
    tau = Fraction(data.draw(st.integers(1, denominator)), denominator)
    need = max(1, math.ceil(tau * k))  # exact: ceil(tau * K) identical finished votes
    completions = st.sampled_from(["1", "12", "21", ""])
    label_sets = [[Label(f"{i}=", data.draw(completions), data.draw(st.booleans())) for i in range(n)]
                  for _ in range(k)]
    keep, chosen = majority_vote(label_sets, float(tau))
    assert len(keep) == len(chosen) == n
    for i in range(n):
        votes = Counter(labels[i].completion for labels in label_sets if labels[i].finished)
        best = max(votes.values(), default=0)
        assert keep[i] == (best >= need)
        if votes:
            assert votes[chosen[i]] == best
        else:
            assert chosen[i] is None and not keep[i]
