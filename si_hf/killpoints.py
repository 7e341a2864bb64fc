"""A test hook (for tests/test_resume.py only): kill this process at a named point of the loop.

With the environment variable `SI_HF_TEST_KILL_AT=<point>:<round>` (e.g. `train:1`) the process sends
itself SIGKILL, like a crash or an out-of-memory kill, when round <round> reaches <point>; without it
(always, outside the tests) nothing happens. The points:

- `train`: halfway through the round's training steps (a Trainer callback);
- `label`: the round's labels are generated, not yet filtered (only memory holds them, as all through
  labeling);
- `save`: the round's checkpoint is written into `.round-<k>.tmp`, its data not yet;
- `saved`: `round-<k>` is in place, summary.jsonl is not yet rewritten.
"""

import os
import signal

ENV = "SI_HF_TEST_KILL_AT"


def kill_point(point: str, k: int):
    if os.environ.get(ENV) == f"{point}:{k}":
        os.kill(os.getpid(), signal.SIGKILL)


def trainer_callbacks(k: int) -> list:
    """The Trainer callbacks of round k: one that kills halfway through training under `train:<k>`."""
    if os.environ.get(ENV) != f"train:{k}":
        return []
    from transformers import TrainerCallback

    class KillHalfway(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step >= max(1, state.max_steps // 2):
                kill_point("train", k)

    return [KillHalfway()]
