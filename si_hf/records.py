"""How rounds are named and recorded on disk: `round-<k>` directories, each round's record
(eval.json), and the run's summary (summary.jsonl, one record per finished round).

The one place these names are spelled. Below the loop, the manifests, the cards and the Hub, so each of
them reads and writes rounds the same way without importing the others.
"""

import dataclasses
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

RECORD_FILE = "eval.json"
SUMMARY_FILE = "summary.jsonl"
INIT_FROM = re.compile(r"^(?P<repo>.+)@round-(?P<round>\d+)$")  # a Hub repo id, or a run directory here
HUB_REPO = re.compile(r"^[\w.-]+(?:/[\w.-]+)?$")


def round_name(k: int) -> str:
    """The directory of round k, and its branch and tag on the Hub."""
    return f"round-{k}"


def round_number(name: str) -> int | None:
    """`round-3` -> 3; anything else -> None."""
    suffix = name.removeprefix("round-")
    return int(suffix) if name.startswith("round-") and suffix.isdigit() else None


def round_dir(output_dir, k: int) -> Path:
    return Path(output_dir) / round_name(k)


def staging_dir(output_dir, k: int) -> Path:
    """Where round k is written before it is renamed into place (see manifest.staged_round)."""
    return Path(output_dir) / f".{round_name(k)}.tmp"


def parse_init_from(text: str) -> tuple[str, int]:
    """`namespace/name@round-3` -> ("namespace/name", 3); `runs/a/seed-0@round-3` -> ("runs/a/seed-0", 3)
    when that is a directory here. Anything else is a ValueError."""
    match = INIT_FROM.match(text or "")
    if not match or not (HUB_REPO.match(match["repo"]) or Path(match["repo"]).is_dir()):
        raise ValueError("expected REPO@round-<k> (a Hub repo, e.g. my-name/copy-tiny@round-3) or RUN_DIR@round-<k> "
                         "(a run directory on this machine, e.g. runs/copy-tiny@round-3)")
    return match["repo"], int(match["round"])


@dataclass(kw_only=True)
class LabelStats:
    """What became of a round's self-generated labels. The accuracies compare labels with the truth, for
    analysis only: no filter reads them."""

    level: str  # the level(s) labeled, e.g. "9" or "4x5&5x4"
    labeled: int
    kept: int  # the rows trained on
    label_accuracy_all: float
    label_accuracy_kept: float | None  # None when nothing was kept
    filters: list[dict]  # per filter step: filter, in, out, label_accuracy (and seed_label_accuracy)
    corruption: dict | None = None  # mode, fraction, corrupted, changed, label_accuracy_kept_before

    @property
    def kept_fraction(self) -> float | None:
        return self.kept / self.labeled if self.labeled else None


@dataclass(kw_only=True)
class RoundRecord:
    """One finished round: what it trained on, how it scored, what it cost. eval.json and each line of
    summary.jsonl hold one, as `to_json` writes it."""

    round: int
    levels_trained: str  # "1-10" in round 0 (the base range), then the labeled level(s)
    labels: LabelStats | None = None  # None in round 0 (ground truth)
    stage: int = 0  # the highest stage trained so far (si_hf.schedule)
    probe: list | None = None  # accuracies of the probes of an accelerated schedule
    frontier: int
    exact_match: float
    accuracy_by_level: dict[str, float]  # by level name, in evaluation order
    eval_size_by_level: dict[str, int]
    seed_accuracy_by_level: list[dict] | None = None  # lineages 1.. with eval_all_seeds
    seed_frontier: list[int] | None = None
    train_loss: float
    train_steps: int
    seed_train_loss: list[float] | None = None
    wall_seconds: float
    stopped: dict | None = None  # rule, round, reason: a stop rule ended the run here
    prediction: dict | None = None  # with sustainability_law: what the law predicts (si_hf.sustainability)
    phase_seconds: dict[str, float] | None = None  # probe, label, filter, train, evaluate, save

    def to_json(self) -> dict:
        """The record as JSON data; optional parts absent rather than null, as in records of older runs."""
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        data["labels"] = None if self.labels is None else _without_none(dataclasses.asdict(self.labels), OPTIONAL)
        return _without_none(data, OPTIONAL)

    @classmethod
    def from_json(cls, data: dict) -> "RoundRecord":
        unknown = set(data) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"round record with unknown fields {sorted(unknown)} (written by another si-hf?)")
        labels = data.get("labels")
        return cls(**{**data, "labels": None if labels is None else LabelStats(**labels)})


# Written only when set: a record without them reads the same as one from before they existed.
OPTIONAL = ("probe", "seed_accuracy_by_level", "seed_frontier", "seed_train_loss", "phase_seconds", "corruption",
            "prediction")


def _without_none(data: dict, names) -> dict:
    return {key: value for key, value in data.items() if not (key in names and value is None)}


def read_record(output_dir, k: int) -> RoundRecord:
    return RoundRecord.from_json(json.loads((round_dir(output_dir, k) / RECORD_FILE).read_text()))


def write_record(directory, record: RoundRecord):
    (Path(directory) / RECORD_FILE).write_text(json.dumps(record.to_json(), indent=2))


def summary_text(summary: list[RoundRecord]) -> str:
    return "".join(json.dumps(rec.to_json()) + "\n" for rec in summary)


def parse_summary(text: str) -> list[RoundRecord]:
    return [RoundRecord.from_json(json.loads(line)) for line in text.splitlines() if line.strip()]


def read_summary(output_dir, last: int | None = None) -> list[RoundRecord]:
    """The records of rounds 0..last (all when last is None); [] when the run has no summary yet."""
    path = Path(output_dir) / SUMMARY_FILE
    rows = parse_summary(path.read_text()) if path.is_file() else []
    return [row for row in rows if last is None or row.round <= last]


def write_summary(output_dir, summary: list[RoundRecord]):
    """Replaced whole, through a temporary file: a kill never leaves half a line."""
    path = Path(output_dir) / SUMMARY_FILE
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(summary_text(summary))
    os.replace(tmp, path)


# What the same round measures differently on every run: left out when two runs' records are compared.
TIMING_FIELDS = ("wall_seconds", "phase_seconds")


def without_timing(record: RoundRecord) -> RoundRecord:
    return dataclasses.replace(record, **{name: None for name in TIMING_FIELDS})
