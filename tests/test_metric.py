"""The shipped level_exact_match metric, evaluate_levels with scripted models, and the frontier."""

import evaluate
import pytest

import si_hf.evaluation
from si_hf.data import eval_problems
from si_hf.evaluation import evaluate_levels, frontier, load_metric
from si_hf.tasks import get_task

# -- the metric ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def metric():
    return evaluate.load(si_hf.evaluation.METRIC_PATH)


def test_metric_overall_and_per_level(metric):
    out = metric.compute(
        predictions=["12", "3", "456", "455", "789", "0001", "", "11"],
        references=["12", "4", "456", "456", "789", "0001", "1", "11"],
        levels=[2, 1, 3, 3, 3, 4, 1, 2],
    )
    assert out["exact_match"] == pytest.approx(5 / 8)
    assert out["by_level"] == {1: 0.0, 2: 1.0, 3: pytest.approx(2 / 3), 4: 1.0}
    assert out["count_by_level"] == {1: 2, 2: 2, 3: 3, 4: 1}
    assert list(out["by_level"]) == [1, 2, 3, 4]  # sorted by level


def test_metric_is_exact_whole_string(metric):
    out = metric.compute(predictions=["0123", "123", "1230"], references=["123", "123", "123"], levels=[1, 1, 1])
    assert out["exact_match"] == pytest.approx(1 / 3)


def test_metric_docstring_example(metric):
    out = metric.compute(predictions=["12", "3"], references=["12", "4"], levels=[2, 1])
    assert out == {"exact_match": 0.5, "by_level": {1: 0.0, 2: 1.0}, "count_by_level": {1: 1, 2: 1}}


def test_load_metric_helper():
    out = load_metric().compute(predictions=["1"], references=["1"], levels=[7])
    assert out["by_level"] == {7: 1.0}


# -- evaluate_levels with scripted models -------------------------------------------------------

@pytest.mark.parametrize("backend", ["fast", "generate"])
def test_evaluate_levels_with_a_model_that_stops_at_once(scripted_model, tokenizer, backend):
    task = get_task("copy")
    model = scripted_model(["<eos>"])
    sets = {level: eval_problems(task, level, 7, seed=0) for level in (1, 2, 3)}
    out = evaluate_levels(model, tokenizer, task, sets, batch_size=4, backend=backend, disable_tqdm=True)
    assert out["exact_match"] == 0.0
    assert out["by_level"] == {1: 0.0, 2: 0.0, 3: 0.0}
    assert out["count_by_level"] == {1: 5, 2: 7, 3: 7}


@pytest.mark.parametrize("backend", ["fast", "generate"])
def test_evaluate_levels_counts_exact_matches(scripted_model, tokenizer, backend):
    """A model that always answers "00" is right exactly on the problems whose answer is "00"."""
    task = get_task("copy")
    model = scripted_model(["0", "0", "<eos>"])
    sets = {level: eval_problems(task, level, 1000, seed=2) for level in (1, 2, 3)}
    out = evaluate_levels(model, tokenizer, task, sets, batch_size=16, backend=backend, disable_tqdm=True)
    expected = {level: sum(task.answer(p) == "00" for p in ps) / len(ps) for level, ps in sets.items()}
    assert out["by_level"] == expected
    assert expected[1] == 0.0 and expected[3] == 0.0
    n_hits = sum(task.answer(p) == "00" for p in sets[2])
    assert n_hits == 1  # "00=" is held out at level 2 with this seed, so one hit is expected
    assert out["exact_match"] == pytest.approx(n_hits / sum(len(ps) for ps in sets.values()))


# -- frontier ------------------------------------------------------------------------------------

@pytest.mark.parametrize("by_level,threshold,expected", [
    ({1: 1.0, 2: 1.0, 3: 0.99, 4: 0.5, 5: 1.0}, 0.99, 3),  # a later success past a failure does not count
    ({1: 0.98, 2: 1.0, 3: 1.0}, 0.99, 0),                  # level 1 fails: frontier 0
    ({1: 1.0, 2: 1.0, 3: 1.0}, 0.99, 3),                   # everything solved
    ({3: 0.5, 1: 1.0, 2: 1.0}, 0.99, 2),                   # order of the dict does not matter
    ({1: 0.5, 2: 0.5}, 0.5, 2),                            # threshold is inclusive
    ({1: 0.5, 2: 0.49}, 0.5, 1),
    ({}, 0.99, 0),
    ({5: 1.0, 6: 1.0, 7: 0.2}, 0.99, 6),                   # evaluation may start above level 1
])
def test_frontier(by_level, threshold, expected):
    assert frontier(by_level, threshold) == expected
