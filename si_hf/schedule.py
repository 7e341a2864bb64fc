"""Which levels a round labels, and when a run stops: pure functions of a run's records.

Levels are walked in *stages*: stage 0 is the base range, stage s >= 1 is `task.round_levels(
base_max_level, s)` (one level `base_max_level + s` for most tasks; a stage of (a, b) pairs for
multiplication). A run remembers the highest stage it trained (`stage` in eval.json).

- `plus_one` (the default): round k labels the stage after the highest one trained.
- `accelerated` (the paper's): before labeling, the model is probed on fresh problems at the stages
  after the highest one trained, one by one, until one fails; the round labels every consecutive
  passing stage, and at least one.
"""

from .records import RoundRecord

SCHEDULES = ("plus_one", "accelerated")


def passes(by_level: dict, threshold: float) -> bool:
    """Whether every level of a probed stage scored >= threshold."""
    return bool(by_level) and all(acc >= threshold for acc in by_level.values())


def accelerated_stages(last_stage: int, probed: list[dict], threshold: float) -> list[int]:
    """The stages the next round labels under the accelerated schedule.

    `probed[j]` is the accuracy by level of stage `last_stage + 1 + j` (probed in order, usually
    stopping at the first failure). Every consecutive passing stage from `last_stage + 1` is taken;
    when the first one fails (or nothing was probed), `last_stage + 1` alone."""
    taken = 0
    for by_level in probed:
        if not passes(by_level, threshold):
            break
        taken += 1
    return list(range(last_stage + 1, last_stage + 1 + max(1, taken)))


def level_rank(name: str) -> int:
    """A level name's place against a frontier: `12` -> 12, a pair `4x5` -> 5 (the square frontier)."""
    return max(int(part) for part in str(name).split("x"))


def final_stage_reached(stage: int, final_stage: int | None) -> bool:
    """Whether a run whose highest trained stage is `stage` has trained its `final_stage` (None: no such stage)."""
    return final_stage is not None and stage >= final_stage


def stop_decision(summary: list[RoundRecord], patience: int | None = None, collapse_floor: float | None = None,
                  final_stage: int | None = None) -> dict | None:
    """Whether the run stops after the last round of `summary` (records of rounds 0..k, in order).

    - `collapse_floor` x: some evaluated level inside the previous round's frontier scores below x;
    - `final_stage` S: the run has trained stage S (a stage labeled again does not count until a round
      kept enough of its labels, `min_kept_fraction`);
    - `patience` P: the frontier has not moved for P rounds: the best frontier of the last P rounds
      is no higher than the best before them.

    Returns None (go on) or {"rule": "collapse_floor" | "final_stage" | "stop_patience", "round": k,
    "reason": text}, the first rule that holds in that order."""
    if not summary:
        return None
    last = summary[-1]
    if collapse_floor is not None and len(summary) >= 2:
        previous = summary[-2].frontier
        fallen = [name for name, acc in last.accuracy_by_level.items()
                  if level_rank(name) <= previous and acc < collapse_floor]
        if fallen:
            accs = ", ".join(f"{name}: {last.accuracy_by_level[name]:.3f}" for name in fallen)
            return {"rule": "collapse_floor", "round": last.round,
                    "reason": f"accuracy fell below {collapse_floor} inside the previous frontier {previous} ({accs})"}
    if final_stage_reached(last.stage, final_stage):
        return {"rule": "final_stage", "round": last.round,
                "reason": f"the highest stage trained is {last.stage} (final_stage {final_stage})"}
    if patience is not None and len(summary) > patience:
        fronts = [rec.frontier for rec in summary]
        before, recent = max(fronts[:-patience]), max(fronts[-patience:])
        if recent <= before:
            return {"rule": "stop_patience", "round": last.round,
                    "reason": f"the frontier has not moved past {before} for {patience} round(s)"}
    return None
