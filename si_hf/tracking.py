"""One tracked run per experiment, for tensorboard, trackio and wandb alike.

Each round trains with a Trainer of its own, whose step counter starts again at 0 and whose
integrations would open a new tracked run per round (tensorboard: a new event log under the Trainer's
scratch directory). For these three reporters the loop keeps one run for the whole experiment instead,
and the Trainer reports to none of them:
- the Trainer's logs (loss, learning rate, grad norm) go in as `train/<name>` at steps that continue
  across rounds (round k's step s is logged at the steps of rounds 0..k-1 plus s);
- each round's metrics (frontier, accuracy per level, label accuracy, kept fraction, phase times) go in
  as `round/<name>`: tensorboard against the round; trackio and wandb, whose runs have one step axis, at
  the step where the round's training ended, with `round/round` beside them.
A resumed run appends to the same run: tensorboard to `<output_dir>/tensorboard`; trackio and wandb to
the run named in `<output_dir>/tracking.json` (project: TRACKIO_PROJECT / WANDB_PROJECT, else "si-hf").
"""

import json
import os
import uuid
from pathlib import Path

from transformers import TrainerCallback

from .errors import RecipeError

TRACKING_DIR = "tensorboard"
RUN_FILE = "tracking.json"
TRACKED = ("tensorboard", "trackio", "wandb")  # what the loop tracks itself; other names stay with the Trainer


def reporters(report_to: str) -> list[str]:
    """`report_to` as a list: "none", one name, or names separated by commas."""
    names = [name.strip() for name in report_to.split(",") if name.strip()]
    return [] if names in ([], ["none"]) else names


def numbers(prefix: str, values: dict) -> dict:
    """Every number of `values` as `<prefix>/<name>` (strings and flags are not plotted)."""
    return {f"{prefix}/{name}": value for name, value in values.items()
            if isinstance(value, (int, float)) and not isinstance(value, bool)}


def run_identity(out: Path) -> dict:
    """The name and id of this experiment's tracked run, made once and kept in tracking.json."""
    path = out / RUN_FILE
    if path.is_file():
        return json.loads(path.read_text())
    identity = {"id": uuid.uuid4().hex[:12]}
    identity["name"] = f"{out.resolve().name}-{identity['id'][:6]}"
    path.write_text(json.dumps(identity, indent=2) + "\n")
    return identity


def _library(name: str):
    try:
        return __import__(name)
    except ImportError:
        raise RecipeError(f"report_to={name}: the {name} package is not installed (pip install {name})") from None


class _TensorBoard:
    def __init__(self, out: Path):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(out / TRACKING_DIR))

    def log(self, values: dict, step: int):
        for tag, value in values.items():
            self.writer.add_scalar(tag, value, step)
        self.writer.flush()

    def log_round(self, k: int, values: dict, step: int):
        self.log(values, k)  # a tensorboard tag has its own axis: the rounds

    def close(self):
        self.writer.close()


class _Trackio:
    def __init__(self, out: Path):
        self.trackio = _library("trackio")
        self.trackio.init(project=os.environ.get("TRACKIO_PROJECT", "si-hf"), name=run_identity(out)["name"],
                          resume="allow", auto_log_cpu=False, auto_log_gpu=False)

    def log(self, values: dict, step: int):
        self.trackio.log(values, step=step)

    def log_round(self, k: int, values: dict, step: int):
        self.log({"round/round": k, **values}, step)

    def close(self):
        self.trackio.finish()


class _Wandb(_Trackio):
    def __init__(self, out: Path):
        identity = run_identity(out)
        self.run = _library("wandb").init(project=os.environ.get("WANDB_PROJECT", "si-hf"), name=identity["name"],
                                          id=identity["id"], resume="allow", dir=str(out))

    def log(self, values: dict, step: int):
        self.run.log(values, step=step)

    def close(self):
        self.run.finish()


BACKENDS = {"tensorboard": _TensorBoard, "trackio": _Trackio, "wandb": _Wandb}


class _ContinuousSteps(TrainerCallback):
    """Hands a round's Trainer logs to the tracker, its steps shifted past the earlier rounds'."""

    def __init__(self, tracker: "RunTracker", steps_before: int):
        self.tracker, self.steps_before = tracker, steps_before

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs or "round" in logs:
            return  # a round's own metrics (trainer.log at its end) go in through log_round
        self.tracker.log_train(logs, self.steps_before + state.global_step)


class RunTracker:
    """The run's tracked runs, one per reporter of TRACKED in report_to (main process only):
    `callback(steps_before)` for a round's Trainer, `log_round(k, metrics, step)` after the round."""

    def __init__(self, out, names: list[str]):
        self.backends = [BACKENDS[name](Path(out)) for name in names if name in BACKENDS]

    def callback(self, steps_before: int) -> TrainerCallback:
        return _ContinuousSteps(self, steps_before)

    def log_train(self, logs: dict, step: int):
        for backend in self.backends:
            backend.log(numbers("train", logs), step)

    def log_round(self, k: int, metrics: dict, step: int):
        for backend in self.backends:
            backend.log_round(k, numbers("round", metrics), step)

    def close(self):
        for backend in self.backends:
            backend.close()
