"""report_to tensorboard and trackio: one tracked run per experiment (tensorboard's inside its output_dir),
steps continuing across rounds (and across a resume), each round's metrics (si_hf.tracking)."""

import contextlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import SMALL
from si_hf.config import RecipeError, parse_recipe
from si_hf.tracking import RUN_FILE, TRACKING_DIR, reporters

pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]


def _scalars(log_dir) -> dict[str, list[tuple[int, float]]]:
    events = EventAccumulator(str(log_dir), size_guidance={"scalars": 0})
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def _run(main, argv):
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()) as err:
        assert main(argv) == 0, err.getvalue()


def test_reporters_reads_none_one_or_several():
    assert reporters("none") == [] and reporters("tensorboard") == ["tensorboard"]
    assert reporters("tensorboard, wandb") == ["tensorboard", "wandb"]


def test_one_event_log_with_continuous_steps_across_rounds_and_a_resume(tmp_path, write_recipe, run_rounds_main):
    recipe = {**SMALL, "num_rounds": 1, "logging_steps": 5, "report_to": "tensorboard", "num_threads": 1}
    argv = write_recipe(tmp_path, name="tracked", **recipe)
    out = tmp_path / "tracked"
    _run(run_rounds_main, argv)
    _run(run_rounds_main, argv + ["--num_rounds", "2"])  # a rerun that extends the run: the same log

    assert [p.name for p in out.iterdir() if p.is_dir() and p.name == TRACKING_DIR] == [TRACKING_DIR]
    assert not list((out / ".trainer").rglob("events.out.tfevents*"))  # no per-round log in the scratch dir
    scalars = _scalars(out / TRACKING_DIR)
    base, per_round = SMALL["base_steps"], SMALL["round_steps"]
    loss_steps = [step for step, _ in scalars["train/loss"]]
    assert loss_steps == sorted(set(loss_steps)), loss_steps  # one counter, never restarting
    assert loss_steps[0] == 5 and max(loss_steps) <= base + 2 * per_round and any(s > base for s in loss_steps)
    assert [step for step, _ in scalars["round/frontier"]] == [0, 1, 2]
    assert {"round/accuracy_level_1", "round/label_accuracy_kept", "round/kept_fraction",
            "round/seconds_train"} <= set(scalars)


READ_TRACKIO = """
import json, sys
from trackio.sqlite_storage import SQLiteStorage
runs = SQLiteStorage.get_runs(sys.argv[1])
print(json.dumps({"runs": runs, "logs": SQLiteStorage.get_logs(sys.argv[1], runs[0]) if runs else []}))
"""


def test_trackio_gets_one_run_with_continuous_steps_across_rounds_and_a_resume(tmp_path, write_recipe):
    """trackio (the real library, storing locally in TRACKIO_DIR) beside tensorboard: one run, resumed.
    Fresh processes: trackio reads TRACKIO_DIR when it is first imported."""
    pytest.importorskip("trackio")
    env = {**os.environ, "TRACKIO_DIR": str(tmp_path / "trackio"), "TRACKIO_PROJECT": "si-hf-test"}
    recipe = {**SMALL, "num_rounds": 1, "logging_steps": 5, "report_to": "tensorboard,trackio", "num_threads": 1}
    argv = [sys.executable, str(ROOT / "scripts" / "run_rounds.py"), *write_recipe(tmp_path, name="tracked", **recipe)]
    for extra in ([], ["--num_rounds", "2"]):
        done = subprocess.run(argv + extra, capture_output=True, text=True, env=env, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
    read = subprocess.run([sys.executable, "-c", READ_TRACKIO, "si-hf-test"], capture_output=True, text=True,
                          env=env, timeout=120)
    found = json.loads(read.stdout.splitlines()[-1])
    identity = json.loads((tmp_path / "tracked" / RUN_FILE).read_text())
    assert found["runs"] == [identity["name"]]
    loss_steps = [row["step"] for row in found["logs"] if "train/loss" in row]
    assert loss_steps == sorted(set(loss_steps)) and max(loss_steps) <= SMALL["base_steps"] + 2 * SMALL["round_steps"]
    rounds = [row for row in found["logs"] if "round/round" in row]
    assert [row["round/round"] for row in rounds] == [0, 1, 2]
    assert [row["step"] for row in rounds] == [SMALL["base_steps"] + k * SMALL["round_steps"] for k in range(3)]
    assert all("round/frontier" in row and "round/seconds_train" in row for row in rounds)


def test_a_tracker_that_is_not_installed_is_a_recipe_error(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    with pytest.raises(RecipeError, match="report_to='tensorboard,wandb'"):
        parse_recipe(["--report_to", "tensorboard,wandb"])
