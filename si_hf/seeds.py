"""Several seeds of one recipe as one result: each seed's run directory (`<output_dir>/seed-<s>`, written
by scripts/run_seeds.py or one job per seed) read back and aggregated.

Per seed: the frontier of every round, the last round's accuracy per level, the round-0 model's, the
kept-label accuracy of every round and the wall time. Across seeds: the minimum, median and maximum of
the last round's accuracy at each level and of the final frontier. A seed changes the initialization,
the data and the training order (the recipe's `seed`).
"""

import json
import statistics
from pathlib import Path

from .cards import png_bytes
from .records import SUMMARY_FILE, RoundRecord, read_summary


def seed_dirs(output_dir) -> dict[int, Path]:
    """The seed runs under `output_dir`: {seed: its directory}, in seed order."""
    found = {}
    for d in Path(output_dir).glob("seed-*"):
        suffix = d.name.removeprefix("seed-")
        if suffix.isdigit() and (d / SUMMARY_FILE).is_file():
            found[int(suffix)] = d
    return dict(sorted(found.items()))


def read_records(run_dir) -> list[RoundRecord]:
    """A run's round records (summary.jsonl, one per finished round)."""
    return read_summary(run_dir)


def seed_result(records: list[RoundRecord]) -> dict:
    """One seed's run, in brief."""
    last = records[-1]
    kept = [rec.labels.label_accuracy_kept if rec.labels else None for rec in records[1:]]
    return {
        "rounds": last.round,
        "frontier_by_round": [rec.frontier for rec in records],
        "final_frontier": last.frontier,
        "final_accuracy_by_level": last.accuracy_by_level,
        "round0_accuracy_by_level": records[0].accuracy_by_level,
        "label_accuracy_kept_by_round": kept,
        "min_label_accuracy_kept": min((a for a in kept if a is not None), default=None),
        "kept_by_round": [rec.labels.kept if rec.labels else None for rec in records[1:]],
        "wall_seconds": round(sum(rec.wall_seconds for rec in records), 1),
    }


def _spread(values: list[float]) -> dict:
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


def aggregate(runs: dict[int, list[RoundRecord]]) -> dict:
    """{seed: round records} -> per seed (`seed_result`) and across seeds (min / median / max)."""
    if not runs:
        raise ValueError("no seed runs to aggregate")
    seeds = {seed: seed_result(records) for seed, records in runs.items()}
    levels = list(dict.fromkeys(lvl for s in seeds.values() for lvl in s["final_accuracy_by_level"]))
    per_level = {lvl: _spread([s["final_accuracy_by_level"][lvl] for s in seeds.values()
                               if lvl in s["final_accuracy_by_level"]]) for lvl in levels}
    kept = [s["min_label_accuracy_kept"] for s in seeds.values() if s["min_label_accuracy_kept"] is not None]
    return {
        "seeds": seeds,
        "across_seeds": {
            "final_accuracy_by_level": per_level,
            "final_frontier": _spread([s["final_frontier"] for s in seeds.values()]),
            "min_label_accuracy_kept": min(kept) if kept else None,
            "wall_seconds": _spread([s["wall_seconds"] for s in seeds.values()]),
        },
    }


def seeds_table(agg: dict) -> str:
    """Markdown: the last round's accuracy per level for each seed, then min / median / max; then each
    seed's frontier per round and its worst kept-label accuracy."""
    seeds, across = agg["seeds"], agg["across_seeds"]
    levels = list(across["final_accuracy_by_level"])
    head = ["", *levels]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for seed, s in seeds.items():
        lines.append(f"| seed {seed}, round 0 | "
                     + " | ".join(_cell(s["round0_accuracy_by_level"].get(lvl)) for lvl in levels) + " |")
    for seed, s in seeds.items():
        lines.append(f"| seed {seed}, round {s['rounds']} | "
                     + " | ".join(_cell(s["final_accuracy_by_level"].get(lvl)) for lvl in levels) + " |")
    for stat in ("min", "median", "max"):
        lines.append(f"| {stat} over seeds | "
                     + " | ".join(_cell(across["final_accuracy_by_level"][lvl][stat]) for lvl in levels) + " |")
    lines += ["", "| seed | frontier by round | worst kept-label accuracy | wall time |", "|---|---|---|---|"]
    for seed, s in seeds.items():
        worst = _cell(s["min_label_accuracy_kept"])
        lines.append(f"| {seed} | {' '.join(map(str, s['frontier_by_round']))} | {worst} | "
                     f"{s['wall_seconds'] / 60:.1f} min |")
    return "\n".join(lines) + "\n"


def _cell(value) -> str:
    return "" if value is None else f"{value:.3f}"


def plot_seeds(agg: dict) -> bytes:
    """PNG: each seed's frontier by round (left) and its last round's accuracy by level (right)."""
    from matplotlib.figure import Figure  # a bare Figure renders with Agg, no display needed

    fig = Figure(figsize=(11, 4), dpi=100)
    fronts, accs = fig.subplots(1, 2)
    for seed, s in agg["seeds"].items():
        fronts.plot(range(len(s["frontier_by_round"])), s["frontier_by_round"], marker="o", label=f"seed {seed}")
        levels = list(s["final_accuracy_by_level"])
        accs.plot(levels, [s["final_accuracy_by_level"][lvl] for lvl in levels], marker=".", label=f"seed {seed}")
    fronts.set(xlabel="round", ylabel="frontier", title="frontier by round")
    accs.set(xlabel="level", ylabel="exact match", title="last round, by level", ylim=(-0.02, 1.02))
    accs.tick_params(axis="x", labelrotation=90)
    for ax in (fronts, accs):
        ax.grid(alpha=0.3)
        ax.legend()
    return png_bytes(fig)


def write_aggregate(output_dir) -> dict:
    """Aggregates the seed runs under `output_dir` into seeds.json, seeds.md and seeds.png there."""
    out = Path(output_dir)
    agg = aggregate({seed: read_records(d) for seed, d in seed_dirs(out).items()})
    (out / "seeds.json").write_text(json.dumps(agg, indent=2))
    (out / "seeds.md").write_text(seeds_table(agg))
    (out / "seeds.png").write_bytes(plot_seeds(agg))
    return agg
