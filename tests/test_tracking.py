"""report_to tensorboard: one event log per run inside its output_dir, steps continuing across rounds
(and across a resume), each round's metrics against the round (si_hf.tracking)."""

import contextlib
import io

import pytest

from conftest import SMALL
from si_hf.tracking import TRACKING_DIR, reporters

pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

pytestmark = pytest.mark.slow


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
