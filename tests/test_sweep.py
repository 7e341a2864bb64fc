"""scripts/sweep_corruption.py: the rounds before the corrupted one run once; every (mode, fraction)
continues from them; a rerun does nothing more."""

import subprocess
import sys
from pathlib import Path

import pytest

from conftest import SMALL
from si_hf.lock import RunLock
from si_hf.manifest import finished_rounds, read_manifest
from si_hf.records import read_record, without_timing
from si_hf.sustainability import corruption_of, distinct_runs, errors, read_runs

ROOT = Path(__file__).resolve().parents[1]


def sweep(argv) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "sweep_corruption.py"), *argv],
                          capture_output=True, text=True, timeout=1200)


@pytest.mark.slow
def test_a_sweep_shares_the_rounds_before_the_corrupted_one(tmp_path, write_recipe):
    argv = write_recipe(tmp_path, name="sweep", num_threads=1, **SMALL) + [
        "--corrupt_round", "1", "--fractions", "0", "0.5", "--modes", "digits", "--rounds_after", "1"]
    done = sweep(argv)
    assert done.returncode == 0, done.stderr[-3000:]
    seed = tmp_path / "sweep" / "seed-0"
    assert sorted(p.name for p in seed.iterdir()) == ["clean", "digits-0.5", "shared"]
    assert finished_rounds(seed / "shared") == [0]
    assert done.stdout.count("train_runtime") == 1 + 2 + 2  # round 0 once, then rounds 1-2 of each branch
    for name in ("clean", "digits-0.5"):
        assert finished_rounds(seed / name) == [0, 1, 2]
        assert read_manifest(seed / name / "round-1")["parent"] == f"{seed / 'shared'}@round-0"
        assert without_timing(read_record(seed / name, 0)) == without_timing(read_record(seed / "shared", 0))
    assert read_record(seed / "digits-0.5", 1).labels.corruption["fraction"] == 0.5
    assert read_record(seed / "clean", 1).labels.corruption is None
    with RunLock(seed / "shared"):  # a sweep beside this one holds the shared run: it is not needed again
        again = sweep(argv)
    assert again.returncode == 0 and "train_runtime" not in again.stdout, again.stderr[-3000:]
    assert "shared: rounds 0-0 finished" in again.stdout
    # The analysis reads the real runs: the shared rounds once, each run's state from its records.
    runs = distinct_runs(read_runs(tmp_path / "sweep"))
    assert sorted(runs) == ["seed-0/clean", "seed-0/digits-0.5"]
    for name, records in runs.items():
        assert [rec.round for rec in records] == [0, 1, 2]
        evaluated = [rec.accuracy_by_level.get(str(int(rec.levels_trained.split("-")[-1]) + 1)) for rec in records]
        assert errors(records) == [None if acc is None else 1 - acc for acc in evaluated]
        assert evaluated[0] is not None and evaluated[-1] is None  # levels 5 and 7 (eval_max_level is 5)
        assert corruption_of(records) == ((1, "digits", 0.5) if name.endswith("0.5") else None)


def test_a_bad_sweep_is_refused_with_its_code(tmp_path, write_recipe):
    argv = write_recipe(tmp_path, name="sweep", **SMALL)
    assert sweep(argv + ["--corrupt_round", "0", "--fractions", "0.1"]).returncode == 2
    bad = sweep(argv + ["--corrupt_round", "2", "--fractions", "0.1", "--modes", "smudge"])
    assert bad.returncode == 2 and "corrupt_mode" in bad.stderr
    assert not (tmp_path / "sweep").exists()  # refused before the shared rounds ran
