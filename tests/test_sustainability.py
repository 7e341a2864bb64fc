"""The law of sustainability (si_hf.sustainability) on records made from a known law: the fit recovers
its parameters, its fixed points and its predictions."""

import numpy as np
import pytest
from synthetic_records import round_record

from si_hf.records import write_summary
from si_hf.sustainability import Law, fit_law, kept_errors, read_runs, transitions

TRUE = (0.01, 0.5, 1.2)  # f(e) = 0.01 + 0.5 e + 1.2 e^2: stable at e = 0.021, unstable at e = 0.396


def _series(starts, rounds=6, noise=0.003, seed=0):
    rng, law = np.random.default_rng(seed), Law(TRUE, (0, 0, 0), 0.0, 0)
    runs = []
    for e in starts:
        errors = [e]
        for _ in range(rounds):
            if errors[-1] > 0.7:  # collapsed: a sweep stops looking here
                break
            errors.append(float(np.clip(law(errors[-1]) + rng.normal(0, noise), 0, 1)))
        runs.append(errors)
    return runs


def test_the_fit_recovers_a_known_law_its_fixed_points_and_predictions():
    law = fit_law(_series([0.0, 0.02, 0.05, 0.1, 0.2, 0.3, 0.35, 0.38, 0.42, 0.45, 0.5]))
    assert law.coefficients == pytest.approx(TRUE, abs=0.06)
    assert all(0 < s < 0.1 for s in law.stderr) and law.rmse < 0.01
    (low, low_stable), (high, high_stable) = law.fixed_points()
    assert low == pytest.approx(0.021, abs=0.01) and low_stable
    assert high == pytest.approx(0.396, abs=0.03) and not high_stable
    assert law.critical_accuracy() == pytest.approx(0.604, abs=0.03)
    assert law.predict(0.1, rounds=20) is None  # below the critical error: it settles
    assert law.predict(0.45, rounds=20) is not None and law.predict(0.6, rounds=20) == 1


def test_transitions_skip_rounds_that_kept_nothing():
    assert transitions([[0.1, None, 0.2, 0.3], [0.5]]).tolist() == [[0.2, 0.3]]
    with pytest.raises(ValueError, match="at least 3 transitions"):
        fit_law([[0.1, 0.2]])


def test_runs_are_read_from_their_records(tmp_path):
    for name, accs in (("a", [1.0, 0.9, None]), ("b/seed-0", [0.95, 0.97])):
        records = [round_record(0, 3)] + [
            round_record(k, 3, labels={"label_accuracy_kept": acc}) for k, acc in enumerate(accs, 1)]
        (tmp_path / name).mkdir(parents=True)
        write_summary(tmp_path / name, records)
    runs = read_runs(tmp_path)
    assert sorted(runs) == ["a", "b/seed-0"]
    assert kept_errors(runs["a"]) == pytest.approx([0.0, 0.1, None]) and kept_errors(runs["a"])[2] is None


def test_the_script_fits_runs_on_disk_and_names_what_it_predicts(tmp_path, capsys):
    import runpy
    from pathlib import Path

    for i, errors in enumerate(_series([0.0, 0.05, 0.1, 0.2, 0.3, 0.45, 0.5])):
        records = [round_record(0, 3)] + [round_record(k, 3, labels={"label_accuracy_kept": 1 - e})
                                          for k, e in enumerate(errors, 1)]
        (tmp_path / f"run-{i}").mkdir()
        write_summary(tmp_path / f"run-{i}", records)
    script = runpy.run_path(str(Path(__file__).resolve().parents[1] / "scripts" / "fit_sustainability.py"))
    assert script["main"]([str(tmp_path), "--plot", str(tmp_path / "law.png"),
                           "--save", str(tmp_path / "law.json")]) == 0
    assert (tmp_path / "law.png").read_bytes()[:4] == b"\x89PNG" and Law.load(tmp_path / "law.json").transitions > 0
    out = capsys.readouterr().out
    assert "law: e' = " in out and "(unstable)" in out
    assert f"{tmp_path}/run-0: from round 1, predicted sustains, measured sustains" in out
    assert f"{tmp_path}/run-6: from round 1, predicted collapses after" in out
    assert script["main"]([str(tmp_path / "nothing")]) == 2


@pytest.mark.slow
def test_a_run_records_what_its_law_predicts_after_every_round(tmp_path, write_recipe, run_rounds_main, capsys):
    import json

    from conftest import SMALL

    law_file = tmp_path / "law.json"
    Law(TRUE, (0.01, 0.02, 0.03), 0.004, 40).save(law_file)
    assert Law.load(law_file) == Law(TRUE, (0.01, 0.02, 0.03), 0.004, 40)
    argv = write_recipe(tmp_path, num_rounds=2) + ["--sustainability_law", str(law_file)]
    assert run_rounds_main(argv) == 0
    log = capsys.readouterr().out
    records = [json.loads((tmp_path / "run" / f"round-{k}" / "eval.json").read_text()) for k in range(3)]
    assert "prediction" not in records[0]  # round 0 has no self-made labels
    assert any("prediction" in rec for rec in records[1:])
    for k in (1, 2):
        p = records[k].get("prediction")
        if records[k]["labels"]["label_accuracy_kept"] is None:
            assert p is None
            continue
        error = 1 - records[k]["labels"]["label_accuracy_kept"]
        assert p["collapses_after"] == Law.load(law_file).predict(error, 2 - k)
        assert p["critical_accuracy"] == pytest.approx(0.604, abs=0.01)
        assert f"[round {k}/2] the law predicts: " in log
    argv = write_recipe(tmp_path, name="nolaw", **SMALL) + ["--sustainability_law", str(tmp_path / "missing.json")]
    assert run_rounds_main(argv) == 2
