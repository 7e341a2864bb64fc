"""Several seeds as one result: the aggregation on synthetic records, and run_seeds.py on micro runs."""

import json
import runpy
import subprocess
import sys
from pathlib import Path

import pytest
from synthetic_records import round_record

from conftest import SMALL
from si_hf.records import write_summary
from si_hf.seeds import aggregate, plot_seeds, seeds_table, write_aggregate

ROOT = Path(__file__).resolve().parents[1]


def _records(fronts, final, kept):
    """Round records as the loop writes them (only the fields the aggregation reads)."""
    recs = [round_record(0, fronts[0], {"1": 1.0, "2": 0.5}, wall_seconds=60.0)]
    for k, (front, acc) in enumerate(zip(fronts[1:], kept), 1):
        recs.append(round_record(k, front, {"1": 1.0, "2": 0.9}, {"label_accuracy_kept": acc, "kept": 100},
                                 wall_seconds=30.0))
    recs[-1].accuracy_by_level = final
    return recs


def test_aggregate_per_seed_and_across_seeds():
    runs = {0: _records([1, 2, 2], {"1": 1.0, "2": 0.99}, [1.0, 0.98]),
            1: _records([1, 1, 1], {"1": 1.0, "2": 0.50}, [0.9, None]),  # round 2 kept nothing
            2: _records([1, 2, 3], {"1": 0.9, "2": 1.00}, [1.0, 1.0])}
    agg = aggregate(runs)
    assert agg["seeds"][0]["frontier_by_round"] == [1, 2, 2]
    assert agg["seeds"][1]["min_label_accuracy_kept"] == 0.9
    assert agg["seeds"][2]["wall_seconds"] == 120.0
    assert agg["seeds"][0]["round0_accuracy_by_level"] == {"1": 1.0, "2": 0.5}
    across = agg["across_seeds"]
    assert across["final_accuracy_by_level"]["2"] == {"min": 0.5, "median": 0.99, "max": 1.0}
    assert across["final_accuracy_by_level"]["1"] == {"min": 0.9, "median": 1.0, "max": 1.0}
    assert across["final_frontier"] == {"min": 1, "median": 2, "max": 3}
    assert across["min_label_accuracy_kept"] == 0.9
    table = seeds_table(agg)
    assert "| median over seeds | 1.000 | 0.990 |" in table
    assert "| seed 1, round 2 | 1.000 | 0.500 |" in table
    assert "| 2 | 1 2 3 | 1.000 | 2.0 min |" in table
    assert plot_seeds(agg)[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="no seed runs"):
        aggregate({})


def test_write_aggregate_reads_seed_directories(tmp_path):
    for seed, fronts in ((0, [1, 2]), (3, [1, 1])):
        d = tmp_path / f"seed-{seed}"
        d.mkdir()
        recs = _records(fronts, {"1": 1.0, "2": 1.0}, [1.0])
        write_summary(d, recs)
    (tmp_path / "seed-x").mkdir()  # not a seed run
    agg = write_aggregate(tmp_path)
    assert list(agg["seeds"]) == [0, 3]
    assert json.loads((tmp_path / "seeds.json").read_text())["across_seeds"]["final_frontier"]["max"] == 2
    assert (tmp_path / "seeds.md").is_file() and (tmp_path / "seeds.png").is_file()


@pytest.mark.slow
def test_run_seeds_runs_each_seed_and_aggregates(tmp_path, write_recipe):
    argv = write_recipe(tmp_path, num_rounds=1, **SMALL)
    cmd = [sys.executable, str(ROOT / "scripts" / "run_seeds.py"), *argv, "--seeds", "0", "1"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stderr[-2000:]
    out = tmp_path / "run"
    agg = json.loads((out / "seeds.json").read_text())
    assert sorted(agg["seeds"]) == ["0", "1"]
    for seed in (0, 1):
        recipe = (out / f"seed-{seed}" / "recipe.yaml").read_text()
        assert f"seed: {seed}\n" in recipe and (out / f"seed-{seed}" / "round-1" / "manifest.json").is_file()
    # the seeds differ (initialization, data, order): their round-0 weights are not the same
    a, b = ((out / f"seed-{s}" / "round-0" / "model" / "model.safetensors").read_bytes() for s in (0, 1))
    assert a != b
    # a rerun resumes (nothing left to train) and aggregates again; --aggregate_only runs nothing
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=1200)
    assert again.returncode == 0 and "All 1 rounds" in again.stdout
    only = subprocess.run([*cmd, "--aggregate_only"], capture_output=True, text=True, timeout=1200)
    assert only.returncode == 0 and "2 seeds in" in only.stdout and "== seed" not in only.stdout


def test_run_seeds_refuses_a_bad_recipe(tmp_path, capsys):
    main = runpy.run_path(str(ROOT / "scripts" / "run_seeds.py"))["main"]
    bad = tmp_path / "bad.yaml"
    bad.write_text("task: nosuchtask\n")
    assert main(["--config", str(bad)]) == 2
    assert "nosuchtask" in capsys.readouterr().err
