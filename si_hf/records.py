"""How rounds are named and recorded on disk: `round-<k>` directories, each round's record
(eval.json), and the run's summary (summary.jsonl, one record per finished round).

The one place these names are spelled. Below the loop, the manifests, the cards and the Hub, so each of
them reads and writes rounds the same way without importing the others.
"""

import json
import os
import re
from pathlib import Path

RECORD_FILE = "eval.json"
SUMMARY_FILE = "summary.jsonl"
INIT_FROM = re.compile(r"^(?P<repo>[\w.-]+(?:/[\w.-]+)?)@round-(?P<round>\d+)$")


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
    """`namespace/name@round-3` -> ("namespace/name", 3)."""
    match = INIT_FROM.match(text or "")
    if not match:
        raise ValueError("expected REPO@round-<k>, e.g. my-name/copy-tiny@round-3")
    return match["repo"], int(match["round"])


def read_record(output_dir, k: int) -> dict:
    return json.loads((round_dir(output_dir, k) / RECORD_FILE).read_text())


def write_record(directory, record: dict):
    (Path(directory) / RECORD_FILE).write_text(json.dumps(record, indent=2))


def summary_text(summary: list[dict]) -> str:
    return "".join(json.dumps(rec) + "\n" for rec in summary)


def parse_summary(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def read_summary(output_dir, last: int | None = None) -> list[dict]:
    """The records of rounds 0..last (all when last is None); [] when the run has no summary yet."""
    path = Path(output_dir) / SUMMARY_FILE
    rows = parse_summary(path.read_text()) if path.is_file() else []
    return [row for row in rows if last is None or row["round"] <= last]


def write_summary(output_dir, summary: list[dict]):
    """Replaced whole, through a temporary file: a kill never leaves half a line."""
    path = Path(output_dir) / SUMMARY_FILE
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(summary_text(summary))
    os.replace(tmp, path)


# What the same round measures differently on every run: left out when two runs' records are compared.
TIMING_FIELDS = ("wall_seconds", "phase_seconds")


def without_timing(record: dict) -> dict:
    return {key: value for key, value in record.items() if key not in TIMING_FIELDS}
