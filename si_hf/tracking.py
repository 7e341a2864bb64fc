"""One tensorboard run per experiment, in the run's own directory.

Each round trains with a Trainer of its own, whose step counter starts again at 0 and whose
tensorboard integration would open a new event log under the Trainer's scratch directory. With
`report_to: tensorboard` the loop instead keeps one `SummaryWriter` on `<output_dir>/tensorboard` for the
whole run: the Trainer's logs (loss, learning rate, grad norm) at steps that continue across rounds
(round k's step s is logged at the steps of rounds 0..k-1 plus s), and each round's metrics (frontier,
accuracy per level, label accuracy, kept fraction, phase times) against the round. A resumed run
appends to the same directory, at the steps where the finished rounds left off. wandb and trackio keep
the Trainer's own integration (one tracked run per round).
"""

from pathlib import Path

from transformers import TrainerCallback

TRACKING_DIR = "tensorboard"


def reporters(report_to: str) -> list[str]:
    """`report_to` as a list: "none", one name, or names separated by commas."""
    names = [name.strip() for name in report_to.split(",") if name.strip()]
    return [] if names in ([], ["none"]) else names


def add_scalars(writer, prefix: str, values: dict, step: int):
    """Every number of `values` as `<prefix>/<name>` at `step` (strings and flags are not plotted)."""
    for name, value in values.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            writer.add_scalar(f"{prefix}/{name}", value, step)


class _ContinuousSteps(TrainerCallback):
    """Writes a round's Trainer logs to the run's writer, its steps shifted past the earlier rounds'."""

    def __init__(self, writer, steps_before: int):
        self.writer, self.steps_before = writer, steps_before

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs or "round" in logs:
            return  # a round's own metrics (trainer.log at its end) go against the round: log_round
        add_scalars(self.writer, "train", logs, self.steps_before + state.global_step)


class RunTracker:
    """The run's one event log (main process only): `callback(steps_before)` for a round's Trainer,
    `log_round(k, metrics)` after the round."""

    def __init__(self, out):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(Path(out) / TRACKING_DIR))

    def callback(self, steps_before: int) -> TrainerCallback:
        return _ContinuousSteps(self.writer, steps_before)

    def log_round(self, k: int, metrics: dict):
        add_scalars(self.writer, "round", metrics, k)
        self.writer.flush()

    def close(self):
        self.writer.close()
