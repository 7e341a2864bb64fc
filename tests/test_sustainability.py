"""The law of sustainability (si_hf.sustainability) on records made from a known law: the fit recovers
its parameters, its fixed point and its predictions; the script tests it on held-out runs."""

import json
import re
import runpy
from pathlib import Path

import numpy as np
import pytest
from synthetic_records import round_record

from si_hf.config import parse_recipe
from si_hf.errors import RecipeError
from si_hf.records import write_summary
from si_hf.sustainability import (
    Law,
    collapsed_after,
    distinct_runs,
    errors,
    expit,
    fit_law,
    logit,
    next_level_error,
    phase_strips,
    plot_phases,
    prediction,
    read_runs,
    state_of,
    transitions,
)

TRUE = (0.5, 1.4)  # logit e' = 0.5 + 1.4 logit e: critical error expit(0.5 / -0.4) = 0.223
CRITICAL_ERROR = float(expit(0.5 / (1 - 1.4)))
SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "fit_sustainability.py"


def _series(starts, rounds=6, noise=0.1, seed=0):
    """Errors by round from each start, carried by the TRUE law with noise in log-odds."""
    rng, (alpha, beta) = np.random.default_rng(seed), TRUE
    runs = []
    for e in starts:
        errs = [e]
        for _ in range(rounds):
            if not 0.05 < errs[-1] < 0.95:  # near 0 or 1, where the clipping bounds what is measured
                break
            errs.append(float(expit(alpha + beta * logit(errs[-1]) + rng.normal(0, noise))))
        runs.append(errs)
    return runs


def _records(errs, corrupt_round=None, mode="digits", fraction=0.2):
    """A run's records whose next-level error follows `errs` from round 0 (levels 1-4, then +1 a round)."""
    records = []
    for k, e in enumerate(errs):
        corruption = {"mode": mode, "fraction": fraction} if k == corrupt_round else None
        records.append(round_record(k, 3 + k, accuracy_by_level={str(4 + k): 1.0, str(5 + k): 1 - e},
                                    labels=None if k == 0 else {"corruption": corruption}))
    return records


def _write(directory, records):
    directory.mkdir(parents=True)
    write_summary(directory, records)


def test_the_fit_recovers_a_known_law_its_fixed_point_and_predictions():
    law = fit_law(_series([0.01, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.7]))
    assert law.coefficients[0] == pytest.approx(TRUE, abs=0.08)
    assert all(0 < s < 0.1 for s in law.stderr[0]) and law.rmse < 0.05
    [(error, stable)] = law.fixed_points()
    assert error == pytest.approx(CRITICAL_ERROR, abs=0.02) and not stable
    assert law.critical_accuracy() == pytest.approx(1 - CRITICAL_ERROR, abs=0.02)
    low, high = law.critical_range
    assert low < 1 - CRITICAL_ERROR < high and high - low < 0.1
    assert law.predict(0.1, rounds=20) is None  # below the critical error: errors die out
    assert law.predict(0.3, rounds=20) == 4  # above it: 0.3 -> 0.335 -> 0.387 -> 0.464 -> 0.574
    assert law.predict(0.6, rounds=20) == 0 and law.predict(0.3, rounds=1) is None


def test_a_law_with_beta_below_one_settles_at_its_fixed_point():
    law = Law((-1.0, 0.5), (0, 0), 0.0, 0)
    [(error, stable)] = law.fixed_points()
    assert error == pytest.approx(float(expit(-2.0))) and stable and law.critical_accuracy() is None
    assert law(error) == pytest.approx(error) and law.predict(0.4, 50) is None
    assert law.predict(0.9, rounds=50) is None  # below 0.5 at first, but it climbs back to 1 - e*
    assert Law((-3.0, 1.0), (0, 0), 0, 0).fixed_points() == []  # errors shrink everywhere


def test_a_collapse_is_a_fall_below_the_collapse_accuracy_that_lasts():
    assert collapsed_after([0.1, 0.6, 0.2, 0.7, 0.8]) == 3
    assert collapsed_after([0.6, 0.1]) is None  # a dip it climbs back from
    assert collapsed_after([0.6, None, 0.7]) == 0 and collapsed_after([0.1, 0.2]) is None
    assert collapsed_after([0.1, 0.3], collapse_accuracy=0.8) == 1


def test_the_bounds_are_left_out_of_the_fit_unless_asked():
    runs = [[0.0, 0.0, 0.0], [1.0, 1.0, 1.0], [0.3, 0.1, 0.05], [0.6, 0.8, 0.95]]
    assert fit_law(runs).transitions == 4 and fit_law(runs, bounds=True).transitions == 8


def test_transitions_skip_rounds_without_a_state():
    assert transitions([[0.1, None, 0.2, 0.3], [0.5]]).tolist() == [[0.2, 0.3]]
    with pytest.raises(ValueError, match="at least 3 transitions"):
        fit_law([[0.1, 0.2], [0.0, 0.0, 0.0, 0.0]])  # rounds at no error say nothing of where errors go
    with pytest.raises(ValueError, match="at least 2 different errors"):
        fit_law([[0.1, 0.1, 0.1, 0.1]])


def test_the_state_is_read_from_the_records():
    rec = round_record(2, 3, accuracy_by_level={"5": 1.0, "6": 0.75}, labels={"label_accuracy_kept": 0.9})
    assert rec.levels_trained == "6" and next_level_error(rec) is None  # level 7 was not evaluated
    rec.levels_trained = "5"
    assert next_level_error(rec) == pytest.approx(0.25)
    assert errors([rec], "kept_labels") == [pytest.approx(0.1)] and errors([round_record(0)], "kept_labels") == [None]
    rec.levels_trained = "4x5&5x4"
    assert next_level_error(rec) is None  # levels without a next one


def test_runs_are_read_once_from_directories_and_files(tmp_path):
    full = _records([0.0, 0.1, 0.2])
    _write(tmp_path / "sweep" / "clean", full)
    _write(tmp_path / "sweep" / "shared", [rec for rec in full[:2]])  # the rounds every branch shares
    _write(tmp_path / "sweep" / "other", _records([0.0, 0.3]))
    assert sorted(read_runs(tmp_path / "sweep")) == ["clean", "other", "shared"]
    runs = distinct_runs(read_runs(tmp_path / "sweep"))
    assert sorted(runs) == ["clean", "other"]
    assert errors(runs["clean"]) == pytest.approx([0.0, 0.1, 0.2])
    (tmp_path / "kept.jsonl").write_text((tmp_path / "sweep" / "other" / "summary.jsonl").read_text())
    assert read_runs(tmp_path / "kept.jsonl") == {".": runs["other"]}


def test_the_script_fits_on_some_runs_and_predicts_the_held_out_ones(tmp_path, capsys):
    for i, errs in enumerate(_series([0.01, 0.05, 0.1, 0.3, 0.4, 0.5, 0.12, 0.35], rounds=5)):
        _write(tmp_path / f"run-{i}", _records([0.01, 0.01, *errs], corrupt_round=2, fraction=0.1 * i))
    main = runpy.run_path(str(SCRIPT))["main"]
    assert main([str(tmp_path), "--holdout", "*/run-6", "*/run-7", "--plot", str(tmp_path / "law.png"),
                 "--phases", str(tmp_path / "phases.png"), "--save", str(tmp_path / "law.json")]) == 0
    assert (tmp_path / "law.png").read_bytes()[:4] == b"\x89PNG" and (tmp_path / "phases.png").read_bytes()[:4] == \
        b"\x89PNG"
    law = Law.load(tmp_path / "law.json")
    assert law.transitions > 10 and law.coefficients[0] == pytest.approx(TRUE, abs=0.15)
    out = capsys.readouterr().out
    assert "law (next_level, fitted): logit e' = " in out and "(critical)" in out
    assert re.search(f"{tmp_path}/run-6: from round 2, predicted sustains, measured sustains over \\d rounds: hit "
                     r"\(held out\); frontier 5 -> ", out)
    assert re.search(f"{tmp_path}/run-7: from round 2, predicted collapses after \\d, measured collapses after \\d "
                     r"over 5 rounds: hit \(held out\)", out)
    assert "held out: 2 of 2 predicted right" in out
    assert main([str(tmp_path / "nothing")]) == 2


def test_the_script_scores_runs_against_a_saved_law_without_refitting_it(tmp_path, capsys):
    Law(TRUE, (0.1, 0.1), 0.1, 20, "next_level").save(tmp_path / "law.json")
    # Clean runs (no corruption) that part from a shared start at round 3: one below the critical
    # error, one above it, carried by the saved law without noise.
    for name, e in (("low", 0.05), ("high", 0.5)):
        errs = [0.01, 0.01, 0.01, e]
        while len(errs) < 9:
            errs.append(float(np.clip(expit(TRUE[0] + TRUE[1] * logit(errs[-1])), 0.005, 0.995)))
        _write(tmp_path / "sweep" / name, _records(errs))
    main = runpy.run_path(str(SCRIPT))["main"]
    assert main([str(tmp_path / "sweep"), "--law", str(tmp_path / "law.json"), "--start_round", "3",
                 "--plot", str(tmp_path / "law.png")]) == 0
    out = capsys.readouterr().out
    assert f"law (next_level, saved in {tmp_path / 'law.json'}): logit e' = 0.500 (+-0.100) + 1.400" in out
    assert re.search(r"/low: from round 3, predicted sustains, measured sustains over 5 rounds: hit \(held out\)", out)
    assert re.search(r"/high: from round 3, predicted collapses after 1, measured collapses after 1 over 5 rounds: "
                     r"hit \(held out\)", out)
    assert "held out: 2 of 2 predicted right" in out
    assert (tmp_path / "law.png").read_bytes()[:4] == b"\x89PNG"
    (tmp_path / "bad.json").write_text("{")
    assert main([str(tmp_path / "sweep"), "--law", str(tmp_path / "bad.json")]) == 2
    assert "--law: " in capsys.readouterr().err
    assert main([str(tmp_path / "sweep"), "--law", str(tmp_path / "law.json"), "--holdout", "*/low"]) == 2
    assert "--holdout and --bounds do not apply" in capsys.readouterr().err


def test_runs_of_several_seeds_share_a_phase_cell_side_by_side():
    runs = [{"mode": "digits", "fraction": 0.2, "measured": None, "seed": 1},
            {"mode": "digits", "fraction": 0.2, "measured": 4, "seed": 2},
            {"mode": "none", "fraction": 0.0, "measured": None, "seed": 1}]
    strips = phase_strips(runs)
    assert [(pytest.approx(left), pytest.approx(width), y, o["seed"]) for left, width, y, o in strips] == [
        (0.55, 0.45, 0, 1), (1.0, 0.45, 0, 2), (-0.45, 0.9, 1, 1)]
    assert plot_phases(runs)[:4] == b"\x89PNG"


def test_a_law_of_another_form_is_refused_by_name(tmp_path):
    old = tmp_path / "old.json"
    old.write_text(json.dumps({"coefficients": [0.01, 0.5, 1.2], "stderr": [0, 0, 0], "rmse": 0, "transitions": 9}))
    with pytest.raises(ValueError, match="2 coefficients"):
        Law.load(old)
    with pytest.raises(RecipeError, match="sustainability_law: .*old.json"):
        parse_recipe(["--task", "copy", "--sustainability_law", str(old)])
    (tmp_path / "junk.json").write_text("{")
    with pytest.raises(ValueError, match="not a law"):
        Law.load(tmp_path / "junk.json")


@pytest.mark.slow
def test_a_run_records_what_its_law_predicts_after_every_round(tmp_path, write_recipe, run_rounds_main, capsys):
    from conftest import SMALL

    law_file = tmp_path / "law.json"
    Law(TRUE, (0.01, 0.02), 0.004, 40, critical_range=(0.7, 0.8)).save(law_file)
    assert Law.load(law_file) == Law(TRUE, (0.01, 0.02), 0.004, 40, critical_range=(0.7, 0.8))
    argv = write_recipe(tmp_path, num_rounds=2, eval_max_level=7) + ["--sustainability_law", str(law_file)]
    assert run_rounds_main(argv) == 0
    log = capsys.readouterr().out
    records = [json.loads((tmp_path / "run" / f"round-{k}" / "eval.json").read_text()) for k in range(3)]
    for k in range(3):  # round 0 too: its model labels round 1
        top = int(records[k]["levels_trained"].split("-")[-1])
        error = 1 - records[k]["accuracy_by_level"][str(top + 1)]
        p = records[k]["prediction"]
        assert p["collapses_after"] == Law.load(law_file).predict(error, 2 - k)
        assert p["critical_accuracy"] == pytest.approx(1 - CRITICAL_ERROR) and p["state"] == "next_level"
        assert f"[round {k}/2] the law predicts: " in log and p["rounds_left"] == 2 - k
    assert "After round 2 the law of sustainability predicts: " in (tmp_path / "run" / "summary.md").read_text()
    argv = write_recipe(tmp_path, name="nolaw", **SMALL) + ["--sustainability_law", str(tmp_path / "missing.json")]
    assert run_rounds_main(argv) == 2


TRUE_2D = ((-0.6, 0.6, 0.3), (-0.4, 0.1, 0.7))  # logit e1' = -0.6 + 0.6 logit e1 + 0.3 logit e2; e2' likewise


def _two_level_runs(starts, rounds=5, noise=0.05, seed=1):
    """States (e1, e2) by round from each start, carried by the TRUE_2D law with noise in log-odds."""
    law, rng = Law(TRUE_2D, np.zeros((2, 3)), 0.0, 0, "next_two_levels"), np.random.default_rng(seed)
    runs = []
    for start in starts:
        path = [start]
        for _ in range(rounds):
            path.append(tuple(float(e) for e in expit(logit(law(path[-1])) + rng.normal(0, noise, 2))))
        runs.append(path)
    return runs


def test_a_law_of_two_errors_is_recovered_and_judged_on_the_first():
    runs = _two_level_runs([(0.02, 0.1), (0.05, 0.3), (0.1, 0.2), (0.2, 0.5), (0.05, 0.05), (0.3, 0.4), (0.6, 0.7)])
    law = fit_law(runs, "next_two_levels")
    assert np.array(law.coefficients) == pytest.approx(np.array(TRUE_2D), abs=0.1)
    assert law.dims == 2 and np.array(law.stderr).shape == (2, 3) and law.transitions == 35
    assert Law(TRUE_2D, np.zeros((2, 3)), 0, 0, "next_two_levels").growth() == pytest.approx([0.83, 0.47], abs=0.01)
    # z* = (I - B)^-1 a = (-3.333, -2.444): stable (eigenvalues 0.83 and 0.47)
    (error, stable), = Law(TRUE_2D, np.zeros((2, 3)), 0, 0, "next_two_levels").fixed_points()
    assert error == pytest.approx(float(expit(-0.3 / 0.09)), abs=1e-6) and stable
    # The second error carries into the first: from the same first error, a worse second one is worse.
    assert law((0.2, 0.9))[0] > law((0.2, 0.05))[0]
    assert law.predict((0.9, 0.9), 1) == 0 and law.predict((0.45, 0.5), 3) is None
    rec = round_record(2, 3, accuracy_by_level={"4": 0.9, "5": 0.6})
    rec.levels_trained = "3"
    assert state_of(rec, "next_two_levels") == pytest.approx((0.1, 0.4)) and errors([rec], "next_two_levels") == \
        [pytest.approx(0.1)]
    p = prediction(law, rec, rounds_left=4)
    assert p["collapses_after"] == law.predict((0.1, 0.4), 4) and p["state"] == "next_two_levels"
    rec.accuracy_by_level.pop("5")
    assert state_of(rec, "next_two_levels") is None  # a state with an error missing is no state
    assert prediction(law, rec, rounds_left=4) is None


def test_the_script_fits_a_two_error_law_from_a_round_after_the_corruption(tmp_path, capsys):
    for i, path in enumerate(_two_level_runs([(0.02, 0.1), (0.05, 0.3), (0.1, 0.2), (0.2, 0.5), (0.05, 0.05),
                                              (0.3, 0.4)])):
        # round 2 is corrupted (a state the law never saw: both errors at 0.9); the law starts at round 3
        states = [(0.01, 0.02), (0.01, 0.02), (0.9, 0.9), *path]
        records = []
        for k, (e1, e2) in enumerate(states):
            records.append(round_record(k, 3 + k, accuracy_by_level={str(4 + k): 1 - e1, str(5 + k): 1 - e2},
                                        labels=None if k == 0 else {"corruption": {"mode": "digits", "fraction": 0.2}
                                                                    if k == 2 else None}))
            records[-1].levels_trained = str(3 + k)
        _write(tmp_path / f"run-{i}", records)
    main = runpy.run_path(str(SCRIPT))["main"]
    assert main([str(tmp_path), "--state", "next_two_levels", "--skip_rounds", "1", "--holdout", "*/run-5",
                 "--save", str(tmp_path / "law.json"), "--plot", str(tmp_path / "law.png")]) == 0
    out = capsys.readouterr().out
    assert "law (next_two_levels, fitted): logit e1' = " in out and "logit e2' = " in out
    assert re.search(r"/run-5: from round 3, predicted .*, measured .* over 5 rounds: hit \(held out\)", out)
    law = Law.load(tmp_path / "law.json")
    assert law.transitions == 25 and np.array(law.coefficients) == pytest.approx(np.array(TRUE_2D), abs=0.15)
    assert (tmp_path / "law.png").read_bytes()[:4] == b"\x89PNG"
