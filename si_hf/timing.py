"""Where a round's time goes: wall seconds per phase (probe, label, filter, train, evaluate, save)."""

import contextlib
import time

PHASES = ("probe", "label", "filter", "train", "evaluate", "save")


class PhaseTimes:
    """Wall seconds per phase of one round, summed over every call (each seed lineage trains in `train`)."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, phase: str):
        if phase not in PHASES:
            raise ValueError(f"unknown phase {phase!r}; expected one of {', '.join(PHASES)}")
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[phase] = self.seconds.get(phase, 0.0) + time.perf_counter() - start

    def record(self) -> dict[str, float]:
        """The phases that ran, in loop order, to 0.1 s (what eval.json and the summary hold)."""
        return {phase: round(self.seconds[phase], 1) for phase in PHASES if phase in self.seconds}


def phases_text(seconds: dict[str, float]) -> str:
    """`train 120s, label 31s, ...` for the progress line; "" when nothing was timed."""
    return ", ".join(f"{phase} {s:.0f}s" for phase, s in seconds.items())
